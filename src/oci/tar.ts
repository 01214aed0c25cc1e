/**
 * Layer tar streams: a deterministic writer (packEntries / packDirectory) and a streaming
 * reader (readTar) that the safe extractor is built on.
 *
 * Format (as Go's archive/tar, which buildah/containerd/docker use): USTAR headers, and a
 * PAX extended header ('x') only when an entry needs it (long or non-ASCII names, big ids
 * or sizes, xattrs as SCHILY.xattr.*). PAX records are raw bytes, so binary xattr values
 * (security.capability) survive the round trip. The archive ends with two zero blocks.
 *
 * tar-stream is used by the tests to build hostile archives and as an independent reader;
 * our own header code is needed because tar-stream encodes PAX values as UTF-8 strings.
 */
import { lstatSync, openSync, readSync, closeSync, readdirSync, readlinkSync, type Stats } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { TsimageError } from './errors.js';
import { readXattrs } from './xattr.js';

export type TarEntryType = 'file' | 'directory' | 'symlink' | 'link' | 'char' | 'block' | 'fifo';

export interface TarHeader {
  /** Archive path, relative ("usr/bin/x"); a leading "/" or "./" is removed; directories get a trailing "/". */
  name: string;
  type: TarEntryType;
  /** Permission bits including setuid/setgid/sticky (masked with 0o7777). Default 0o644, directories 0o755. */
  mode?: number | undefined;
  uid?: number | undefined;
  gid?: number | undefined;
  uname?: string | undefined;
  gname?: string | undefined;
  /** Modification time in epoch seconds (fractions are dropped). Default 0. */
  mtime?: number | undefined;
  /** Body size for 'file' entries. */
  size?: number | undefined;
  /** Symlink target (verbatim) or hardlink target (an archive path). */
  linkname?: string | undefined;
  devmajor?: number | undefined;
  devminor?: number | undefined;
  /** Extended attributes, written as PAX SCHILY.xattr.<name>. */
  xattrs?: ReadonlyMap<string, Uint8Array> | Record<string, Uint8Array | string> | undefined;
  /** Extra PAX records (raw); rarely needed. */
  pax?: Record<string, string> | undefined;
}

export interface TarEntry {
  header: TarHeader;
  /** Body of a 'file' entry: bytes, a stream, or nothing when `path` is given. */
  body?: Uint8Array | string | AsyncIterable<Uint8Array> | undefined;
  /** A file to read the body from, opened only when the entry is written. */
  path?: string | undefined;
}

/** A tar stream is malformed (bad checksum, truncated, unsupported entry type, oversize header). */
export class TarFormatError extends TsimageError {
  constructor(
    message: string,
    readonly entry?: string,
  ) {
    super(message);
  }
}

const BLOCK = 512;
const ZERO_BLOCK = Buffer.alloc(BLOCK);
const END = Buffer.alloc(2 * BLOCK);
const TYPEFLAG: Record<TarEntryType, string> = {
  file: '0',
  link: '1',
  symlink: '2',
  char: '3',
  block: '4',
  directory: '5',
  fifo: '6',
};
const MAX_OCTAL_7 = 0o7777777;
const MAX_OCTAL_11 = 0o77777777777;

// ---------------------------------------------------------------------------------------------
// Writing

/** "a//b/./c/" -> "a/b/c"; leading "/" and "./" removed. Keeps ".." (the writer does not judge). */
export function cleanName(name: string): string {
  const parts: string[] = [];
  for (const p of name.split('/')) {
    if (p === '' || p === '.') continue;
    parts.push(p);
  }
  return parts.join('/');
}

function isAscii(s: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /^[\x00-\x7f]*$/.test(s);
}

function writeString(buf: Buffer, s: string, off: number, len: number): void {
  buf.write(s, off, len, 'utf8');
}

function writeOctal(buf: Buffer, n: number, off: number, len: number): void {
  // Go style: zero-padded, NUL-terminated.
  const s = Math.floor(n).toString(8).padStart(len - 1, '0');
  buf.write(s + '\0', off, len, 'ascii');
}

/** One PAX record: "<len> key=value\n" where len counts the whole record. */
function paxRecord(key: string, value: Uint8Array | string): Buffer {
  const v = typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value);
  const k = Buffer.from(key, 'utf8');
  const rest = 1 + k.length + 1 + v.length + 1; // " " key "=" value "\n"
  let len = rest + String(rest).length;
  if (String(len).length !== String(rest).length) len = rest + String(len).length;
  return Buffer.concat([Buffer.from(`${len} ${key}=`, 'utf8'), v, Buffer.from('\n')]);
}

function splitUstarName(name: string): { prefix: string; name: string } | undefined {
  if (!isAscii(name)) return undefined;
  if (name.length <= 100) return { prefix: '', name };
  // prefix (<= 155) + "/" + name (<= 100), split at a slash.
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] !== '/') continue;
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (rest.length > 100) break;
    if (prefix.length <= 155 && rest.length > 0) return { prefix, name: rest };
  }
  return undefined;
}

function ustarBlock(h: {
  name: string;
  prefix?: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname?: string;
  uname?: string;
  gname?: string;
  devmajor?: number;
  devminor?: number;
}): Buffer {
  const b = Buffer.alloc(BLOCK);
  writeString(b, h.name, 0, 100);
  writeOctal(b, h.mode, 100, 8);
  writeOctal(b, Math.min(h.uid, MAX_OCTAL_7), 108, 8);
  writeOctal(b, Math.min(h.gid, MAX_OCTAL_7), 116, 8);
  writeOctal(b, Math.min(h.size, MAX_OCTAL_11), 124, 12);
  writeOctal(b, Math.max(0, Math.min(h.mtime, MAX_OCTAL_11)), 136, 12);
  b.write(h.typeflag, 156, 1, 'ascii');
  if (h.linkname) writeString(b, h.linkname, 157, 100);
  b.write('ustar\x0000', 257, 8, 'ascii');
  if (h.uname) writeString(b, h.uname, 265, 32);
  if (h.gname) writeString(b, h.gname, 297, 32);
  writeOctal(b, h.devmajor ?? 0, 329, 8);
  writeOctal(b, h.devminor ?? 0, 337, 8);
  if (h.prefix) writeString(b, h.prefix, 345, 155);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i]!;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return b;
}

function padding(size: number): Buffer {
  const r = size % BLOCK;
  return r === 0 ? Buffer.alloc(0) : ZERO_BLOCK.subarray(0, BLOCK - r);
}

function xattrEntries(x: TarHeader['xattrs']): [string, Uint8Array][] {
  if (!x) return [];
  const list: [string, Uint8Array][] =
    x instanceof Map
      ? [...(x as ReadonlyMap<string, Uint8Array>).entries()]
      : Object.entries(x as Record<string, Uint8Array | string>).map(([k, v]) => [k, typeof v === 'string' ? Buffer.from(v) : v]);
  return list.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

/** Encode the header block(s) of one entry: [PAX header + PAX data +] USTAR header. */
export function encodeHeader(h: TarHeader): Buffer {
  let name = cleanName(h.name);
  if (name === '') throw new TarFormatError(`tar entry with an empty name`, h.name);
  if (h.type === 'directory') name += '/';
  const type = h.type;
  if (!(type in TYPEFLAG)) throw new TarFormatError(`unknown tar entry type ${JSON.stringify(type)}`, name);
  const mode = (h.mode ?? (type === 'directory' ? 0o755 : 0o644)) & 0o7777;
  const uid = h.uid ?? 0;
  const gid = h.gid ?? 0;
  const size = type === 'file' ? (h.size ?? 0) : 0;
  const mtime = Math.floor(h.mtime ?? 0);
  let linkname = h.linkname ?? '';
  if (type === 'link') linkname = cleanName(linkname);
  if ((type === 'link' || type === 'symlink') && linkname === '')
    throw new TarFormatError(`${type} entry ${name} has no link target`, name);
  if (!Number.isSafeInteger(size) || size < 0) throw new TarFormatError(`invalid size ${size} for ${name}`, name);
  for (const [k, v] of [['uid', uid], ['gid', gid]] as const)
    if (!Number.isSafeInteger(v) || v < 0) throw new TarFormatError(`invalid ${k} ${v} for ${name}`, name);

  const pax: [string, Uint8Array | string][] = [];
  const split = splitUstarName(name);
  if (!split) pax.push(['path', name]);
  if (linkname.length > 100 || !isAscii(linkname)) pax.push(['linkpath', linkname]);
  if (uid > MAX_OCTAL_7) pax.push(['uid', String(uid)]);
  if (gid > MAX_OCTAL_7) pax.push(['gid', String(gid)]);
  if (size > MAX_OCTAL_11) pax.push(['size', String(size)]);
  if (mtime < 0 || mtime > MAX_OCTAL_11) pax.push(['mtime', String(mtime)]);
  if (h.uname && (Buffer.byteLength(h.uname) > 32 || !isAscii(h.uname))) pax.push(['uname', h.uname]);
  if (h.gname && (Buffer.byteLength(h.gname) > 32 || !isAscii(h.gname))) pax.push(['gname', h.gname]);
  for (const [k, v] of xattrEntries(h.xattrs)) pax.push([`SCHILY.xattr.${k}`, v]);
  for (const [k, v] of Object.entries(h.pax ?? {})) pax.push([k, v]);

  const ascii = (s: string, n: number) => s.replace(/[^\x20-\x7e]/g, '_').slice(0, n);
  const main = ustarBlock({
    name: split ? split.name : ascii(name, 100),
    prefix: split?.prefix ?? '',
    mode,
    uid,
    gid,
    size,
    mtime,
    typeflag: TYPEFLAG[type],
    linkname: linkname.length > 100 || !isAscii(linkname) ? ascii(linkname, 100) : linkname,
    uname: h.uname ? ascii(h.uname, 32) : '',
    gname: h.gname ? ascii(h.gname, 32) : '',
    devmajor: type === 'char' || type === 'block' ? (h.devmajor ?? 0) : 0,
    devminor: type === 'char' || type === 'block' ? (h.devminor ?? 0) : 0,
  });
  if (pax.length === 0) return main;
  pax.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const data = Buffer.concat(pax.map(([k, v]) => paxRecord(k, v)));
  // Go names the PAX header "<dir>/PaxHeaders.0/<base>".
  const slash = name.replace(/\/$/, '').lastIndexOf('/');
  const paxName = ascii(
    slash >= 0 ? `${name.slice(0, slash)}/PaxHeaders.0/${name.slice(slash + 1)}` : `PaxHeaders.0/${name}`,
    100,
  ).replace(/\/$/, '');
  const paxHdr = ustarBlock({ name: paxName, mode: 0, uid: 0, gid: 0, size: data.length, mtime: 0, typeflag: 'x' });
  return Buffer.concat([paxHdr, data, padding(data.length), main]);
}

/** Smaller files are read in one synchronous read and emitted together with their header. */
const SMALL_FILE = 256 * 1024;
const READ_CHUNK = 512 * 1024;

async function* bodyChunks(e: TarEntry, name: string, size: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
  let n = 0;
  const tooBig = () => new TarFormatError(`body of ${name} is longer than its declared size ${size}`, name);
  if (e.path !== undefined) {
    const fh = await open(e.path, 'r');
    try {
      while (n < size) {
        signal?.throwIfAborted();
        const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, size - n));
        const { bytesRead } = await fh.read(buf, 0, buf.length, n);
        if (bytesRead === 0) throw new TarFormatError(`file ${e.path} shrank while packing (${n} of ${size} bytes)`, name);
        n += bytesRead;
        yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
      }
    } finally {
      await fh.close();
    }
  } else if (e.body !== undefined) {
    if (typeof e.body === 'string' || e.body instanceof Uint8Array) {
      const b = typeof e.body === 'string' ? Buffer.from(e.body) : Buffer.from(e.body.buffer, e.body.byteOffset, e.body.byteLength);
      if (b.length > size) throw tooBig();
      n = b.length;
      if (b.length) yield b;
    } else {
      for await (const c of e.body) {
        signal?.throwIfAborted();
        n += c.length;
        if (n > size) throw tooBig();
        yield Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
      }
    }
  }
  if (n !== size) throw new TarFormatError(`body of ${name} has ${n} bytes, its header declares ${size}`, name);
}

function readSmallFile(path: string, size: number, name: string): Buffer {
  const buf = Buffer.allocUnsafe(size);
  const fd = openSync(path, 'r');
  try {
    let n = 0;
    while (n < size) {
      const r = readSync(fd, buf, n, size - n, n);
      if (r === 0) throw new TarFormatError(`file ${path} shrank while packing (${n} of ${size} bytes)`, name);
      n += r;
    }
  } finally {
    closeSync(fd);
  }
  return buf;
}

export interface PackOptions {
  /** Clamp every mtime to at most this (epoch seconds; SOURCE_DATE_EPOCH semantics). */
  mtimeClamp?: number | undefined;
  /** Force every entry's owner. */
  uid?: number | undefined;
  gid?: number | undefined;
  signal?: AbortSignal | undefined;
}

function applyOptions(h: TarHeader, o: PackOptions): TarHeader {
  if (o.mtimeClamp === undefined && o.uid === undefined && o.gid === undefined) return h;
  const out = { ...h };
  if (o.mtimeClamp !== undefined && (out.mtime ?? 0) > o.mtimeClamp) out.mtime = o.mtimeClamp;
  if (o.uid !== undefined) out.uid = o.uid;
  if (o.gid !== undefined) out.gid = o.gid;
  return out;
}

async function* packGen(entries: AsyncIterable<TarEntry> | Iterable<TarEntry>, o: PackOptions): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let pendingLen = 0;
  const flushAt = 256 * 1024;
  for await (const e of entries) {
    o.signal?.throwIfAborted();
    const h = applyOptions(e.header, o);
    const hdr = encodeHeader(h);
    const name = cleanName(h.name);
    const size = h.type === 'file' ? (h.size ?? 0) : 0;
    if (h.type !== 'file' && (e.body !== undefined || e.path !== undefined) && h.type !== 'directory')
      throw new TarFormatError(`${h.type} entry ${name} cannot have a body`, name);
    pending.push(hdr);
    pendingLen += hdr.length;
    if (size > 0) {
      if (e.path !== undefined && size <= SMALL_FILE) {
        const b = readSmallFile(e.path, size, name);
        const pad = padding(size);
        pending.push(b, pad);
        pendingLen += b.length + pad.length;
      } else {
        if (pending.length) yield Buffer.concat(pending, pendingLen);
        pending = [];
        pendingLen = 0;
        yield* bodyChunks(e, name, size, o.signal);
        const pad = padding(size);
        if (pad.length) {
          pending.push(pad);
          pendingLen += pad.length;
        }
      }
    } else if (h.type === 'file' && (e.body !== undefined || e.path !== undefined)) {
      // Zero-size file: still make sure a given body is empty.
      for await (const c of bodyChunks(e, name, 0, o.signal)) void c;
    }
    if (pendingLen >= flushAt) {
      yield Buffer.concat(pending, pendingLen);
      pending = [];
      pendingLen = 0;
    }
  }
  pending.push(END);
  yield Buffer.concat(pending);
}

/**
 * Write the given entries, in the given order, as a tar stream. File bodies are read
 * lazily (only when the entry is reached). Names are cleaned; the stream fails if a
 * body's length differs from its header's size.
 */
export function packEntries(entries: AsyncIterable<TarEntry> | Iterable<TarEntry>, opts: PackOptions = {}): Readable {
  return Readable.from(packGen(entries, opts), { objectMode: false, highWaterMark: 1024 * 1024 });
}

export interface PackDirectoryOptions extends PackOptions {
  /** Return false to leave an entry (and a directory's whole subtree) out. `rel` has no leading "/". */
  filter?: ((rel: string, st: Stats) => boolean) | undefined;
  /** Include xattrs (default true). */
  xattrs?: boolean | undefined;
  /** Prefix every archive path (e.g. "app/" for a COPY destination). */
  prefix?: string | undefined;
}

/** Header fields for a file on disk (used by packDirectory; exported for other packers). */
export function headerFromStats(name: string, st: Stats, linkTarget?: string): TarHeader | undefined {
  const base = { name, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000) };
  if (st.isFile()) return { ...base, type: 'file', size: st.size };
  if (st.isDirectory()) return { ...base, type: 'directory' };
  if (st.isSymbolicLink()) return { ...base, type: 'symlink', linkname: linkTarget ?? '' };
  if (st.isCharacterDevice() || st.isBlockDevice())
    return {
      ...base,
      type: st.isCharacterDevice() ? 'char' : 'block',
      devmajor: Number((BigInt(st.rdev) >> 8n) & 0xfffn) | Number((BigInt(st.rdev) >> 32n) & ~0xfffn),
      devminor: Number(BigInt(st.rdev) & 0xffn) | Number((BigInt(st.rdev) >> 12n) & ~0xffn),
    };
  if (st.isFIFO()) return { ...base, type: 'fifo' };
  return undefined; // sockets: not representable in tar (GNU tar: "socket ignored")
}

/**
 * The tar entry for a walked non-directory `h` (from headerFromStats) at `abs`: a hard link to
 * the first archive path seen with the same inode (`links`: "dev:ino" -> first path, updated
 * here), else the file with its content path, else the header alone.
 */
export function fileEntry(h: TarHeader, st: Stats, abs: string, links: Map<string, string>): TarEntry {
  if (st.nlink > 1) {
    const key = `${st.dev}:${st.ino}`;
    const first = links.get(key);
    if (first !== undefined) return { header: { ...h, type: 'link', linkname: first, size: 0 } };
    links.set(key, h.name);
  }
  return h.type === 'file' ? { header: h, path: abs } : { header: h };
}

function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** Walk a directory depth-first, children sorted by name (byte order), as filepath.Walk does. */
function* walkEntries(dir: string, o: PackDirectoryOptions): Generator<TarEntry> {
  const links = new Map<string, string>(); // "dev:ino" -> first archive path
  const prefix = o.prefix ? cleanName(o.prefix) : '';
  const withXattrs = o.xattrs !== false;
  // Iterative DFS: each frame is the sorted children list of one directory.
  type Frame = { rel: string; names: string[]; i: number };
  const frames: Frame[] = [{ rel: '', names: readdirSync(dir).sort(byteCompare), i: 0 }];
  while (frames.length) {
    const f = frames[frames.length - 1]!;
    if (f.i >= f.names.length) {
      frames.pop();
      continue;
    }
    const nm = f.names[f.i++]!;
    const rel = f.rel ? `${f.rel}/${nm}` : nm;
    const abs = join(dir, rel);
    o.signal?.throwIfAborted();
    let st: Stats;
    try {
      st = lstatSync(abs);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // vanished while walking
      throw err;
    }
    if (o.filter && !o.filter(rel, st)) continue;
    const name = prefix ? `${prefix}/${rel}` : rel;
    const h = headerFromStats(name, st, st.isSymbolicLink() ? readlinkSync(abs) : undefined);
    if (!h) continue;
    if (withXattrs) {
      const x = readXattrs(abs);
      if (x.size) h.xattrs = x;
    }
    if (st.isDirectory()) {
      yield { header: h };
      frames.push({ rel, names: readdirSync(abs).sort(byteCompare), i: 0 });
    } else yield fileEntry(h, st, abs, links);
  }
}

/**
 * Pack a directory tree as a layer tar: entries sorted by path (depth-first, byte order),
 * hardlinks within the tree as link entries, symlinks verbatim, modes incl. setuid/sticky,
 * owners, devices/fifos, xattrs (PAX). The root directory itself is not an entry.
 */
export function packDirectory(dir: string, opts: PackDirectoryOptions = {}): Readable {
  if (!lstatSync(dir).isDirectory()) throw new TarFormatError(`${dir} is not a directory`);
  return packEntries(walkEntries(dir, opts), opts);
}

// ---------------------------------------------------------------------------------------------
// Reading

/** A header as read from an archive (PAX applied). */
export interface TarReadHeader {
  /** The name exactly as in the archive (PAX path / GNU long name applied, not cleaned). */
  name: string;
  type: TarEntryType;
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  /** Epoch seconds (fractional from PAX mtime). */
  mtime: number;
  atime?: number | undefined;
  size: number;
  linkname: string;
  devmajor: number;
  devminor: number;
  xattrs: Map<string, Buffer>;
  pax: Map<string, Buffer>;
  /** Byte offset of the entry's first header in the tar. */
  offset: number;
}

export interface TarReadEntry {
  header: TarReadHeader;
  /** The body (files only); must be consumed before the next entry is requested, or it is skipped. */
  body: AsyncIterable<Buffer>;
}

export interface ReadTarOptions {
  /** Largest PAX/GNU long-name header accepted (default 1 MiB). */
  maxMetaSize?: number | undefined;
  signal?: AbortSignal | undefined;
}

class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private off = 0;
  /** Bytes consumed so far. */
  pos = 0;
  private done = false;
  constructor(private readonly it: AsyncIterator<Uint8Array>) {}

  private get avail(): number {
    return this.buf.length - this.off;
  }

  private async fill(): Promise<boolean> {
    if (this.done) return false;
    const r = await this.it.next();
    if (r.done) {
      this.done = true;
      return false;
    }
    const c = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
    if (this.avail === 0) {
      this.buf = c;
      this.off = 0;
    } else {
      this.buf = Buffer.concat([this.buf.subarray(this.off), c]);
      this.off = 0;
    }
    return true;
  }

  /** Exactly n bytes, or null at a clean EOF (no bytes), or a short buffer when EOF cut it. */
  async exact(n: number): Promise<Buffer | null> {
    while (this.avail < n) {
      if (!(await this.fill())) break;
    }
    if (this.avail === 0) return null;
    const take = Math.min(n, this.avail);
    const out = this.buf.subarray(this.off, this.off + take);
    this.off += take;
    this.pos += take;
    return out;
  }

  /** Up to n bytes (at least 1), or null at EOF. */
  async some(n: number): Promise<Buffer | null> {
    if (this.avail === 0 && !(await this.fill())) return null;
    const take = Math.min(n, this.avail);
    const out = this.buf.subarray(this.off, this.off + take);
    this.off += take;
    this.pos += take;
    return out;
  }

  async drain(): Promise<void> {
    this.pos += this.avail;
    this.off = this.buf.length;
    while (await this.fill()) {
      this.pos += this.avail;
      this.off = this.buf.length;
    }
  }

  async close(): Promise<void> {
    await this.it.return?.();
  }
}

function parseNumeric(b: Buffer, off: number, len: number, field: string, entry: string): number {
  const f = b.subarray(off, off + len);
  if (f[0]! & 0x80) {
    // base-256 (GNU): big-endian two's complement, first byte 0x80 (positive) or 0xff (negative)
    if (f[0] === 0xff) throw new TarFormatError(`invalid tar header for ${JSON.stringify(entry)}: negative ${field}`, entry);
    let v = 0;
    for (let i = 1; i < f.length; i++) v = v * 256 + f[i]!;
    if (!Number.isSafeInteger(v)) throw new TarFormatError(`invalid tar header for ${JSON.stringify(entry)}: ${field} too large`, entry);
    return v;
  }
  const s = f.toString('latin1').replace(/\0.*$/s, '').trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new TarFormatError(`invalid tar header for ${JSON.stringify(entry)}: ${field} is not octal (${JSON.stringify(s)})`, entry);
  return parseInt(s, 8);
}

function cString(b: Buffer, off: number, len: number): string {
  const f = b.subarray(off, off + len);
  const z = f.indexOf(0);
  return (z >= 0 ? f.subarray(0, z) : f).toString('utf8');
}

function checksumOk(b: Buffer): boolean {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : b[i]!;
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  const want = parseInt(b.subarray(148, 156).toString('latin1').replace(/\0.*$/s, '').trim() || 'x', 8);
  return want === unsigned || want === signed;
}

function parsePax(data: Buffer, entry: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let i = 0;
  while (i < data.length) {
    if (data[i] === 0) break; // NUL padding
    const sp = data.indexOf(0x20, i);
    if (sp < 0) throw new TarFormatError(`invalid PAX header for ${JSON.stringify(entry)}: record without length`, entry);
    const len = Number(data.subarray(i, sp).toString('latin1'));
    if (!Number.isInteger(len) || len <= sp - i + 1 || i + len > data.length || data[i + len - 1] !== 0x0a)
      throw new TarFormatError(`invalid PAX header for ${JSON.stringify(entry)}: bad record length`, entry);
    const rec = data.subarray(sp + 1, i + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw new TarFormatError(`invalid PAX header for ${JSON.stringify(entry)}: record without key`, entry);
    out.set(rec.subarray(0, eq).toString('utf8'), Buffer.from(rec.subarray(eq + 1)));
    i += len;
  }
  return out;
}

function typeOf(flag: number): TarEntryType | 'pax' | 'global' | 'longname' | 'longlink' | undefined {
  switch (String.fromCharCode(flag)) {
    case '\0':
    case '0':
    case '7':
      return 'file';
    case '1':
      return 'link';
    case '2':
      return 'symlink';
    case '3':
      return 'char';
    case '4':
      return 'block';
    case '5':
      return 'directory';
    case '6':
      return 'fifo';
    case 'x':
      return 'pax';
    case 'g':
      return 'global';
    case 'L':
      return 'longname';
    case 'K':
      return 'longlink';
  }
  return undefined;
}

const TYPE_NAMES: Record<string, string> = { S: 'GNU sparse file', D: 'GNU dumpdir', V: 'volume label', M: 'multi-volume continuation' };

/**
 * Read a tar stream entry by entry. Handles USTAR, GNU (long names, base-256 numbers) and
 * PAX (path, linkpath, size, uid, gid, mtime, SCHILY.xattr.*, LIBARCHIVE.xattr.*; global
 * headers). Fails with TarFormatError on bad checksums, unsupported types, oversize meta
 * headers and truncation. Bytes after the end-of-archive blocks are read and discarded.
 */
export async function* readTar(src: AsyncIterable<Uint8Array>, opts: ReadTarOptions = {}): AsyncGenerator<TarReadEntry> {
  const maxMeta = opts.maxMetaSize ?? 1024 * 1024;
  const r = new ByteReader(src[Symbol.asyncIterator]());
  let global = new Map<string, Buffer>();
  let last = '(start of archive)';
  const where = () => `after entry ${JSON.stringify(last)}`;
  try {
    for (;;) {
      let pax: Map<string, Buffer> | undefined;
      let longName: string | undefined;
      let longLink: string | undefined;
      let start = r.pos;
      let block: Buffer | null;
      let type: ReturnType<typeof typeOf>;
      let name = '';
      // Read meta headers until a real entry.
      for (;;) {
        opts.signal?.throwIfAborted();
        const at = r.pos;
        block = await r.exact(BLOCK);
        if (block === null) {
          if (pax || longName || longLink) throw new TarFormatError(`truncated tar: archive ends inside the headers of an entry ${where()}`);
          return; // EOF without end blocks: accepted, as GNU tar does
        }
        if (block.length < BLOCK) throw new TarFormatError(`truncated tar: unexpected end of data in a header ${where()} (offset ${at})`);
        if (block.equals(ZERO_BLOCK)) {
          if (pax || longName || longLink) throw new TarFormatError(`invalid tar: end-of-archive block inside the headers of an entry ${where()}`);
          await r.drain();
          return;
        }
        name = cString(block, 0, 100);
        if (!checksumOk(block))
          throw new TarFormatError(`invalid tar header at offset ${at} ${where()}: checksum mismatch (corrupt tar, or compressed data read as tar)`);
        const flag = block[156]!;
        type = typeOf(flag);
        if (type === undefined) {
          const c = String.fromCharCode(flag);
          throw new TarFormatError(
            `unsupported tar entry type ${JSON.stringify(c)}${TYPE_NAMES[c] ? ` (${TYPE_NAMES[c]})` : ''} for ${JSON.stringify(longName ?? name)}`,
            longName ?? name,
          );
        }
        if (type !== 'pax' && type !== 'global' && type !== 'longname' && type !== 'longlink') break;
        const size = parseNumeric(block, 124, 12, 'size', name);
        if (size > maxMeta)
          throw new TarFormatError(`oversize ${type === 'pax' || type === 'global' ? 'PAX' : 'GNU long-name'} header (${size} bytes, limit ${maxMeta}) ${where()}`);
        const data = size ? await r.exact(size) : Buffer.alloc(0);
        if ((data?.length ?? 0) < size) throw new TarFormatError(`truncated tar: unexpected end of data in a ${type} header ${where()}`);
        const pad = (BLOCK - (size % BLOCK)) % BLOCK;
        if (pad) {
          const p = await r.exact(pad);
          if (!p || p.length < pad) throw new TarFormatError(`truncated tar: unexpected end of data in a ${type} header ${where()}`);
        }
        const d = data ?? Buffer.alloc(0);
        if (type === 'pax') pax = parsePax(d, last);
        else if (type === 'global') global = new Map([...global, ...parsePax(d, last)]);
        else if (type === 'longname') longName = cString(d, 0, d.length);
        else longLink = cString(d, 0, d.length);
      }
      const eType = type as TarEntryType;
      const magic = block.subarray(257, 263).toString('latin1');
      if (magic === 'ustar\0' && block[345] !== 0) name = `${cString(block, 345, 155)}/${name}`;
      const p = new Map([...global, ...(pax ?? [])]);
      const str = (k: string) => p.get(k)?.toString('utf8');
      if (longName !== undefined) name = longName;
      if (str('path') !== undefined) name = str('path')!;
      let linkname = cString(block, 157, 100);
      if (longLink !== undefined) linkname = longLink;
      if (str('linkpath') !== undefined) linkname = str('linkpath')!;
      const num = (k: string, v: number) => {
        const s = str(k);
        if (s === undefined) return v;
        const n = Number(s);
        if (!Number.isFinite(n) || n < 0) throw new TarFormatError(`invalid PAX ${k} ${JSON.stringify(s)} for ${JSON.stringify(name)}`, name);
        return n;
      };
      const xattrs = new Map<string, Buffer>();
      for (const [k, v] of p) {
        if (k.startsWith('SCHILY.xattr.')) xattrs.set(k.slice('SCHILY.xattr.'.length), v);
        else if (k.startsWith('LIBARCHIVE.xattr.'))
          xattrs.set(decodeURIComponent(k.slice('LIBARCHIVE.xattr.'.length)), Buffer.from(v.toString('latin1'), 'base64'));
      }
      let size = num('size', parseNumeric(block, 124, 12, 'size', name));
      if (!Number.isSafeInteger(size)) throw new TarFormatError(`invalid size for ${JSON.stringify(name)}`, name);
      const header: TarReadHeader = {
        name,
        type: eType,
        mode: parseNumeric(block, 100, 8, 'mode', name) & 0o7777,
        uid: num('uid', parseNumeric(block, 108, 8, 'uid', name)),
        gid: num('gid', parseNumeric(block, 116, 8, 'gid', name)),
        uname: str('uname') ?? cString(block, 265, 32),
        gname: str('gname') ?? cString(block, 297, 32),
        mtime: num('mtime', parseNumeric(block, 136, 12, 'mtime', name)),
        atime: str('atime') !== undefined ? num('atime', 0) : undefined,
        size,
        linkname,
        devmajor: eType === 'char' || eType === 'block' ? parseNumeric(block, 329, 8, 'devmajor', name) : 0,
        devminor: eType === 'char' || eType === 'block' ? parseNumeric(block, 337, 8, 'devminor', name) : 0,
        xattrs,
        pax: p,
        offset: start,
      };
      // Old tars mark directories with a trailing slash on a regular file entry.
      if (eType === 'file' && name.endsWith('/')) header.type = 'directory';
      // Only regular files carry a body (hardlinks/symlinks/devices with a size field: ignore the size for reading? no:
      // GNU tar and Go skip `size` bytes for every type except links/dirs... follow Go: links, symlinks, devices,
      // fifos and directories have no body).
      if (header.type !== 'file') size = 0;
      header.size = size;
      last = name;
      let remaining = size;
      const entryName = name;
      const body: AsyncIterable<Buffer> = {
        [Symbol.asyncIterator]: async function* () {
          while (remaining > 0) {
            opts.signal?.throwIfAborted();
            const c = await r.some(Math.min(remaining, 1024 * 1024));
            if (!c) throw new TarFormatError(`truncated tar: unexpected end of data in the body of ${JSON.stringify(entryName)} (${remaining} bytes missing)`, entryName);
            remaining -= c.length;
            yield c;
          }
        },
      };
      yield { header, body };
      // Skip what the consumer left, then the padding.
      while (remaining > 0) {
        const c = await r.some(remaining);
        if (!c) throw new TarFormatError(`truncated tar: unexpected end of data in the body of ${JSON.stringify(entryName)} (${remaining} bytes missing)`, entryName);
        remaining -= c.length;
      }
      const pad = (BLOCK - (size % BLOCK)) % BLOCK;
      if (pad) {
        const pb = await r.exact(pad);
        if (!pb || pb.length < pad) throw new TarFormatError(`truncated tar: unexpected end of data after the body of ${JSON.stringify(entryName)}`, entryName);
      }
      start = r.pos;
    }
  } finally {
    await r.close();
  }
}
