/**
 * COPY and ADD, as Docker (BuildKit's dockerfile2llb + fsutil copy) and buildah do them, in two
 * phases so the cache key is known before anything is written:
 *
 * planCopy: sources are matched relative to the context (honouring .dockerignore) or to another
 *   stage's/image's rootfs (`--from`). A source path is cleaned and may not climb out of its
 *   root; symlinks on the way (and a symlink named as the source itself) are followed inside the
 *   root only. Wildcards are Go filepath.Match patterns per path component (`*`, `?`, `[...]`,
 *   `\` escapes; `**` acts as `*`, as in Docker). A directory source stands for its contents.
 *   `--exclude` patterns (dockerignore syntax) are matched against paths relative to each source.
 *   ADD: http(s) URLs are downloaded (sha256 verified while streaming with `--checksum`), mode
 *   0600 and the Last-Modified time as docker does; local tar archives (plain, gzip, zstd, bzip2,
 *   xz) are recognised by content and marked for extraction. Every file is hashed (xxh3, through
 *   the context's stat cache) into `plan.inputs`, the COPY part of the cache key.
 *
 * applyCopy: the destination (relative to WORKDIR when not absolute) is resolved inside the
 *   target rootfs (symlinks followed inside it only: a merged-/usr `/lib -> usr/lib` works, a
 *   link to `/../../etc` stays in the root, `..` never climbs out). A destination ending in `/`
 *   (or an existing directory) receives files by their names; several sources need such a
 *   destination. Files keep mode and mtime; owners are 0:0 from the context and kept from a
 *   `--from` rootfs, unless `--chown` (names from the target image's /etc/passwd and /etc/group;
 *   a user alone sets the group to the same number, as docker does). `--chmod` takes octal or
 *   symbolic modes. Symlinks inside directory sources are copied as symlinks; hardlinks within
 *   one COPY stay hardlinks. Local archives are extracted with src/oci's safe extractor.
 */
import { createHash } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  constants as FS,
  copyFileSync,
  createReadStream,
  createWriteStream,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
  type Stats,
} from 'node:fs';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as zlib from 'node:zlib';
import { decompressStream, extractLayer, getXattr, listXattrs, RootResolver, setXattr, TarSecurityError, TsimageError, type Compression } from '../oci/index.js';
import { resolveUser } from '../ns/index.js';
import { BuildContext, cleanPosix, goPatternRegExp, hashFileContent, hasWildcard, IgnoreMatcher, parseIgnoreText, readHead, writeFileAtomic, xxh3Hex } from './context.js';
import type { Heredoc } from './parser.js';

export interface CopyRequest {
  kind: 'COPY' | 'ADD';
  /** sources after variable expansion (heredoc sources as `<<NAME`) */
  srcs: string[];
  /** destination after variable expansion */
  dest: string;
  /** heredocs of the instruction, content already expanded when it should be */
  heredocs?: Heredoc[] | undefined;
  chown?: string | undefined;
  chmod?: string | undefined;
  link?: boolean | undefined;
  parents?: boolean | undefined;
  exclude?: string[] | undefined;
  checksum?: string | undefined;
  unpack?: boolean | undefined;
  keepGitDir?: boolean | undefined;
  /** where the instruction is (errors name it) */
  loc?: { file: string; line: number } | undefined;
}

export type CopySourceRoot = { context: BuildContext } | { rootfs: string; name: string };

export interface CopyIo {
  signal?: AbortSignal | undefined;
  /** Directory for ADD downloads (default: the OS temp dir). */
  tmpDir?: string | undefined;
  /**
   * Keep ADD downloads here (e.g. `<root>/cache/urls`): a URL is asked again with If-None-Match /
   * If-Modified-Since and a 304 reuses the kept file; a --checksum URL already kept is not asked at all.
   */
  urlCacheDir?: string | undefined;
  /** mtime of heredoc files (default 0, i.e. reproducible; pass SOURCE_DATE_EPOCH seconds). */
  timestamp?: number | undefined;
}

/** One file, dir or link the COPY reads: the COPY part of a cache key. */
export interface FileInput {
  /** path as the user sees it: context-relative, `<stage>:/path` for --from, the URL, or `<<NAME` */
  path: string;
  /** f(ile) d(ir) l(ink) h(ardlink) p(ipe) c/b (device) t(ar to extract) */
  type: string;
  mode: number;
  /** content hash (files), link target (symlinks), checksum (URLs) */
  hash?: string;
  /** uid:gid (sources from a rootfs keep their owners) */
  owner?: string;
  /** hash of the xattrs that are copied (absent when there are none) */
  xattrs?: string;
}

export interface CopyInputs {
  files: FileInput[];
}

type Entry = {
  /** relative to the item root ('' = the item itself) */
  rel: string;
  abs: string;
  st: Stats;
  hash?: string;
  link?: string;
};

type Item =
  | { kind: 'path'; spec: string; srcRel: string; name: string; keep: string; isDir: boolean; entries: Entry[]; archive?: Compression | 'bzip2' | 'xz' }
  | { kind: 'heredoc'; spec: string; name: string; content: string }
  | { kind: 'url'; spec: string; name: string; hash: string; fetch: () => Promise<{ file: string; mtime: number; name: string }> };

export interface CopyPlan {
  readonly req: CopyRequest;
  readonly inputs: CopyInputs;
  readonly items: readonly Item[];
  /** owners kept from the source (a --from rootfs) */
  readonly keepOwners: boolean;
  /** remove temp downloads */
  dispose(): Promise<void>;
}

export interface CopyTarget {
  /** the rootfs to write into (the step's merged dir, or an empty dir for --link) */
  rootfs: string;
  /** WORKDIR of the step (absolute in the image) */
  workdir: string;
  /** rootfs whose /etc/passwd and /etc/group resolve --chown names (default: rootfs) */
  userRoot?: string | undefined;
}

export interface CopyStats {
  files: number;
  dirs: number;
  links: number;
  bytes: number;
}

/** A COPY/ADD problem; the message starts with file:line when known. */
export class CopyError extends TsimageError {}

function where(req: CopyRequest): string {
  return req.loc ? `${req.loc.file}:${req.loc.line}: ` : '';
}

function fail(req: CopyRequest, msg: string, cause?: unknown): never {
  throw new CopyError(`${where(req)}${req.kind} ${msg}`, cause === undefined ? undefined : { cause });
}

const isUrl = (s: string) => /^https?:\/\//i.test(s);
/** A git source as BuildKit recognises one: git@host:..., git:// or ssh:// URLs, an http(s) URL ending in .git (optionally #ref). */
const isGit = (s: string) => /^(git@|git:\/\/|ssh:\/\/)/.test(s) || /^https?:\/\/[^#]+\.git(#.*)?$/.test(s);

// ---------------------------------------------------------------------------------------------
// Resolution inside a root (symlinks followed in scope; `..` clamps at the root, as chroot does)

function lstatOrSync(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw e;
  }
}

async function lstatOr(p: string): Promise<Stats | undefined> {
  try {
    return await fsp.lstat(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw e;
  }
}

const copiedXattr = (n: string) => !n.startsWith('trusted.overlay.') && n !== 'security.selinux';

/** xxh3 over the xattrs COPY carries (undefined when none): part of the cache key. */
function xattrsKey(path: string): string | undefined {
  let names: string[];
  try {
    names = listXattrs(path).filter(copiedXattr).sort();
  } catch {
    return undefined;
  }
  if (!names.length) return undefined;
  const parts: Buffer[] = [];
  for (const n of names) parts.push(Buffer.from(n + '\0'), getXattr(path, n) ?? Buffer.alloc(0), Buffer.from('\0'));
  return xxh3Hex(Buffer.concat(parts));
}

/**
 * Copy a file's or directory's xattrs (BuildKit copies them: file capabilities, user.*), never
 * overlayfs' own (trusted.overlay.*) or SELinux labels; ones the target filesystem refuses are skipped.
 */
function copyXattrsSafe(src: string, dst: string): void {
  let names: string[];
  try {
    names = listXattrs(src);
  } catch {
    return;
  }
  for (const n of names) {
    if (!copiedXattr(n)) continue;
    const v = getXattr(src, n);
    if (v === undefined) continue;
    try {
      setXattr(dst, n, v);
    } catch {
      // not representable on the target (no user xattrs, unprivileged trusted.*): skipped, as tar and cp -a do
    }
  }
}

/** Resolve root-relative components following symlinks inside `root`; returns the real root-relative path, or undefined when missing. */
async function resolveIn(root: string, parts: string[], followLast: boolean): Promise<{ rel: string; st: Stats } | undefined> {
  const todo = [...parts];
  const done: string[] = [];
  let hops = 0;
  let st: Stats | undefined = await fsp.lstat(root);
  while (todo.length) {
    const c = todo.shift()!;
    if (c === '' || c === '.') continue;
    if (c === '..') {
      done.pop();
      st = await lstatOr(join(root, ...done));
      continue;
    }
    const p = join(root, ...done, c);
    st = await lstatOr(p);
    if (!st) return undefined;
    if (st.isSymbolicLink() && (todo.length > 0 || followLast)) {
      if (++hops > 40) throw new TsimageError(`too many levels of symbolic links at ${[...done, c].join('/')}`);
      const t = await fsp.readlink(p);
      if (t.startsWith('/')) done.length = 0;
      todo.unshift(...t.split('/'));
      if (todo.every((x) => x === '' || x === '.')) st = await lstatOr(join(root, ...done));
      continue;
    }
    if (todo.length && !st.isDirectory()) return undefined;
    done.push(c);
  }
  if (!st) return undefined;
  return { rel: done.join('/'), st };
}

// ---------------------------------------------------------------------------------------------
// Planning

interface SrcRoot {
  root: string;
  /** label for messages */
  label: string;
  ctx?: BuildContext;
}

async function walkItem(src: SrcRoot, itemRel: string, exclude: IgnoreMatcher | undefined, req: CopyRequest, signal?: AbortSignal): Promise<Entry[]> {
  // sync calls: a walk is thousands of tiny syscalls, each async one would be a thread-pool round trip
  const out: Entry[] = [];
  const rec = (relInItem: string, abs: string, ctxRel: string): void => {
    signal?.throwIfAborted();
    let names: string[];
    try {
      names = readdirSync(abs);
    } catch (e) {
      fail(req, `${src.label}${ctxRel || '.'}: cannot read directory: ${(e as Error).message}`, e);
    }
    names.sort();
    for (const n of names) {
      const r = relInItem ? `${relInItem}/${n}` : n;
      const cr = ctxRel ? `${ctxRel}/${n}` : n;
      const a = join(abs, n);
      const st = lstatSync(a);
      if (st.isSocket()) continue; // sockets are not copied (as tar and docker)
      const ign = (src.ctx?.isIgnored(cr) ?? false) || (exclude?.ignores(r) ?? false);
      if (ign) {
        if (st.isDirectory() && ((src.ctx?.ignore.mayIncludeBelow(cr) ?? false) || (exclude?.mayIncludeBelow(r) ?? false))) {
          const before = out.length;
          out.push({ rel: r, abs: a, st });
          rec(r, a, cr);
          if (out.length === before + 1) out.pop();
        }
        continue;
      }
      out.push({ rel: r, abs: a, st });
      if (st.isDirectory()) rec(r, a, cr);
    }
  };
  rec('', join(src.root, itemRel), itemRel);
  return out;
}

/** Match a (cleaned, root-relative) pattern against the tree; returns the matched unresolved root-relative paths. */
async function matchPattern(src: SrcRoot, parts: string[]): Promise<string[]> {
  let cands: string[] = [''];
  for (let i = 0; i < parts.length; i++) {
    const c = parts[i]!;
    const next: string[] = [];
    for (const base of cands) {
      if (!hasWildcard(c)) {
        next.push(base ? `${base}/${c}` : c);
        continue;
      }
      const dir = await resolveIn(src.root, base ? base.split('/') : [], true);
      if (!dir || !dir.st.isDirectory()) continue;
      const re = goPatternRegExp(c);
      const names = (await fsp.readdir(join(src.root, dir.rel))).sort();
      for (const n of names) {
        if (!re.test(n)) continue;
        const r = base ? `${base}/${n}` : n;
        if (src.ctx?.isIgnored(r)) continue;
        next.push(r);
      }
    }
    cands = next;
  }
  return cands;
}

function detectArchive(head: Buffer): Compression | 'bzip2' | 'xz' | undefined {
  if (head.length >= 3 && head[0] === 0x42 && head[1] === 0x5a && head[2] === 0x68) return 'bzip2';
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return 'zstd';
  if (isTarHeader(head)) return 'none';
  return undefined;
}

function isTarHeader(b: Buffer): boolean {
  if (b.length < 512) return false;
  const magic = b.subarray(257, 263).toString('latin1');
  if (magic === 'ustar\0' || magic === 'ustar ') return true;
  // V7 tar: verify the header checksum
  const stored = parseInt(b.subarray(148, 156).toString('latin1').replace(/\0.*$/, '').trim(), 8);
  if (!Number.isFinite(stored)) return false;
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : b[i]!;
  return sum === stored && b[0] !== 0;
}

/** Decompress the first bytes of a compressed file to see whether it is a tar. */
async function compressedIsTar(path: string, c: Compression | 'bzip2' | 'xz'): Promise<boolean> {
  if (c === 'none') return true;
  const head = await new Promise<Buffer>((resolve) => {
    const chunks: Buffer[] = [];
    let n = 0;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      resolve(Buffer.concat(chunks));
    };
    const dec = externalOrBuiltinDecompressor(c);
    const rs = createReadStream(path);
    rs.on('error', finish);
    dec.on('error', finish);
    dec.on('data', (d: Buffer) => {
      chunks.push(d);
      n += d.length;
      if (n >= 512) {
        finish();
        rs.destroy();
        dec.destroy();
      }
    });
    dec.on('end', finish);
    dec.on('close', finish);
    rs.pipe(dec);
  });
  return isTarHeader(head);
}

function externalOrBuiltinDecompressor(c: Compression | 'bzip2' | 'xz'): Duplex {
  if (c === 'gzip') return zlib.createGunzip();
  if (c === 'zstd' || c === 'none') return decompressStream(c);
  // bzip2 and xz: the system tools (no well-kept pure JS decoder is worth a dependency here)
  const tool = c === 'bzip2' ? 'bzip2' : 'xz';
  const child = spawn(tool, ['-dc'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const d = Duplex.from({ writable: child.stdin, readable: child.stdout });
  child.on('error', (e) => d.destroy(new TsimageError(`${tool} is needed to unpack a ${c} archive: ${e.message}`)));
  child.on('close', (code) => {
    if (code) d.destroy(new TsimageError(`${tool} -dc failed: ${err.trim() || `exit code ${code}`}`));
  });
  d.on('close', () => child.kill());
  return d;
}


/** Parse `--checksum`: `sha256:<hex>` (also sha384/sha512, as BuildKit). */
function parseChecksum(req: CopyRequest, s: string): { alg: string; hex: string } {
  const m = /^(sha256|sha384|sha512):([a-f0-9]+)$/.exec(s.trim());
  const len: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };
  if (!m || m[2]!.length !== len[m[1]!]) fail(req, `--checksum=${s}: invalid checksum (want sha256:<64 hex digits>)`);
  return { alg: m![1]!, hex: m![2]! };
}

function urlFileName(u: string): string {
  try {
    const p = new URL(u).pathname;
    const b = p.split('/').filter(Boolean).pop();
    return b ? decodeURIComponent(b) : '';
  } catch {
    return '';
  }
}

type Downloaded = { file: string; mtime: number; hash: string; name: string; etag?: string | undefined; lastModified?: string | undefined };

async function download(req: CopyRequest, url: string, io: CopyIo, cond?: { etag?: string | undefined; lastModified?: string | undefined }): Promise<Downloaded | 'not-modified'> {
  const dir = await fsp.mkdtemp(join(io.tmpDir ?? tmpdir(), 'tsimage-add-'));
  const file = join(dir, 'data');
  const want = req.checksum ? parseChecksum(req, req.checksum) : undefined;
  try {
    let res: Response;
    const headers: Record<string, string> = {};
    if (cond?.etag) headers['if-none-match'] = cond.etag;
    if (cond?.lastModified) headers['if-modified-since'] = cond.lastModified;
    try {
      res = await fetch(url, { signal: io.signal, redirect: 'follow', headers });
    } catch (e) {
      fail(req, `${url}: ${(e as Error).cause ? String(((e as Error).cause as Error).message ?? (e as Error).cause) : (e as Error).message}`, e);
    }
    if (res.status === 304 && cond) {
      await res.body?.cancel().catch(() => {});
      await fsp.rm(dir, { recursive: true, force: true });
      return 'not-modified';
    }
    if (!res.ok || !res.body) {
      await res.body?.cancel().catch(() => {});
      fail(req, `${url}: HTTP ${res.status} ${res.statusText}`);
    }
    const h = createHash(want?.alg ?? 'sha256');
    const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
    await pipeline(
      body,
      async function* (src: AsyncIterable<Buffer>) {
        for await (const c of src) {
          h.update(c);
          yield c;
        }
      },
      createWriteStream(file, { mode: 0o600 }),
      { signal: io.signal },
    );
    const got = h.digest('hex');
    if (want && got !== want.hex) fail(req, `${url}: checksum mismatch: expected ${want.alg}:${want.hex}, got ${want.alg}:${got}`);
    const lm = res.headers.get('last-modified');
    const t = lm ? Date.parse(lm) : NaN;
    let name = urlFileName(url);
    const cd = res.headers.get('content-disposition');
    const cdm = cd ? /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd) : null;
    if (cdm && !name) name = decodeURIComponent(cdm[1]!).split('/').pop()!;
    return {
      file,
      mtime: Number.isFinite(t) ? Math.floor(t / 1000) : 0,
      hash: `${want?.alg ?? 'sha256'}:${got}`,
      name,
      etag: res.headers.get('etag') ?? undefined,
      lastModified: lm ?? undefined,
    };
  } catch (e) {
    await fsp.rm(dir, { recursive: true, force: true });
    throw e;
  }
}

/**
 * An ADD URL, through the URL cache when there is one (see CopyIo.urlCacheDir). `temp` is the
 * directory to remove after the copy (downloads that are not kept).
 */
async function fetchUrl(req: CopyRequest, url: string, io: CopyIo): Promise<Downloaded & { temp?: string }> {
  if (!io.urlCacheDir) {
    const d = (await download(req, url, io)) as Downloaded;
    return { ...d, temp: join(d.file, '..') };
  }
  const dir = join(io.urlCacheDir, createHash('sha256').update(url).digest('hex'));
  const metaFile = join(dir, 'meta.json');
  type Meta = { url: string; data: string; hash: string; mtime: number; name: string; etag?: string; lastModified?: string };
  let meta: Meta | undefined;
  try {
    const m = JSON.parse(await fsp.readFile(metaFile, 'utf8')) as Meta;
    await fsp.access(join(dir, m.data));
    if (m.url === url) meta = m;
  } catch {}
  const kept = (m: Meta): Downloaded => ({ file: join(dir, m.data), mtime: m.mtime, hash: m.hash, name: m.name });
  if (meta && req.checksum) {
    const c = parseChecksum(req, req.checksum);
    if (meta.hash === `${c.alg}:${c.hex}`) return kept(meta); // content-addressed: nothing to ask
  }
  const d = await download(req, url, io, meta && !req.checksum ? { etag: meta.etag, lastModified: meta.lastModified } : undefined);
  if (d === 'not-modified') return kept(meta!);
  if (!d.etag && !d.lastModified && !req.checksum) return { ...d, temp: join(d.file, '..') };
  await fsp.mkdir(dir, { recursive: true });
  const data = `data-${d.hash.replace(':', '-')}`;
  await fsp.rename(d.file, join(dir, data));
  await fsp.rm(join(d.file, '..'), { recursive: true, force: true });
  const m: Meta = { url, data, hash: d.hash, mtime: d.mtime, name: d.name };
  if (d.etag) m.etag = d.etag;
  if (d.lastModified) m.lastModified = d.lastModified;
  await writeFileAtomic(metaFile, JSON.stringify(m));
  return kept(m);
}

/**
 * Phase 1: find and hash the sources (and download ADD URLs). Nothing is written to any rootfs.
 */
export async function planCopy(req: CopyRequest, from: CopySourceRoot, io: CopyIo = {}): Promise<CopyPlan> {
  const src: SrcRoot = 'context' in from ? { root: from.context.dir, label: '', ctx: from.context } : { root: from.rootfs, label: `${from.name}:/` };
  const items: Item[] = [];
  const temps: string[] = [];
  const dispose = async () => {
    for (const t of temps) await fsp.rm(t, { recursive: true, force: true });
  };
  const exclude = req.exclude?.length ? new IgnoreMatcher(parseIgnoreText(req.exclude.join('\n'))) : undefined;
  const heredocs = new Map((req.heredocs ?? []).map((h) => [h.name, h]));
  try {
    if (req.chmod !== undefined) parseChmod(req, req.chmod); // validate early
    for (const spec of req.srcs) {
      io.signal?.throwIfAborted();
      const hd = /^<<-?(["']?)(.+)\1$/.exec(spec);
      if (hd && heredocs.has(hd[2]!)) {
        const h = heredocs.get(hd[2]!)!;
        items.push({ kind: 'heredoc', spec, name: h.name, content: h.content });
        continue;
      }
      if (req.kind === 'ADD' && isGit(spec)) fail(req, `${spec}: git sources are not supported by tsbuild (clone in a RUN step)`);
      if (isUrl(spec)) {
        if (req.kind === 'COPY') fail(req, `${spec}: source can't be a URL for COPY`);
        if (!('context' in from)) fail(req, `${spec}: a URL source can't be used with --from`);
        let got: Promise<Downloaded> | undefined;
        const fetchIt = () =>
          (got ??= fetchUrl(req, spec, io).then((d) => {
            if (d.temp) temps.push(d.temp);
            return d;
          }));
        if (req.checksum) {
          // the checksum is the content's identity: the cache key needs no download (a hit never fetches)
          const c = parseChecksum(req, req.checksum);
          items.push({ kind: 'url', spec, name: urlFileName(spec), hash: `${c.alg}:${c.hex}`, fetch: fetchIt });
        } else {
          const d = await fetchIt();
          items.push({ kind: 'url', spec, name: d.name, hash: d.hash, fetch: fetchIt });
        }
        continue;
      }
      // --parents: `a/./b/c` keeps `b/c` under the destination
      let keepFrom = -1;
      const raw = spec.replace(/^\/+/, '');
      const rawParts = raw.split('/');
      if (req.parents) {
        const dot = rawParts.lastIndexOf('.', rawParts.length - 2);
        if (dot > 0) keepFrom = cleanPosix(rawParts.slice(0, dot).join('/')).split('/').filter(Boolean).length;
      }
      const cleaned = cleanPosix(raw);
      if (cleaned === '..' || cleaned.startsWith('../'))
        fail(req, `${spec}: the path is outside the ${'context' in from ? 'build context' : `root of ${from.name}`}`);
      const parts = cleaned ? cleaned.split('/') : [];
      const wild = parts.some(hasWildcard);
      const matches = wild ? await matchPattern(src, parts) : [cleaned];
      if (wild && matches.length === 0)
        fail(req, `${spec}: no source files were specified (the pattern matches nothing${src.ctx && !src.ctx.ignore.empty ? ' not excluded by .dockerignore' : ''})`);
      let matchedAny = false;
      for (const m of matches) {
        if (src.ctx && m && src.ctx.isIgnored(m)) {
          if (wild) continue;
          fail(req, `${spec}: excluded by ${src.ctx.ignoreFile ? src.ctx.ignoreFile.slice(src.ctx.dir.length + 1) || '.dockerignore' : '.dockerignore'} (not in the build context)`);
        }
        const r = await resolveIn(src.root, m ? m.split('/') : [], true);
        if (!r)
          fail(req, `${spec}: no such file or directory ${'context' in from ? 'in the build context' : `in ${from.name}`}${m !== spec ? ` (looked for ${m || '.'})` : ''}`);
        if (src.ctx && r.rel && r.rel !== m && src.ctx.isIgnored(r.rel))
          fail(req, `${spec}: the symlink's target ${r.rel} is excluded by .dockerignore`);
        if (exclude && m && exclude.ignores(m.split('/').pop()!)) continue;
        matchedAny = true;
        const mParts = m ? m.split('/') : [];
        const name = mParts[mParts.length - 1] ?? '';
        const keep = req.parents ? (keepFrom >= 0 ? mParts.slice(keepFrom) : mParts).join('/') : '';
        if (r.st.isDirectory()) {
          const entries = await walkItem(src, r.rel, exclude, req, io.signal);
          items.push({ kind: 'path', spec, srcRel: r.rel, name, keep, isDir: true, entries: [{ rel: '', abs: join(src.root, r.rel), st: r.st }, ...entries] });
        } else {
          const abs = join(src.root, r.rel);
          const it: Item = { kind: 'path', spec, srcRel: r.rel, name, keep, isDir: false, entries: [{ rel: '', abs, st: r.st }] };
          if (req.kind === 'ADD' && r.st.isFile() && req.unpack !== false) {
            const a = detectArchive(readHead(abs, 512));
            if (a !== undefined && (await compressedIsTar(abs, a))) it.archive = a;
          }
          items.push(it);
        }
      }
      if (!matchedAny && !wild) fail(req, `${spec}: every source file is excluded by --exclude`);
    }
    // hash everything (the cache key input)
    const files: FileInput[] = [];
    const keepOwners = !('context' in from);
    const hashOf = async (e: Entry, label: string): Promise<string> =>
      src.ctx ? src.ctx.hashFile(label, e.abs) : hashPlain(e.abs, e.st.size);
    for (const it of items) {
      if (it.kind === 'heredoc') files.push({ path: `<<${it.name}`, type: 'f', mode: 0o644, hash: xxh3Hex(it.content) });
      else if (it.kind === 'url') files.push({ path: it.spec, type: 'f', mode: 0o600, hash: it.hash });
      else {
        const base = it.srcRel;
        await parallel(it.entries, 16, async (e) => {
          const p = e.rel ? (base ? `${base}/${e.rel}` : e.rel) : base || '.';
          if (e.st.isFile()) e.hash = await hashOf(e, p);
          else if (e.st.isSymbolicLink()) e.link = readlinkSync(e.abs);
        });
        for (const e of it.entries) {
          const p = e.rel ? (base ? `${base}/${e.rel}` : e.rel) : base || '.';
          const fi: FileInput = { path: keepOwners ? `${src.label}${p}` : p, type: typeChar(e.st), mode: e.st.mode & 0o7777 };
          if (e.rel === '' && it.archive) fi.type = 't';
          const h = e.hash ?? e.link ?? (e.st.isCharacterDevice() || e.st.isBlockDevice() ? `${e.st.rdev}` : undefined);
          if (h !== undefined) fi.hash = h;
          if (keepOwners) fi.owner = `${e.st.uid}:${e.st.gid}`;
          if (e.st.isFile() || e.st.isDirectory()) {
            const x = xattrsKey(e.abs);
            if (x) fi.xattrs = x;
          }
          files.push(fi);
        }
      }
    }
    return { req, inputs: { files }, items, keepOwners, dispose };
  } catch (e) {
    await dispose();
    throw e;
  }
}

function hashPlain(abs: string, size: number): Promise<string> {
  return hashFileContent(abs, size);
}

async function parallel<T>(xs: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let i = 0;
  const worker = async () => {
    while (i < xs.length) await fn(xs[i++]!);
  };
  await Promise.all(Array.from({ length: Math.min(n, xs.length) }, worker));
}

function typeChar(st: Stats): string {
  if (st.isFile()) return 'f';
  if (st.isDirectory()) return 'd';
  if (st.isSymbolicLink()) return 'l';
  if (st.isFIFO()) return 'p';
  if (st.isCharacterDevice()) return 'c';
  if (st.isBlockDevice()) return 'b';
  return 's';
}

// ---------------------------------------------------------------------------------------------
// chmod / chown

type ModeFn = (mode: number, isDir: boolean) => number;

/** `--chmod`: octal (`755`, `0644`) or symbolic (`u+x,g-w,o=r`, `+x`, `a=rX`). */
export function parseChmod(req: CopyRequest, s: string): ModeFn {
  if (/^[0-7]{3,4}$/.test(s)) {
    const m = parseInt(s, 8);
    return () => m;
  }
  const clauses = s.split(',');
  const ops: { who: number; op: string; perm: string }[] = [];
  for (const c of clauses) {
    const m = /^([ugoa]*)([-+=])([rwxXst]*)$/.exec(c);
    if (!m) fail(req, `--chmod=${s}: invalid mode (want octal like 0755 or symbolic like u+x,g-w)`);
    let who = 0;
    for (const w of m![1]!) who |= w === 'u' ? 0o4700 : w === 'g' ? 0o2070 : w === 'o' ? 0o1007 : 0o7777;
    if (!m![1]) who = 0o7777;
    ops.push({ who, op: m![2]!, perm: m![3]! });
  }
  return (mode, isDir) => {
    let cur = mode & 0o7777;
    for (const o of ops) {
      let bits = 0;
      for (const p of o.perm) {
        if (p === 'r') bits |= 0o444;
        else if (p === 'w') bits |= 0o222;
        else if (p === 'x') bits |= 0o111;
        else if (p === 'X') bits |= isDir || cur & 0o111 ? 0o111 : 0;
        else if (p === 's') bits |= 0o6000;
        else if (p === 't') bits |= 0o1000;
      }
      bits &= o.who;
      if (o.op === '+') cur |= bits;
      else if (o.op === '-') cur &= ~bits;
      else cur = (cur & ~(o.who & 0o777)) | bits;
    }
    return cur;
  };
}

/**
 * `--chown=user[:group]` against the target image's /etc/passwd and /etc/group, as buildah and
 * BuildKit: a user name alone takes the user's primary group, a numeric uid alone uses the same
 * number as the gid, `:group` alone is root with that group.
 */
export async function resolveChown(req: CopyRequest, root: string, spec: string): Promise<{ uid: number; gid: number }> {
  const [u0 = '', g] = spec.split(':', 2) as [string, string | undefined];
  const u = u0 || '0';
  try {
    const r = await resolveUser(root, g !== undefined && g !== '' ? `${u}:${g}` : u);
    const numeric = /^\d+$/.test(u);
    return { uid: r.uid, gid: g !== undefined && g !== '' ? r.gid : numeric ? r.uid : r.gid };
  } catch (e) {
    fail(req, `--chown=${spec}: ${(e as Error).message}`, e);
  }
}

// ---------------------------------------------------------------------------------------------
// Applying

function destIsDirSyntax(dest: string): boolean {
  return dest.endsWith('/') || dest === '.' || dest.endsWith('/.') || dest === '';
}

/**
 * Phase 2: write the planned sources into `target.rootfs`.
 */
export async function applyCopy(plan: CopyPlan, target: CopyTarget, io: CopyIo = {}): Promise<CopyStats> {
  const req = plan.req;
  const stats: CopyStats = { files: 0, dirs: 0, links: 0, bytes: 0 };
  const rootReal = await fsp.realpath(target.rootfs);
  const R = new RootResolver(rootReal);
  R.noteDir('');
  const owner = req.chown ? await resolveChown(req, target.userRoot ?? target.rootfs, req.chown) : undefined;
  const chmod = req.chmod !== undefined ? parseChmod(req, req.chmod) : undefined;

  // destination
  let dest = req.dest;
  if (!dest.startsWith('/')) dest = (target.workdir.endsWith('/') ? target.workdir : target.workdir + '/') + dest;
  const dirSyntax = destIsDirSyntax(req.dest) || (req.dest === '' ? true : false);
  // `..` above / stays at / (as a path in the container would)
  const destParts = cleanPosix(dest).split('/').filter((c) => c && c !== '..');
  const nItems = plan.items.length;
  if (req.srcs.length > 1 && !dirSyntax) {
    const existing = await resolveDir(R, destParts, req);
    if (!existing) fail(req, `${req.srcs.length} sources need a directory destination ending in "/" (got ${JSON.stringify(req.dest)})`);
  }
  const destReal = destParts.length ? (dirSyntax ? dirChain(R, destParts, req) : safeResolveSync(R, destParts, req)) : [];
  const destSt = await lstatOr(R.abs(destReal.join('/')));
  const destIsDir = dirSyntax || (destSt?.isDirectory() ?? false) || (nItems > 1 && plan.items.some((i) => i.kind !== 'path' || !i.isDir));

  const hardlinks = new Map<string, string>(); // dev:ino -> written root-relative path
  const dirMeta: { rel: string; mode: number; atime: number; mtime: number; uid: number; gid: number; xattrsFrom?: string | undefined }[] = [];
  const ownerOf = (st: { uid: number; gid: number } | undefined) =>
    owner ?? (plan.keepOwners && st ? { uid: st.uid, gid: st.gid } : { uid: 0, gid: 0 });
  const modeOf = (m: number, isDir: boolean) => (chmod ? chmod(m & 0o7777, isDir) : m & 0o7777);
  /** mkdir -p of a resolved chain; directories it creates are 0755 and owned by --chown's user (as buildah and BuildKit). */
  const known = new Set<string>(['']);
  const ensureDirs = (parts: string[]): void => {
    if (known.has(parts.join('/'))) return;
    for (let i = 1; i <= parts.length; i++) {
      const rel = parts.slice(0, i).join('/');
      if (known.has(rel)) continue;
      known.add(rel);
      if (lstatOrSync(R.abs(rel))) continue;
      mkdirSync(R.abs(rel), { mode: 0o755 });
      chmodSync(R.abs(rel), 0o755);
      if (owner) lchownSync(R.abs(rel), owner.uid, owner.gid);
      R.noteDir(rel);
    }
  };

  /** Create/overwrite one entry at root-relative `parts` (parent chain resolved in the root). */
  // Small files go through sync calls (no thread-pool hop per syscall: 5,000 files copy several times
  // faster); big files are copied asynchronously (copy_file_range/reflink) so the event loop stays free.
  const fresh = new Set<string>(); // dirs this copy created: their entries need no lstat
  const put = async (parts: string[], kind: 'file' | 'dir' | 'symlink' | 'special', src: { abs?: string; st?: Stats; content?: string | Buffer; link?: string; mtime?: number; mode?: number; file?: string }): Promise<void> => {
    io.signal?.throwIfAborted();
    const parent = parts.length > 1 ? dirChain(R, parts.slice(0, -1), req) : [];
    if (!fresh.has(parent.join('/'))) ensureDirs(parent);
    const base = parts[parts.length - 1]!;
    const parentRel = parent.join('/');
    const rel = parent.length ? `${parentRel}/${base}` : base;
    const abs = R.abs(rel);
    const existing = fresh.has(parentRel) ? undefined : lstatOrSync(abs);
    const o = ownerOf(src.st);
    const mtime = src.st ? src.st.mtime : new Date((src.mtime ?? 0) * 1000);
    if (kind === 'dir') {
      if (existing && !existing.isDirectory()) {
        if (existing.isSymbolicLink()) {
          // a symlink to a directory inside the root is followed (merged /usr)
          const r = await resolveIn(rootReal, rel.split('/'), true);
          if (r?.st.isDirectory()) return;
        }
        fail(req, `cannot copy directory to ${'/' + rel}: a ${existing.isSymbolicLink() ? 'symlink' : 'file'} is in the way`);
      }
      if (!existing) {
        mkdirSync(abs, { mode: 0o700 });
        fresh.add(rel);
        stats.dirs++;
      }
      R.noteDir(rel);
      dirMeta.push({ rel, mode: src.st ? modeOf(src.st.mode, true) : (src.mode ?? 0o755), atime: mtime.getTime() / 1000, mtime: mtime.getTime() / 1000, ...o, xattrsFrom: src.abs });
      return;
    }
    if (existing) {
      if (existing.isDirectory()) fail(req, `cannot overwrite directory ${'/' + rel} with a non-directory`);
      unlinkSync(abs);
    }
    if (kind === 'symlink') {
      symlinkSync(src.link!, abs);
      lchownSync(abs, o.uid, o.gid);
      lutimesSync(abs, mtime, mtime);
      stats.links++;
      return;
    }
    if (kind === 'special') {
      const st = src.st!;
      const t = st.isFIFO() ? 'p' : st.isCharacterDevice() ? 'c' : 'b';
      const args = ['-m', (st.mode & 0o7777).toString(8), abs, t];
      if (t !== 'p') args.push(String(Math.floor(st.rdev / 256) & 0xfff), String((st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00)));
      const r = spawnSync('mknod', args, { encoding: 'utf8' });
      if (r.status !== 0) fail(req, `cannot create ${'/' + rel}: ${r.stderr?.trim() || r.error?.message}`);
      lchownSync(abs, o.uid, o.gid);
      chmodSync(abs, modeOf(st.mode, false));
      lutimesSync(abs, mtime, mtime);
      stats.files++;
      return;
    }
    // regular file
    if (src.st && src.st.nlink > 1 && src.abs) {
      const key = `${src.st.dev}:${src.st.ino}`;
      const prev = hardlinks.get(key);
      if (prev !== undefined) {
        linkSync(R.abs(prev), abs);
        stats.links++;
        return;
      }
      hardlinks.set(key, rel);
    }
    if (src.content !== undefined) {
      const fd = openSync(abs, FS.O_WRONLY | FS.O_CREAT | FS.O_EXCL | FS.O_NOFOLLOW, 0o600);
      try {
        writeFileSync(fd, src.content);
      } finally {
        closeSync(fd);
      }
      stats.bytes += Buffer.byteLength(src.content);
    } else {
      const size = src.st?.size ?? Infinity;
      if (size <= 1024 * 1024) copyFileSync(src.abs ?? src.file!, abs, FS.COPYFILE_EXCL | FS.COPYFILE_FICLONE);
      else await fsp.copyFile(src.abs ?? src.file!, abs, FS.COPYFILE_EXCL | FS.COPYFILE_FICLONE);
      stats.bytes += src.st?.size ?? 0;
    }
    lchownSync(abs, o.uid, o.gid); // before chmod: chown clears setuid/setgid
    chmodSync(abs, modeOf(src.mode ?? src.st?.mode ?? 0o644, false));
    if (src.abs) copyXattrsSafe(src.abs, abs); // after chown: chown clears security.capability
    lutimesSync(abs, mtime, mtime);
    stats.files++;
  };

  for (const it of plan.items) {
    hardlinks.clear(); // hardlinks are kept within one source (as buildah: two sources naming one inode give two files)
    fresh.clear(); // a later source may write into a dir an earlier one created
    if (it.kind === 'heredoc' || it.kind === 'url') {
      const dl = it.kind === 'url' ? await it.fetch() : undefined;
      const name = dl?.name || it.name;
      if (!name && destIsDir) fail(req, `${it.spec}: cannot determine a file name for the destination; name it in the destination`);
      const parts = destIsDir ? [...destReal, name] : destReal;
      if (!parts.length) fail(req, `destination ${req.dest}: cannot write a file over the root directory`);
      if (it.kind === 'heredoc') await put(parts, 'file', { content: it.content, mtime: io.timestamp ?? 0, mode: 0o644 });
      else await put(parts, 'file', { file: dl!.file, mtime: dl!.mtime, mode: 0o600 });
      continue;
    }
    const keepParts = it.keep ? it.keep.split('/') : [];
    if (it.archive) {
      // ADD of a local archive: extract into the destination directory
      // (as buildah: --chown applies to a destination directory it creates, the archive keeps its owners)
      const dirParts = [...destReal, ...keepParts.slice(0, -1)];
      const resolved = dirChain(R, dirParts, req);
      ensureDirs(resolved);
      await extractArchive(req, it.entries[0]!.abs, it.archive, R.abs(resolved.join('/')), it.spec, io);
      stats.files++;
      continue;
    }
    if (it.isDir) {
      // directory: its contents go to dest (or dest/<kept parents> with --parents)
      const baseParts = [...destReal, ...keepParts];
      for (const e of it.entries) {
        const parts = e.rel ? [...baseParts, ...e.rel.split('/')] : baseParts;
        if (!parts.length) {
          // the root itself: only metadata of a created dir would apply; the root exists
          continue;
        }
        if (e.rel === '') {
          // the destination dir: an existing one keeps its metadata; a new one is 0755, now (as buildah)
          const st = await lstatOr(R.abs(dirChain(R, parts, req).join('/')));
          if (st?.isDirectory()) continue;
          const now = Date.now() / 1000;
          await put(parts, 'dir', { mode: 0o755, mtime: now });
          continue;
        }
        await putEntry(put, parts, e);
      }
      continue;
    }
    const e = it.entries[0]!;
    const parts = req.parents && keepParts.length ? [...destReal, ...keepParts] : destIsDir ? [...destReal, it.name] : destReal;
    if (!parts.length || !it.name) fail(req, `destination ${req.dest}: cannot write a file over the root directory`);
    await putEntry(put, parts, e);
  }
  // directory metadata after their contents, deepest first
  dirMeta.sort((a, b) => b.rel.length - a.rel.length);
  for (const d of dirMeta) {
    const abs = R.abs(d.rel);
    lchownSync(abs, d.uid, d.gid);
    chmodSync(abs, d.mode);
    if (d.xattrsFrom) copyXattrsSafe(d.xattrsFrom, abs);
    utimesSync(abs, d.atime, d.mtime);
  }
  return stats;
}

async function putEntry(
  put: (parts: string[], kind: 'file' | 'dir' | 'symlink' | 'special', src: { abs?: string; st?: Stats; link?: string }) => Promise<void>,
  parts: string[],
  e: Entry,
): Promise<void> {
  if (e.st.isDirectory()) await put(parts, 'dir', { abs: e.abs, st: e.st });
  else if (e.st.isSymbolicLink()) await put(parts, 'symlink', { abs: e.abs, st: e.st, link: e.link ?? (await fsp.readlink(e.abs)) });
  else if (e.st.isFile()) await put(parts, 'file', { abs: e.abs, st: e.st });
  else await put(parts, 'special', { abs: e.abs, st: e.st });
}

async function resolveDir(R: RootResolver, parts: string[], req: CopyRequest): Promise<boolean> {
  const real = await safeResolve(R, parts, req);
  const st = await lstatOr(R.abs(real.join('/')));
  return st?.isDirectory() ?? false;
}

/**
 * Resolve every component inside the root: the parent chain with RootResolver (symlinks followed
 * in the root; one climbing above it is refused), then the last component when it is a symlink
 * that leads to a directory (a file or dangling link is kept as is: it will be replaced).
 */
function resolveAllSync(R: RootResolver, parts: string[], entry: string, hops = 0): string[] {
  if (!parts.length) return [];
  const parent = R.resolve(parts.slice(0, -1), entry);
  const last = parts[parts.length - 1]!;
  if (last === '..') return parent.slice(0, -1);
  const rel = [...parent, last];
  let st: Stats | undefined;
  try {
    st = lstatSync(R.abs(rel.join('/')));
  } catch {
    return rel;
  }
  if (!st.isSymbolicLink()) return rel;
  if (hops > 40) throw new TsimageError(`too many levels of symbolic links at /${rel.join('/')}`);
  const t = readlinkSync(R.abs(rel.join('/')));
  const next = t.startsWith('/') ? t.split('/').filter(Boolean) : [...parent, ...t.split('/').filter(Boolean)];
  const r = resolveAllSync(R, next, entry, hops + 1);
  let tst: Stats | undefined;
  try {
    tst = lstatSync(R.abs(r.join('/')));
  } catch {}
  return tst?.isDirectory() ? r : rel;
}

/** Resolve all components (following symlinks in the root; missing ones kept). */
async function safeResolve(R: RootResolver, parts: string[], req: CopyRequest): Promise<string[]> {
  return safeResolveSync(R, parts, req);
}

/** Resolve a chain that must be directories (or missing: to be created), every symlink followed inside the root. */
function dirChain(R: RootResolver, parts: string[], req: CopyRequest): string[] {
  try {
    return R.resolve(parts, req.dest);
  } catch (e) {
    if (e instanceof TsimageError) fail(req, `destination ${req.dest}: ${e.message.replace(/^unsafe tar entry "[^"]*": /, '')}`, e);
    throw e;
  }
}

function safeResolveSync(R: RootResolver, parts: string[], req: CopyRequest): string[] {
  try {
    return resolveAllSync(R, parts, req.dest);
  } catch (e) {
    if (e instanceof TarSecurityError || e instanceof TsimageError)
      fail(req, `destination ${req.dest}: ${e.message.replace(/^unsafe tar entry "[^"]*": /, '')}`, e);
    throw e;
  }
}

async function extractArchive(
  req: CopyRequest,
  file: string,
  c: Compression | 'bzip2' | 'xz',
  destAbs: string,
  spec: string,
  io: CopyIo,
): Promise<void> {
  let body: AsyncIterable<Uint8Array> | Readable = createReadStream(file);
  let ext: Duplex | undefined;
  if (c === 'bzip2' || c === 'xz') {
    ext = externalOrBuiltinDecompressor(c);
    (body as Readable).pipe(ext);
    body = ext;
  }
  try {
    await extractLayer(body, destAbs, { whiteouts: 'keep', signal: io.signal });
  } catch (e) {
    if (e instanceof TarSecurityError) fail(req, `${spec}: refusing to extract a hostile archive: ${e.message}`, e);
    fail(req, `${spec}: cannot extract the archive: ${(e as Error).message}`, e);
  } finally {
    ext?.destroy();
  }
}

/** plan + apply + dispose in one call. */
export async function copyFiles(req: CopyRequest, from: CopySourceRoot, target: CopyTarget, io: CopyIo = {}): Promise<CopyStats> {
  const plan = await planCopy(req, from, io);
  try {
    return await applyCopy(plan, target, io);
  } finally {
    await plan.dispose();
  }
}
