/**
 * Image archives, as skopeo's `oci-archive:` and `docker-archive:` transports read and
 * write them, into and out of an OciLayout. Everything streams: blobs flow from the tar
 * into the store (verified while they flow) and from the store into the tar; nothing
 * holds a whole blob in memory.
 *
 * - OCI archive: a tar of an OCI image layout (`oci-layout`, `index.json`, `blobs/...`).
 *   `importOciArchive` ingests a tar stream (or file) into a layout; `exportOciArchive`
 *   writes a layout (or the images a list of names reaches) as a tar; `OciArchiveReader`
 *   serves an archive file's index and blobs in place, by seeking (a tar index of member
 *   offsets; no extraction, no temp files), for transports.
 * - docker-archive (`docker save`): `manifest.json` ([{Config, RepoTags, Layers}]),
 *   `repositories`, the config JSON and uncompressed layer tars (plus the legacy
 *   `<id>/{layer.tar,json,VERSION}` that skopeo writes). `DockerArchiveReader` presents an
 *   image as skopeo does (a Docker schema 2 manifest whose layer digests are the diffIDs);
 *   `importDockerArchive` converts it to an OCI image in a layout (diffIDs verified);
 *   `DockerArchiveWriter` / `exportDockerArchive` write one (layers decompressed, diffIDs
 *   verified, legacy layer IDs computed as containers/image does).
 */
import { createReadStream, createWriteStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, posix } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { digestAlgorithm, digestHex, digestOf, isDigest, parseDigest, verifying, type Digest } from './digest.js';
import { DigestMismatchError, OciError, SizeMismatchError, TsimageError, UsageError, ValidationError } from './errors.js';
import { MAX_MANIFEST_SIZE, readAll, type Io } from './io.js';
import { guessManifestType, isIndexType, isManifestType, layerCompression, layerMediaType, MediaTypes, type Compression, type MediaType } from './mediatypes.js';
import { parseConfig, parseJson, parseManifest, toJsonBytes, validateIndex, type Descriptor, type ImageIndex, type ImageManifest } from './manifest.js';
import { parseReference } from './reference.js';
import { hostPlatform, selectPlatform } from './platform.js';
import { packEntries, readTar, cleanName, TarFormatError, type TarEntry } from './tar.js';
import { decompressStream, detectCompression } from './compress.js';
import { writeLayer } from './layer.js';
import { OciLayout, REF_NAME_ANNOTATION, validateRefName, type TaggedEntry } from './store.js';

// =============================================================================================
// A seekable index of a tar file's members

export interface TarMember {
  /** Cleaned archive path ("blobs/sha256/ab..", no leading "./", no trailing "/"). */
  name: string;
  type: 'file' | 'directory' | 'symlink' | 'link' | 'other';
  /** Offset of the member's data in the file. */
  offset: number;
  size: number;
  linkname: string;
}

const BLOCK = 512;

function cstr(b: Buffer, off: number, len: number): string {
  const end = b.indexOf(0, off);
  return b.toString('utf8', off, end < 0 || end > off + len ? off + len : end);
}

function numeric(b: Buffer, off: number, len: number): number {
  if (b[off]! & 0x80) {
    // GNU base-256
    let n = 0;
    for (let i = off + 1; i < off + len; i++) n = n * 256 + b[i]!;
    n += (b[off]! & 0x3f) * 256 ** (len - 1);
    return n;
  }
  const s = b.toString('ascii', off, off + len).replace(/[\0 ]+$/, '').trim();
  return s === '' ? 0 : parseInt(s, 8);
}

function checksumOk(b: Buffer): boolean {
  let u = 0;
  let s = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : b[i]!;
    u += c;
    s += c > 127 ? c - 256 : c;
  }
  const want = numeric(b, 148, 8);
  return want === u || want === s;
}

function parsePax(data: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  while (i < data.length) {
    const sp = data.indexOf(0x20, i);
    if (sp < 0) break;
    const len = parseInt(data.toString('ascii', i, sp), 10);
    if (!Number.isSafeInteger(len) || len <= 0 || i + len > data.length) break;
    const rec = data.toString('utf8', sp + 1, i + len - 1);
    const eq = rec.indexOf('=');
    if (eq > 0) out.set(rec.slice(0, eq), rec.slice(eq + 1));
    i += len;
  }
  return out;
}

/**
 * Index a tar file by reading only its headers (seeking over member data). Later members
 * of the same name win, as when extracting.
 */
export async function indexTarFile(path: string, opts: { signal?: AbortSignal | undefined } = {}): Promise<Map<string, TarMember>> {
  const fh = await fsp.open(path, 'r').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') throw new UsageError(`archive ${path} does not exist`);
    throw e;
  });
  try {
    const { size: fileSize } = await fh.stat();
    const members = new Map<string, TarMember>();
    const hdr = Buffer.alloc(BLOCK);
    let pos = 0;
    let pax: Map<string, string> | undefined;
    let longName: string | undefined;
    let longLink: string | undefined;
    const readAt = async (buf: Buffer, at: number): Promise<number> => {
      let n = 0;
      while (n < buf.length) {
        const { bytesRead } = await fh.read(buf, n, buf.length - n, at + n);
        if (bytesRead === 0) break;
        n += bytesRead;
      }
      return n;
    };
    for (;;) {
      opts.signal?.throwIfAborted();
      const n = await readAt(hdr, pos);
      if (n === 0) break; // EOF without end blocks: accepted
      if (n < BLOCK) throw new TarFormatError(`${path}: truncated tar (header at offset ${pos})`);
      if (hdr.every((c) => c === 0)) break;
      if (!checksumOk(hdr)) throw new TarFormatError(`${path}: not a tar archive, or corrupt (bad header checksum at offset ${pos})`);
      const flag = String.fromCharCode(hdr[156]!);
      let size = numeric(hdr, 124, 12);
      const dataAt = pos + BLOCK;
      if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
        if (size > 1024 * 1024) throw new TarFormatError(`${path}: oversize tar meta header (${size} bytes) at offset ${pos}`);
        const data = Buffer.alloc(size);
        if ((await readAt(data, dataAt)) < size) throw new TarFormatError(`${path}: truncated tar (meta header at offset ${pos})`);
        if (flag === 'x') pax = parsePax(data);
        else if (flag === 'L') longName = cstr(data, 0, data.length);
        else if (flag === 'K') longLink = cstr(data, 0, data.length);
        pos = dataAt + Math.ceil(size / BLOCK) * BLOCK;
        continue;
      }
      let name = cstr(hdr, 0, 100);
      if (hdr.toString('ascii', 257, 262) === 'ustar') {
        const prefix = cstr(hdr, 345, 155);
        if (prefix) name = `${prefix}/${name}`;
      }
      let linkname = cstr(hdr, 157, 100);
      if (longName !== undefined) name = longName;
      if (longLink !== undefined) linkname = longLink;
      if (pax?.has('path')) name = pax.get('path')!;
      if (pax?.has('linkpath')) linkname = pax.get('linkpath')!;
      if (pax?.has('size')) size = Number(pax.get('size'));
      pax = undefined;
      longName = undefined;
      longLink = undefined;
      const type: TarMember['type'] =
        flag === '0' || flag === '\0' || flag === '7' ? 'file' : flag === '5' ? 'directory' : flag === '2' ? 'symlink' : flag === '1' ? 'link' : 'other';
      const dataSize = type === 'file' ? size : flag === '1' || flag === '2' || flag === '5' ? 0 : size;
      if (dataAt + dataSize > fileSize) throw new TarFormatError(`${path}: truncated tar (member ${JSON.stringify(name)} needs ${dataSize} bytes at offset ${dataAt}, file has ${fileSize})`);
      const clean = cleanName(name);
      if (clean !== '') members.set(clean, { name: clean, type, offset: dataAt, size: type === 'file' ? size : 0, linkname });
      pos = dataAt + Math.ceil(dataSize / BLOCK) * BLOCK;
    }
    return members;
  } finally {
    await fh.close();
  }
}

/** Follow symlinks and hardlinks inside the archive to a regular file member. */
function resolveMember(members: Map<string, TarMember>, name: string, archive: string): TarMember | undefined {
  let cur = members.get(cleanName(name));
  for (let hops = 0; cur && hops < 16; hops++) {
    if (cur.type === 'file') return cur;
    if (cur.type === 'link') cur = members.get(cleanName(cur.linkname));
    else if (cur.type === 'symlink') {
      const target = cur.linkname.startsWith('/') ? cur.linkname : posix.join(posix.dirname(cur.name), cur.linkname);
      const norm = posix.normalize(target);
      if (norm.startsWith('../') || norm === '..') throw new TarFormatError(`${archive}: member ${cur.name} links outside the archive (${cur.linkname})`);
      cur = members.get(cleanName(norm));
    } else return undefined;
  }
  return undefined;
}

function memberStream(path: string, m: TarMember, o: Io & { start?: number | undefined; end?: number | undefined } = {}): Readable {
  const start = m.offset + (o.start ?? 0);
  const end = m.offset + (o.end !== undefined ? Math.min(o.end, m.size - 1) : m.size - 1);
  if (m.size === 0 || end < start) return Readable.from([]);
  const s = createReadStream(path, { start, end, highWaterMark: 512 * 1024, ...(o.signal ? { signal: o.signal } : {}) });
  if (o.onProgress) {
    const cb = o.onProgress;
    s.on('data', (c: Buffer | string) => cb(c.length));
  }
  return s;
}

async function readMember(path: string, m: TarMember, limit: number, what: string): Promise<Buffer> {
  if (m.size > limit) throw new SizeMismatchError(limit, m.size, what, 'limit');
  return readAll(memberStream(path, m), limit, what);
}

// =============================================================================================
// OCI archives

function checkLayoutVersion(bytes: Buffer, where: string): void {
  let version: unknown;
  try {
    version = (JSON.parse(bytes.toString('utf8')) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
  } catch {
    throw new UsageError(`${where}: oci-layout is not valid JSON`);
  }
  if (typeof version !== 'string' || !/^1\.\d+\.\d+$/.test(version))
    throw new UsageError(`${where}: unsupported imageLayoutVersion ${JSON.stringify(version)} (want 1.x.y)`);
}

function refName(d: Descriptor): string | undefined {
  return d.annotations?.[REF_NAME_ANNOTATION];
}

/** Pick index.json entries by name or digest (or the only one), with OciLayout's rules. */
function pickEntry(index: ImageIndex, ref: string | undefined, where: string): Descriptor | undefined {
  if (ref === undefined || ref === '') {
    if (index.manifests.length === 1) return index.manifests[0];
    if (index.manifests.length === 0) return undefined;
    throw new UsageError(`${where} holds ${index.manifests.length} images: name one (PATH:NAME or PATH@DIGEST)`);
  }
  if (isDigest(ref)) return index.manifests.find((m) => m.digest === ref);
  const hits = index.manifests.filter((m) => refName(m) === ref);
  if (hits.length > 1) throw new TsimageError(`${where}: more than one index.json entry named ${JSON.stringify(ref)}`);
  return hits[0];
}

/**
 * An OCI archive file read in place: index.json and blobs served by seeking into the tar
 * (one header scan at open). Blob streams are not verified here (the reader's consumer
 * verifies, as with any source); readBytes verifies.
 */
export class OciArchiveReader {
  private constructor(
    readonly path: string,
    private readonly members: Map<string, TarMember>,
    private readonly index: ImageIndex,
  ) {}

  static async open(path: string, io: Io = {}): Promise<OciArchiveReader> {
    const members = await indexTarFile(path, io);
    const layoutMember = resolveMember(members, 'oci-layout', path);
    if (!layoutMember) throw new UsageError(`${path} is not an OCI archive (no oci-layout file in the tar)`);
    checkLayoutVersion(await readMember(path, layoutMember, 4096, `${path}: oci-layout`), path);
    const indexMember = resolveMember(members, 'index.json', path);
    if (!indexMember) throw new UsageError(`${path} is not an OCI archive (no index.json in the tar)`);
    const bytes = await readMember(path, indexMember, MAX_MANIFEST_SIZE, `${path}: index.json`);
    let index: ImageIndex;
    try {
      index = validateIndex(parseJson(bytes, `${path}: index.json`));
    } catch (e) {
      throw new TsimageError(`${path}: index.json: ${(e as Error).message}`, { cause: e });
    }
    return new OciArchiveReader(path, members, index);
  }

  readIndex(): ImageIndex {
    return structuredClone(this.index);
  }

  list(): TaggedEntry[] {
    return this.index.manifests.flatMap((m) => (refName(m) !== undefined ? [{ name: refName(m)!, descriptor: structuredClone(m) }] : []));
  }

  private member(d: Digest): TarMember | undefined {
    return resolveMember(this.members, `blobs/${digestAlgorithm(d)}/${digestHex(d)}`, this.path);
  }

  stat(d: Digest): { size: number } | undefined {
    const m = this.member(parseDigest(d));
    return m ? { size: m.size } : undefined;
  }

  has(d: Digest): boolean {
    return this.stat(d) !== undefined;
  }

  *digests(): Generator<Digest> {
    for (const name of this.members.keys()) {
      const m = /^blobs\/([a-z0-9]+)\/([a-f0-9]+)$/.exec(name);
      if (m && isDigest(`${m[1]}:${m[2]}`)) yield `${m[1]}:${m[2]}` as Digest;
    }
  }

  /** A blob's bytes (or start..end, end inclusive). Fails with BLOB_UNKNOWN when missing. */
  async open(d: Digest, o: Io & { start?: number | undefined; end?: number | undefined } = {}): Promise<Readable> {
    const m = this.member(parseDigest(d));
    if (!m) throw new OciError('BLOB_UNKNOWN', `blob ${d} not found in OCI archive ${this.path}`);
    return memberStream(this.path, m, o);
  }

  async readBytes(d: Digest, limit = MAX_MANIFEST_SIZE): Promise<Buffer> {
    const m = this.member(parseDigest(d));
    if (!m) throw new OciError('BLOB_UNKNOWN', `blob ${d} not found in OCI archive ${this.path}`);
    const bytes = await readMember(this.path, m, limit, `blob ${d}`);
    const actual = digestOf(bytes, digestAlgorithm(d));
    if (actual !== d) throw new DigestMismatchError(d, actual, `blob ${d} in ${this.path}`);
    return bytes;
  }

  /** An index.json entry by name or digest (a manifest not listed there: by its JSON), or the only image. */
  async find(ref?: string): Promise<Descriptor | undefined> {
    const hit = pickEntry(this.index, ref, `OCI archive ${this.path}`);
    if (hit) return structuredClone(hit);
    if (ref && isDigest(ref) && this.has(ref)) {
      const st = this.stat(ref)!;
      if (st.size > MAX_MANIFEST_SIZE) return undefined;
      const mt = guessManifestType(JSON.parse((await this.readBytes(ref)).toString('utf8')) as unknown);
      if (mt && (isManifestType(mt) || isIndexType(mt))) return { mediaType: mt, digest: ref, size: st.size };
    }
    return undefined;
  }

  async resolve(ref?: string): Promise<Descriptor> {
    const d = await this.find(ref);
    if (!d) throw new OciError('MANIFEST_UNKNOWN', ref ? `no image ${JSON.stringify(ref)} in OCI archive ${this.path}` : `OCI archive ${this.path} holds no image`);
    return d;
  }
}

export interface ImportOciArchiveOptions extends Io {
  /** Import only this entry of the archive's index.json (name or digest); default: all. */
  ref?: string | undefined;
  /** Name the (single) imported image so in the layout; null: unnamed entries; default: the archive's names. */
  tag?: string | null | undefined;
}

/** Blobs an image needs, depth first (manifests, index children, configs, layers); missing ones reported. */
async function requiredBlobs(
  read: (d: Digest) => Promise<Buffer>,
  has: (d: Digest) => Promise<boolean> | boolean,
  roots: Descriptor[],
): Promise<{ present: Set<Digest>; missing: { digest: Digest; what: string }[] }> {
  const present = new Set<Digest>();
  const missing: { digest: Digest; what: string }[] = [];
  const visit = async (d: Descriptor, what: string): Promise<void> => {
    if (present.has(d.digest)) return;
    if (!(await has(d.digest))) {
      if (!d.urls?.length) missing.push({ digest: d.digest, what });
      return;
    }
    present.add(d.digest);
    if (!(isManifestType(d.mediaType) || isIndexType(d.mediaType))) return;
    const p = parseManifest(await read(d.digest), d.mediaType);
    if (p.kind === 'index') {
      for (const [i, c] of p.doc.manifests.entries()) await visit(c, `manifests[${i}] of ${d.digest}`);
    } else {
      await visit(p.doc.config, `config of ${d.digest}`);
      for (const [i, l] of p.doc.layers.entries()) await visit(l, `layers[${i}] of ${d.digest}`);
    }
  };
  for (const r of roots) await visit(r, `index.json entry ${refName(r) ?? r.digest}`);
  return { present, missing };
}

/**
 * Import an OCI archive (a path, or a tar stream) into `layout`: every blob is verified
 * against its name while it streams into the store; index.json entries are added last, so
 * nothing is named before all of its blobs are stored. Returns the entries added.
 */
export async function importOciArchive(
  src: string | Readable | AsyncIterable<Uint8Array>,
  layout: OciLayout,
  opts: ImportOciArchiveOptions = {},
): Promise<Descriptor[]> {
  const where = typeof src === 'string' ? `OCI archive ${src}` : 'OCI archive';
  const input: AsyncIterable<Uint8Array> =
    typeof src === 'string'
      ? createReadStream(src, { highWaterMark: 1024 * 1024 }).on('error', () => {})
      : src;
  if (typeof src === 'string') {
    await fsp.access(src).catch(() => {
      throw new UsageError(`archive ${src} does not exist`);
    });
  }
  let indexBytes: Buffer | undefined;
  let sawLayout = false;
  try {
    for await (const e of readTar(input, { signal: opts.signal })) {
      const name = cleanName(e.header.name);
      const blob = /^blobs\/([a-z0-9]+)\/([^/]+)$/.exec(name);
      if (blob && e.header.type === 'file') {
        const d = parseDigest(`${blob[1]}:${blob[2]}`, `${where}: member ${name}`);
        await layout.ingest({ digest: d, size: e.header.size, mediaType: 'application/octet-stream' }, e.body, {
          signal: opts.signal,
          onProgress: opts.onProgress,
          drain: true,
        });
      } else if (blob && (e.header.type === 'link' || e.header.type === 'symlink')) {
        throw new UsageError(`${where}: blob ${name} is a ${e.header.type}; unpack such archives with tar first`);
      } else if (name === 'index.json' && e.header.type === 'file') {
        indexBytes = await readAll(e.body, MAX_MANIFEST_SIZE, `${where}: index.json`);
      } else if (name === 'oci-layout' && e.header.type === 'file') {
        checkLayoutVersion(await readAll(e.body, 4096, `${where}: oci-layout`), where);
        sawLayout = true;
      }
    }
  } finally {
    if (typeof (input as Readable).destroy === 'function') (input as Readable).destroy();
  }
  if (!sawLayout) throw new UsageError(`${where} is not an OCI archive (no oci-layout file in the tar)`);
  if (!indexBytes) throw new UsageError(`${where} is not an OCI archive (no index.json in the tar)`);
  let index: ImageIndex;
  try {
    index = validateIndex(parseJson(indexBytes, `${where}: index.json`));
  } catch (e) {
    throw new TsimageError(`${where}: index.json: ${(e as Error).message}`, { cause: e });
  }
  let entries = index.manifests;
  if (opts.ref !== undefined) {
    const hit = pickEntry(index, opts.ref, where);
    if (!hit) throw new OciError('MANIFEST_UNKNOWN', `no image ${JSON.stringify(opts.ref)} in ${where}`);
    entries = [hit];
  }
  if (typeof opts.tag === 'string' && entries.length !== 1)
    throw new UsageError(`${where} holds ${entries.length} images: choose one to name ${JSON.stringify(opts.tag)}`);
  const { missing } = await requiredBlobs((d) => layout.readBytes(d), (d) => layout.has(d), entries);
  if (missing.length > 0)
    throw new TsimageError(`${where} is incomplete: ${missing.slice(0, 3).map((m) => `blob ${m.digest} (${m.what})`).join(', ')}${missing.length > 3 ? `, and ${missing.length - 3} more` : ''} not in the archive`);
  const add = entries.map((d) => {
    const name = typeof opts.tag === 'string' ? opts.tag : opts.tag === null ? undefined : refName(d);
    const desc = structuredClone(d);
    if (desc.annotations) {
      delete desc.annotations[REF_NAME_ANNOTATION];
      if (Object.keys(desc.annotations).length === 0) delete desc.annotations;
    }
    return { name, descriptor: desc };
  });
  return layout.addEntries(add);
}

export interface ExportOciArchiveOptions extends Io {
  /** Names or digests of index.json entries to export (with what they reach); default: the whole layout. */
  refs?: string[] | undefined;
  /**
   * The archive's index.json entries exactly as given (with what they reach), instead of `refs`: for an export
   * that names its image itself (tsbuild --output type=oci writes the image's name as podman save does).
   */
  manifests?: Descriptor[] | undefined;
  /** Archive member mtime, epoch seconds (default 0: the same layout gives the same archive bytes). */
  mtime?: number | undefined;
}

/** Write a tar stream to a path atomically (temp in the same dir, fsync, rename) or into a Writable. */
async function writeTarTo(tar: Readable, dest: string | Writable, signal?: AbortSignal): Promise<void> {
  if (typeof dest !== 'string') {
    await pipeline(tar, dest, signal ? { signal } : {});
    return;
  }
  const tmp = join(dirname(dest), `.tmp-${basename(dest)}-${process.pid}-${randomBytes(4).toString('hex')}`);
  let done = false;
  try {
    const fh = await fsp.open(tmp, 'wx', 0o644);
    try {
      await pipeline(tar, createWriteStream('', { fd: fh.fd, autoClose: false, highWaterMark: 1024 * 1024 }), signal ? { signal } : {});
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, dest);
    done = true;
  } finally {
    if (!done) {
      tar.destroy();
      await fsp.rm(tmp, { force: true }).catch(() => {});
    }
  }
}

/**
 * The entries of an OCI archive of `layout` (or of the images `refs` reach): blobs/,
 * blobs/<alg>/, the blobs (read lazily from the store), index.json, oci-layout, in that
 * order (as skopeo's archives). Without refs, index.json is copied byte for byte.
 */
export async function ociArchiveEntries(layout: OciLayout, opts: ExportOciArchiveOptions = {}): Promise<{ entries: TarEntry[]; manifests: Descriptor[] }> {
  const mtime = opts.mtime ?? 0;
  let blobs: Digest[];
  let indexBytes: Buffer;
  let manifests: Descriptor[];
  if (opts.refs === undefined && opts.manifests === undefined) {
    blobs = [];
    for await (const d of layout.digests()) blobs.push(d);
    indexBytes = await fsp.readFile(join(layout.dir, 'index.json')).catch(() => toJsonBytes({ schemaVersion: 2, manifests: [] }));
    manifests = (await layout.readIndex()).manifests;
  } else {
    if (opts.manifests) manifests = [...opts.manifests];
    else {
      const index = await layout.readIndex();
      manifests = [];
      for (const r of opts.refs ?? []) {
        const hit = pickEntry(index, r, `OCI layout ${layout.dir}`) ?? (isDigest(r) ? await layout.find(r) : undefined);
        if (!hit) throw new OciError('MANIFEST_UNKNOWN', `no image ${JSON.stringify(r)} in OCI layout ${layout.dir}`);
        if (!manifests.some((m) => JSON.stringify(m) === JSON.stringify(hit))) manifests.push(hit);
      }
    }
    const keep = await layout.reachableFrom(manifests);
    blobs = [...keep].sort();
    const present: Digest[] = [];
    for (const d of blobs) if (await layout.has(d)) present.push(d);
    blobs = present;
    indexBytes = toJsonBytes({ schemaVersion: 2, manifests });
  }
  const byAlg = new Map<string, Digest[]>();
  for (const d of blobs) {
    const a = digestAlgorithm(d);
    if (!byAlg.has(a)) byAlg.set(a, []);
    byAlg.get(a)!.push(d);
  }
  const entries: TarEntry[] = [{ header: { name: 'blobs', type: 'directory', mode: 0o755, mtime } }];
  for (const alg of [...byAlg.keys()].sort()) {
    entries.push({ header: { name: `blobs/${alg}`, type: 'directory', mode: 0o755, mtime } });
    for (const d of byAlg.get(alg)!.sort()) {
      const st = await layout.stat(d);
      if (!st) throw new OciError('BLOB_UNKNOWN', `blob ${d} vanished from ${layout.dir} during export`);
      entries.push({ header: { name: `blobs/${alg}/${digestHex(d)}`, type: 'file', mode: 0o644, size: st.size, mtime }, path: layout.blobPath(d) });
    }
  }
  const layoutBytes = await fsp.readFile(join(layout.dir, 'oci-layout'));
  entries.push({ header: { name: 'index.json', type: 'file', mode: 0o644, size: indexBytes.length, mtime }, body: indexBytes });
  entries.push({ header: { name: 'oci-layout', type: 'file', mode: 0o644, size: layoutBytes.length, mtime }, body: layoutBytes });
  return { entries, manifests };
}

/**
 * Write `layout` (or the images `refs` name) as an OCI archive to a path (atomically) or
 * a stream. Blobs stream from the store; nothing is buffered whole.
 */
export async function exportOciArchive(layout: OciLayout, dest: string | Writable, opts: ExportOciArchiveOptions = {}): Promise<{ manifests: Descriptor[] }> {
  const { entries, manifests } = await ociArchiveEntries(layout, opts);
  const tar = packEntries(entries, { signal: opts.signal });
  if (opts.onProgress) {
    const cb = opts.onProgress;
    tar.on('data', (c: Buffer) => cb(c.length));
  }
  await writeTarTo(tar, dest, opts.signal);
  return { manifests };
}

// =============================================================================================
// docker-archive

/** One element of a docker-archive's manifest.json. */
export interface DockerArchiveItem {
  Config: string;
  RepoTags: string[] | null;
  Layers: string[];
}

export interface DockerArchiveLayer {
  /** Archive member holding the layer (after following legacy symlinks). */
  member: string;
  diffID: Digest;
  /** Uncompressed size (the blob as served). */
  size: number;
  /** How the layer is stored in the archive (docker save / skopeo: 'none'). */
  compression: Compression;
}

export interface DockerArchiveImage {
  index: number;
  repoTags: string[];
  config: { bytes: Buffer; digest: Digest };
  /** A Docker schema 2 manifest as skopeo presents a docker-archive image (layer digests = diffIDs). */
  manifest: { bytes: Buffer; mediaType: MediaType; digest: Digest };
  layers: DockerArchiveLayer[];
}

/** Docker's RepoTags form for a name (`busybox` -> `docker.io/library/busybox:latest`). */
export function dockerRepoTag(name: string): string {
  const r = parseReference(name);
  if (r.digest) throw new UsageError(`docker-archive names cannot carry a digest: ${name}`);
  return `${r.registry}/${r.repository}:${r.tag ?? 'latest'}`;
}

function sameRepoTag(a: string, b: string): boolean {
  try {
    return dockerRepoTag(a) === dockerRepoTag(b);
  } catch {
    return a === b;
  }
}

/**
 * Schema 2 manifest bytes exactly as containers/image builds them for a docker-archive
 * source (descriptor fields in Go struct order: mediaType, size, digest).
 */
function schema2Bytes(config: { digest: Digest; size: number }, layers: { digest: Digest; size: number }[]): Buffer {
  const desc = (mediaType: string, d: { digest: Digest; size: number }) => `{"mediaType":${JSON.stringify(mediaType)},"size":${d.size},"digest":${JSON.stringify(d.digest)}}`;
  return Buffer.from(
    `{"schemaVersion":2,"mediaType":${JSON.stringify(MediaTypes.dockerManifest)},"config":${desc(MediaTypes.dockerConfig, config)},"layers":[${layers
      .map((l) => desc(MediaTypes.dockerLayerGzip, l))
      .join(',')}]}`,
  );
}

/** A docker-archive file read in place (members served by seeking). */
export class DockerArchiveReader {
  private readonly cache = new Map<number, Promise<DockerArchiveImage>>();

  private constructor(
    readonly path: string,
    private readonly members: Map<string, TarMember>,
    readonly items: DockerArchiveItem[],
  ) {}

  static async open(path: string, io: Io = {}): Promise<DockerArchiveReader> {
    const members = await indexTarFile(path, io);
    const m = resolveMember(members, 'manifest.json', path);
    if (!m) {
      if (resolveMember(members, 'oci-layout', path)) throw new UsageError(`${path} is an OCI archive, not a docker-archive (use oci-archive:)`);
      throw new UsageError(`${path} is not a docker-archive (no manifest.json in the tar)`);
    }
    const raw = parseJson(await readMember(path, m, MAX_MANIFEST_SIZE, `${path}: manifest.json`), `${path}: manifest.json`);
    if (!Array.isArray(raw)) throw new ValidationError('manifest.json', `${path}: must be a JSON array`);
    const items = raw.map((it: unknown, i): DockerArchiveItem => {
      const o = it as Record<string, unknown>;
      const at = `manifest.json[${i}]`;
      if (!o || typeof o !== 'object') throw new ValidationError(at, 'must be an object');
      if (typeof o.Config !== 'string') throw new ValidationError(`${at}.Config`, 'missing or not a string');
      if (!Array.isArray(o.Layers) || o.Layers.some((l) => typeof l !== 'string')) throw new ValidationError(`${at}.Layers`, 'must be an array of strings');
      if (o.RepoTags != null && (!Array.isArray(o.RepoTags) || o.RepoTags.some((t) => typeof t !== 'string')))
        throw new ValidationError(`${at}.RepoTags`, 'must be an array of strings');
      return { Config: o.Config, RepoTags: (o.RepoTags as string[] | null | undefined) ?? null, Layers: o.Layers as string[] };
    });
    return new DockerArchiveReader(path, members, items);
  }

  /** The image index for `docker-archive:PATH[:name:tag|:@N]` (default: the only image). */
  select(ref?: string | number): number {
    if (typeof ref === 'number') {
      if (!Number.isInteger(ref) || ref < 0 || ref >= this.items.length)
        throw new UsageError(`docker-archive ${this.path} has ${this.items.length} image(s): no image @${ref}`);
      return ref;
    }
    if (ref === undefined || ref === '') {
      if (this.items.length === 1) return 0;
      throw new UsageError(
        this.items.length === 0 ? `docker-archive ${this.path} holds no image` : `docker-archive ${this.path} holds ${this.items.length} images: name one (:name:tag or :@N)`,
      );
    }
    const hits = this.items.flatMap((it, i) => ((it.RepoTags ?? []).some((t) => sameRepoTag(t, ref)) ? [i] : []));
    if (hits.length === 0) throw new OciError('MANIFEST_UNKNOWN', `no image tagged ${JSON.stringify(ref)} in docker-archive ${this.path}`);
    if (hits.length > 1) throw new UsageError(`docker-archive ${this.path}: more than one image tagged ${JSON.stringify(ref)}`);
    return hits[0]!;
  }

  private member(name: string, what: string): TarMember {
    const m = resolveMember(this.members, name, this.path);
    if (!m) throw new TsimageError(`docker-archive ${this.path}: ${what} ${JSON.stringify(name)} is not in the archive`);
    return m;
  }

  private async head(m: TarMember): Promise<Buffer> {
    const n = Math.min(m.size, 8);
    if (n === 0) return Buffer.alloc(0);
    return readAll(memberStream(this.path, m, { end: n - 1 }), 16);
  }

  /** An image's config, its synthesized Docker schema 2 manifest and its layers. */
  image(i: number): Promise<DockerArchiveImage> {
    let p = this.cache.get(i);
    if (!p) {
      p = this.loadImage(i);
      this.cache.set(i, p);
      p.catch(() => this.cache.delete(i));
    }
    return p;
  }

  private async loadImage(i: number): Promise<DockerArchiveImage> {
    const item = this.items[this.select(i)]!;
    const cm = this.member(item.Config, 'config');
    const configBytes = await readMember(this.path, cm, MAX_MANIFEST_SIZE, `${this.path}: ${item.Config}`);
    const config = parseConfig(configBytes);
    const diffIDs = config.rootfs.diff_ids;
    if (diffIDs.length !== item.Layers.length)
      throw new ValidationError(
        `manifest.json[${i}].Layers`,
        `${this.path}: ${item.Layers.length} layers but the config lists ${diffIDs.length} diff_ids`,
      );
    const layers: DockerArchiveLayer[] = [];
    for (const [j, name] of item.Layers.entries()) {
      const m = this.member(name, `layer`);
      const compression = detectCompression(await this.head(m));
      let size = m.size;
      if (compression !== 'none') {
        // The blob served is the uncompressed tar: its size takes one decompression pass.
        let n = 0;
        await pipeline(memberStream(this.path, m), decompressStream(compression), async function* (src: AsyncIterable<Buffer>) {
          for await (const c of src) n += c.length;
        });
        size = n;
      }
      layers.push({ member: m.name, diffID: diffIDs[j]!, size, compression });
    }
    const configDigest = digestOf(configBytes);
    const manifest = schema2Bytes({ digest: configDigest, size: configBytes.length }, layers.map((l) => ({ digest: l.diffID, size: l.size })));
    return {
      index: i,
      repoTags: item.RepoTags ?? [],
      config: { bytes: configBytes, digest: configDigest },
      manifest: { bytes: manifest, mediaType: MediaTypes.dockerManifest, digest: digestOf(manifest) },
      layers,
    };
  }

  /**
   * A blob of image i: its config, or a layer by diffID (uncompressed, as the manifest
   * describes it). Not verified here: callers verify (importDockerArchive does).
   */
  async blob(i: number, d: Digest, io: Io = {}): Promise<Readable> {
    const img = await this.image(i);
    if (d === img.config.digest) return Readable.from([img.config.bytes]);
    const l = img.layers.find((x) => x.diffID === d);
    if (!l) throw new OciError('BLOB_UNKNOWN', `blob ${d} is not part of image @${i} of docker-archive ${this.path}`);
    const m = this.member(l.member, 'layer');
    const s = memberStream(this.path, m, io);
    if (l.compression === 'none') return s;
    const out = decompressStream(l.compression);
    pipeline(s, out).catch(() => {});
    return out as unknown as Readable;
  }
}

export interface ImportDockerArchiveOptions extends Io {
  /** Which image: its RepoTag or @index (number); default the only one. */
  image?: string | number | undefined;
  /** Name in the layout; default the image's first RepoTag (none: unnamed entry); null: unnamed. */
  tag?: string | null | undefined;
  /** Layer compression in the layout (default 'gzip', as skopeo's oci: destination). */
  compression?: Compression | undefined;
}

/**
 * Import one image of a docker-archive into `layout` as an OCI image: config bytes kept
 * verbatim, each layer verified against its diffID while it streams (and compressed as
 * asked), an OCI manifest written, then named. Returns the manifest descriptor.
 */
export async function importDockerArchive(path: string, layout: OciLayout, opts: ImportDockerArchiveOptions = {}): Promise<Descriptor> {
  const reader = await DockerArchiveReader.open(path, opts);
  const i = reader.select(opts.image);
  const img = await reader.image(i);
  const compression = opts.compression ?? 'gzip';
  const layers: Descriptor[] = [];
  for (const l of img.layers) {
    const what = `layer ${l.member} of ${path} (diffID ${l.diffID})`;
    const src = await reader.blob(i, l.diffID, { signal: opts.signal });
    if (compression === 'none') {
      layers.push(
        await layout.ingest({ digest: l.diffID, size: l.size, mediaType: MediaTypes.ociLayer }, src, { signal: opts.signal, onProgress: opts.onProgress }).catch((e: unknown) => {
          if (e instanceof DigestMismatchError) throw new DigestMismatchError(l.diffID, e.actual, what);
          throw e;
        }),
      );
      continue;
    }
    const mediaType = layerMediaType('oci', compression);
    // Verify the diffID before the compressed blob can be stored: the verifier fails the
    // stream at its end, so the ingest never completes on a mismatch.
    const checked = src.pipe(verifying({ digest: l.diffID, size: l.size, what }));
    src.on('error', (e) => checked.destroy(e));
    let stored: Descriptor | undefined;
    const r = await writeLayer(checked, compression, async (body) => {
      stored = await layout.ingest({ mediaType }, body, { signal: opts.signal, onProgress: opts.onProgress });
    }, { signal: opts.signal });
    if (!stored || stored.digest !== r.digest) throw new TsimageError(`internal error: stored layer ${stored?.digest} differs from ${r.digest}`);
    layers.push({ mediaType, digest: r.digest, size: r.size });
  }
  const config = await layout.putBytes(MediaTypes.ociConfig, img.config.bytes);
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers,
  };
  const m = await layout.putBytes(MediaTypes.ociManifest, toJsonBytes(manifest));
  const name = opts.tag === undefined ? img.repoTags[0] : opts.tag;
  if (name) await layout.tag(name, m);
  else await layout.addManifest(m);
  return m;
}

/**
 * Writes docker-archives (`docker save` format) as skopeo does: layers `<diffID hex>.tar`
 * (uncompressed), configs `<digest hex>.json`, legacy `<id>/{layer.tar -> ..,VERSION,json}`,
 * then manifest.json and repositories. Layers given as streams are decompressed (if
 * needed) into a temp dir, because a tar member needs its size up front; layers already
 * stored uncompressed are referenced in place. close() removes the temp dir.
 */
export class DockerArchiveWriter {
  private tmp: string | undefined;
  private readonly layers = new Map<Digest, { path: string; size: number }>();
  private readonly configs = new Map<Digest, Buffer>();
  private readonly images: { config: Digest; layers: Digest[]; repoTags: string[] }[] = [];

  constructor(private readonly opts: { tmpDir?: string | undefined } = {}) {}

  private async tmpDir(): Promise<string> {
    this.tmp ??= await fsp.mkdtemp(join(this.opts.tmpDir ?? tmpdir(), 'tsimage-darchive-'));
    return this.tmp;
  }

  hasLayer(diffID: Digest): boolean {
    return this.layers.has(diffID);
  }

  /**
   * Add a layer from a stream (compressed or not: decompressed automatically), verified
   * against `diffID` when given. Returns its diffID and uncompressed size.
   */
  async addLayer(diffID: Digest | undefined, body: Readable | AsyncIterable<Uint8Array>, io: Io = {}): Promise<{ diffID: Digest; size: number }> {
    if (diffID && this.layers.has(diffID)) {
      if (body instanceof Readable) body.destroy();
      return { diffID, size: this.layers.get(diffID)!.size };
    }
    const dir = await this.tmpDir();
    const tmp = join(dir, `.layer-${randomBytes(6).toString('hex')}`);
    const v = verifying({ digest: diffID, what: diffID ? `layer ${diffID}` : 'layer' });
    let ok = false;
    try {
      await pipeline(body, decompressStream('auto'), v, createWriteStream(tmp, { highWaterMark: 1024 * 1024 }), io.signal ? { signal: io.signal } : {});
      const { digest, size } = v.result!;
      const path = join(dir, `${digestHex(digest)}.tar`);
      await fsp.rename(tmp, path);
      ok = true;
      this.layers.set(digest, { path, size });
      return { diffID: digest, size };
    } finally {
      if (!ok) await fsp.rm(tmp, { force: true }).catch(() => {});
    }
  }

  /** Add an uncompressed layer file that already exists (not copied; read when writing). */
  addLayerFile(diffID: Digest, path: string, size: number): void {
    if (!this.layers.has(diffID)) this.layers.set(diffID, { path, size });
  }

  addConfig(bytes: Buffer): Digest {
    const d = digestOf(bytes);
    this.configs.set(d, bytes);
    return d;
  }

  /** Record an image: its config (added), its layers by diffID (added), and its names. */
  addImage(img: { config: Digest; layers: Digest[]; repoTags?: string[] | undefined }): void {
    if (!this.configs.has(img.config)) throw new TsimageError(`docker-archive writer: config ${img.config} was not added`);
    for (const l of img.layers) if (!this.layers.has(l)) throw new TsimageError(`docker-archive writer: layer ${l} was not added`);
    const repoTags = (img.repoTags ?? []).map(dockerRepoTag);
    const same = this.images.find((i) => i.config === img.config);
    if (same) {
      for (const t of repoTags) if (!same.repoTags.includes(t)) same.repoTags.push(t);
    } else this.images.push({ config: img.config, layers: [...img.layers], repoTags });
  }

  /** The archive's entries, in skopeo's order. */
  entries(): TarEntry[] {
    const out: TarEntry[] = [];
    const sentLayers = new Set<Digest>();
    const sentLegacy = new Set<string>();
    const repositories: Record<string, Record<string, string>> = {};
    const manifest: { Config: string; RepoTags: string[]; Layers: string[] }[] = [];
    const file = (name: string, body: Buffer): TarEntry => ({ header: { name, type: 'file', mode: 0o444, size: body.length, mtime: 0 }, body });
    for (const img of this.images) {
      for (const l of img.layers) {
        if (sentLayers.has(l)) continue;
        sentLayers.add(l);
        const { path, size } = this.layers.get(l)!;
        out.push({ header: { name: `${digestHex(l)}.tar`, type: 'file', mode: 0o444, size, mtime: 0 }, path });
      }
      const configBytes = this.configs.get(img.config)!;
      out.push(file(`${digestHex(img.config)}.json`, configBytes));
      // Legacy per-layer metadata, as containers/image's writeLegacyMetadataLocked.
      let config: Record<string, unknown>;
      try {
        config = JSON.parse(configBytes.toString('utf8')) as Record<string, unknown>;
      } catch (e) {
        throw new TsimageError(`config ${img.config} is not valid JSON: ${(e as Error).message}`);
      }
      let chainID: string | undefined;
      let last = '';
      for (const [i, l] of img.layers.entries()) {
        const lc: Record<string, unknown> = {};
        if (last) lc.parent = last;
        if (i === img.layers.length - 1) {
          for (const a of ['architecture', 'config', 'container', 'container_config', 'created', 'docker_version', 'os']) lc[a] = config[a] ?? null;
        }
        chainID = chainID === undefined ? l : digestOf(`${chainID} ${l}`);
        lc.layer_id = chainID;
        const id = digestHex(digestOf(goJson(lc)));
        delete lc.layer_id;
        lc.id = id;
        if (!sentLegacy.has(id)) {
          sentLegacy.add(id);
          out.push({ header: { name: `${id}/layer.tar`, type: 'symlink', mode: 0, linkname: `../${digestHex(l)}.tar`, mtime: 0 } });
          out.push(file(`${id}/VERSION`, Buffer.from('1.0')));
          out.push(file(`${id}/json`, Buffer.from(goJson(lc))));
        }
        last = id;
      }
      if (last) {
        for (const t of img.repoTags) {
          const colon = t.lastIndexOf(':');
          const name = t.slice(0, colon);
          (repositories[name] ??= {})[t.slice(colon + 1)] = last;
        }
      }
      manifest.push({ Config: `${digestHex(img.config)}.json`, RepoTags: img.repoTags, Layers: img.layers.map((l) => `${digestHex(l)}.tar`) });
    }
    out.push(file('manifest.json', Buffer.from(JSON.stringify(manifest))));
    out.push(file('repositories', Buffer.from(goJson(repositories, 2))));
    return out;
  }

  /** Write the archive to a path (atomically) or a stream. */
  async write(dest: string | Writable, io: Io = {}): Promise<void> {
    if (this.images.length === 0) throw new TsimageError('docker-archive writer: no image to write');
    const tar = packEntries(this.entries(), { signal: io.signal });
    if (io.onProgress) {
      const cb = io.onProgress;
      tar.on('data', (c: Buffer) => cb(c.length));
    }
    await writeTarTo(tar, dest, io.signal);
  }

  async close(): Promise<void> {
    if (this.tmp) await fsp.rm(this.tmp, { recursive: true, force: true });
    this.tmp = undefined;
  }
}

/** JSON as Go's encoding/json writes nested maps (`depth` levels of keys sorted), with <, >, & escaped. */
function goJson(v: unknown, depth = 1): string {
  const sortKeys = (x: unknown, d: number): unknown => {
    if (d <= 0 || x === null || typeof x !== 'object' || Array.isArray(x)) return x;
    return Object.fromEntries(Object.keys(x as object).sort().map((k) => [k, sortKeys((x as Record<string, unknown>)[k], d - 1)]));
  };
  return JSON.stringify(sortKeys(v, depth))
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

export interface ExportDockerArchiveOptions extends Io {
  /** For an index: the platform to pick (default: this machine's). */
  platform?: { os: string; architecture: string; variant?: string } | undefined;
}

/**
 * Write images of `layout` as a docker-archive. Each image: a name or digest in the
 * layout (an index resolves to the child for the platform) and the RepoTags to record.
 */
export async function exportDockerArchive(
  layout: OciLayout,
  dest: string | Writable,
  images: { ref?: string | undefined; repoTags?: string[] | undefined }[],
  opts: ExportDockerArchiveOptions = {},
): Promise<void> {
  const w = new DockerArchiveWriter();
  try {
    for (const img of images) {
      let desc = await layout.resolve(img.ref);
      if (isIndexType(desc.mediaType)) {
        const idx = parseManifest(await layout.readBytes(desc.digest), desc.mediaType);
        const want = opts.platform ?? hostPlatform();
        const child = idx.kind === 'index' ? selectPlatform(idx.doc.manifests, want) : undefined;
        if (!child) throw new TsimageError(`image ${img.ref ?? desc.digest} has no manifest for ${want.os}/${want.architecture}: a docker-archive holds single-platform images`);
        desc = child;
      }
      const p = parseManifest(await layout.readBytes(desc.digest), desc.mediaType);
      if (p.kind !== 'manifest') throw new TsimageError(`${desc.digest} is not an image manifest`);
      const configBytes = await layout.readBytes(p.doc.config.digest);
      const config = parseConfig(configBytes);
      const diffIDs = config.rootfs.diff_ids;
      if (diffIDs.length !== p.doc.layers.length)
        throw new ValidationError('rootfs.diff_ids', `config ${p.doc.config.digest} lists ${diffIDs.length} diff_ids for ${p.doc.layers.length} layers`);
      for (const [i, l] of p.doc.layers.entries()) {
        const diffID = diffIDs[i]!;
        if (w.hasLayer(diffID)) continue;
        if (layerCompression(l.mediaType) === 'none' && l.digest === diffID) {
          const st = await layout.stat(l.digest);
          if (!st) throw new OciError('BLOB_UNKNOWN', `layer ${l.digest} is not in ${layout.dir}`);
          w.addLayerFile(diffID, layout.blobPath(l.digest), st.size);
        } else {
          await w.addLayer(diffID, await layout.open(l.digest, { signal: opts.signal }), opts);
        }
      }
      w.addConfig(configBytes);
      w.addImage({ config: p.doc.config.digest, layers: diffIDs, repoTags: img.repoTags });
    }
    await w.write(dest, opts);
  } finally {
    await w.close();
  }
}
