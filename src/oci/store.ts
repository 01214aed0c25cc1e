/**
 * The content store: an OCI image layout directory (`oci-layout`, `index.json`,
 * `blobs/<alg>/<hex>`), as containers/image's `oci:` transport, umoci and buildah read
 * and write it.
 *
 * - Blobs are ingested from a stream, hashed and counted while they flow (`verifying()`),
 *   written to a temp file in the blob's own directory (same filesystem), fsynced, and
 *   renamed into place; nothing is visible under a digest name before it is verified,
 *   and the temp file is removed on every error path (including an aborted signal).
 *   Concurrent writers of the same blob each write their own temp file; the rename is
 *   atomic and both contents are identical, so the winner does not matter.
 * - `index.json` is changed under a lock (proper-lockfile, a lock directory beside it,
 *   plus an in-process queue), re-read under the lock, and written atomically (temp +
 *   fsync + rename + dir fsync), so concurrent updaters in several processes lose nothing.
 * - Tags are `org.opencontainers.image.ref.name` annotations of index.json entries, as
 *   skopeo's `oci:DIR:TAG`.
 * - `gc()` marks from index.json through manifests, index children, configs, layers and
 *   referrers (manifests whose `subject` is kept), and sweeps the rest.
 */
import { constants as FS, type Stats, type BigIntStats } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable, Writable, addAbortSignal } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type * as LockfileMod from 'proper-lockfile';
import {
  digestAlgorithm,
  digestHex,
  digestOf,
  isDigest,
  parseDigest,
  verifying,
  type Digest,
  type DigestAlgorithm,
} from './digest.js';
import { DigestMismatchError, OciError, SizeMismatchError, TsimageError, UsageError, ValidationError } from './errors.js';
import { MAX_MANIFEST_SIZE, type Io } from './io.js';
import { guessManifestType, isIndexType, isManifestType, MediaTypes, type MediaType } from './mediatypes.js';
import { parseJson, validateIndex, type Descriptor, type ImageIndex } from './manifest.js';

/** The annotation that names an index.json entry (the tag of `oci:DIR:TAG`). */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
/** The `oci-layout` file's content, as containers/image writes it. */
export const OCI_LAYOUT_CONTENT = '{"imageLayoutVersion": "1.0.0"}';
const TMP_PREFIX = '.tmp-';

/**
 * A content-addressed blob store (STYLE.md "Key interfaces"). OciLayout implements it;
 * the registry's storage and the copy transports can offer the same shape.
 */
export interface ContentStore {
  stat(d: Digest): Promise<{ size: number } | undefined>;
  /** A stream of the blob; `end` is inclusive (as fs.createReadStream and HTTP ranges). */
  open(d: Digest, o?: Io & { start?: number; end?: number }): Promise<Readable>;
  ingest(
    expect: { digest?: Digest | undefined; size?: number | undefined; mediaType: MediaType },
    body: AsyncIterable<Uint8Array> | Readable,
    o?: IngestOptions,
  ): Promise<Descriptor>;
  delete(d: Digest): Promise<boolean>;
  digests(): AsyncIterable<Digest>;
}

export interface IngestOptions extends Io {
  /**
   * When the blob already exists: false (default) destroys a Readable body without
   * reading it; true reads the body to its end (e.g. an HTTP request that must be consumed).
   */
  drain?: boolean | undefined;
}

export interface OpenLayoutOptions {
  /** Create the layout (oci-layout + empty index.json) when the directory is missing or empty. */
  create?: boolean | undefined;
  /** fsync blobs, index.json and their directories (default true). */
  sync?: boolean | undefined;
  /**
   * Where the blobs are (`<blobsDir>/<alg>/<hex>`) instead of `<dir>/blobs`: containers/image's shared blob
   * directory (skopeo --src/--dest-shared-blob-dir), shared by several layouts. gc refuses such a layout.
   */
  blobsDir?: string | undefined;
}

export interface TaggedEntry {
  name: string;
  descriptor: Descriptor;
}

export interface GcResult {
  dryRun: boolean;
  /** Blobs kept (reachable from index.json). */
  kept: number;
  /** Blobs removed (or that would be removed with dryRun). */
  removed: Digest[];
  /** Bytes freed (or that would be freed). */
  bytes: number;
  /** Stale temp files removed (left by a crashed writer). */
  tempFiles: number;
}

/** The grammar of `org.opencontainers.image.ref.name` (image-spec annotations.md). */
const REF_NAME_RE = /^[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*(?:\/[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*)*$/;

export function validateRefName(name: string): string {
  if (typeof name !== 'string' || name === '' || !REF_NAME_RE.test(name))
    throw new UsageError(`invalid image name ${JSON.stringify(name)} in an OCI layout: want components of [A-Za-z0-9] joined by - . _ : @ + or --, separated by /`);
  return name;
}

function isENOENT(e: unknown): boolean {
  return (e as NodeJS.ErrnoException)?.code === 'ENOENT';
}

function tmpName(): string {
  return `${TMP_PREFIX}${process.pid}-${randomBytes(6).toString('hex')}`;
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, FS.O_RDONLY | FS.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Place a blob that `fill` writes into a new temp file `tmp` (given as an open, empty file descriptor) and whose
 * digest and size `fill` reports (it hashed what it wrote: e.g. a download in a worker thread): checked against
 * `expect` with the verifying stream's errors, fsynced when `sync`, renamed to `path`; the temp file is removed on
 * every failure path. OciLayout.ingestWith and the dir: transport's blobs.
 */
export async function fillFileAtomic(
  tmp: string,
  path: string,
  expect: { digest: Digest; size: number },
  fill: (fd: number) => Promise<{ digest: Digest; size: number }>,
  o: { sync: boolean; what: string },
): Promise<void> {
  let placed = false;
  try {
    const fh = await fsp.open(tmp, 'wx', 0o644);
    try {
      const got = await fill(fh.fd);
      if (got.size !== expect.size) throw new SizeMismatchError(expect.size, got.size, o.what);
      if (got.digest !== expect.digest) throw new DigestMismatchError(expect.digest, got.digest, o.what);
      if (o.sync) await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, path);
    placed = true;
  } finally {
    if (!placed) await fsp.rm(tmp, { force: true }).catch(() => {});
  }
}

/**
 * Write bytes to `path` atomically: temp in the same dir, fsync, rename (or link when `exclusive`: false, nothing
 * written, when `path` exists), directory fsync. `sync: false` skips both fsyncs.
 */
export async function writeFileAtomic(path: string, bytes: Uint8Array | string, opts: { sync: boolean; exclusive?: boolean } = { sync: true }): Promise<boolean> {
  const dir = dirname(path);
  const tmp = join(dir, tmpName());
  let placed = false;
  try {
    const fh = await fsp.open(tmp, 'wx', 0o644);
    try {
      await fh.writeFile(bytes);
      if (opts.sync) await fh.sync();
    } finally {
      await fh.close();
    }
    if (opts.exclusive) {
      try {
        await fsp.link(tmp, path);
        placed = true;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        return false;
      }
    } else {
      await fsp.rename(tmp, path);
      placed = true;
    }
    if (opts.sync) await fsyncDir(dir);
    return true;
  } finally {
    if (!placed || opts.exclusive) await fsp.rm(tmp, { force: true }).catch(() => {});
  }
}

/** Serialises index updates of one layout within this process (the file lock covers other processes). */
const localQueues = new Map<string, Promise<unknown>>();

/**
 * proper-lockfile (+ graceful-fs, signal-exit) only when a layout is locked: this module is on every command's
 * import path (the oci barrel) and the ESM import of those CJS files cost ~10-20 ms of start-up. A dynamic import
 * (not createRequire) so that the bundle (scripts/bundle.mjs) carries it and its V8 code cache covers it: read from
 * node_modules, the first lock of a command cost ~12 ms.
 */
let lockfileMod: Promise<typeof LockfileMod> | undefined;
const properLockfile = (): Promise<typeof LockfileMod> => (lockfileMod ??= import('proper-lockfile').then((m) => (m.default ?? m) as typeof LockfileMod));

async function withLocalQueue<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const prev = localQueues.get(key) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((r) => (release = r));
  const chained = prev.then(() => mine);
  localQueues.set(key, chained);
  await prev.catch(() => {});
  try {
    return await fn();
  } finally {
    release();
    if (localQueues.get(key) === chained) localQueues.delete(key);
  }
}

function refName(d: Descriptor): string | undefined {
  return d.annotations?.[REF_NAME_ANNOTATION];
}

/** An OCI image layout directory used as a content store and a small image store. */
export class OciLayout implements ContentStore {
  private readonly sync: boolean;
  private readonly madeDirs = new Set<string>();
  private indexCache: { key: string; index: ImageIndex } | undefined;

  /** `<dir>/blobs`, or the shared blob directory (OpenLayoutOptions.blobsDir). */
  readonly blobsRoot: string;
  private readonly sharedBlobs: boolean;

  private constructor(
    readonly dir: string,
    opts: OpenLayoutOptions,
  ) {
    this.sync = opts.sync ?? true;
    this.blobsRoot = opts.blobsDir ?? join(dir, 'blobs');
    this.sharedBlobs = opts.blobsDir !== undefined;
  }

  /**
   * Open a layout. With `create`, a missing or empty directory becomes a layout
   * (`oci-layout` and an empty `index.json`); a directory with other content that is not
   * a layout is refused, as is any non-layout without `create`.
   */
  static async open(dir: string, opts: OpenLayoutOptions = {}): Promise<OciLayout> {
    const layout = new OciLayout(dir, opts);
    let content: string | undefined;
    try {
      content = await fsp.readFile(join(dir, 'oci-layout'), 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOTDIR') throw new UsageError(`${dir} is not a directory (want an OCI image layout directory)`);
      if (code !== 'ENOENT') throw e;
    }
    if (content === undefined) {
      if (!opts.create) {
        const exists = await fsp.stat(dir).then((s) => s.isDirectory(), () => false);
        throw new UsageError(exists ? `${dir} is not an OCI image layout (no oci-layout file)` : `OCI image layout ${dir} does not exist`);
      }
      await layout.create();
    } else {
      let version: unknown;
      try {
        version = (JSON.parse(content) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
      } catch {
        throw new UsageError(`${dir}/oci-layout is not valid JSON: not an OCI image layout`);
      }
      if (typeof version !== 'string' || !/^1\.\d+\.\d+$/.test(version))
        throw new UsageError(`${dir}/oci-layout: unsupported imageLayoutVersion ${JSON.stringify(version)} (want 1.x.y)`);
    }
    return layout;
  }

  private async create(): Promise<void> {
    const dir = this.dir;
    let entries: string[] = [];
    try {
      entries = await fsp.readdir(dir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOTDIR') throw new UsageError(`${dir} is not a directory (want an OCI image layout directory)`);
      if (code !== 'ENOENT') throw e;
    }
    // Another process may be creating the same layout: its files are ours too.
    const foreign = entries.filter((n) => !['blobs', 'index.json', 'oci-layout', '.index.json.lock'].includes(n) && !n.startsWith(TMP_PREFIX));
    if (foreign.length > 0)
      throw new UsageError(`${dir} is not an OCI image layout and not empty (found ${foreign.slice(0, 3).join(', ')}${foreign.length > 3 ? ', ...' : ''}): refusing to turn it into one`);
    // (with a shared blob directory: an empty blobs/ here, as containers/image leaves it)
    await fsp.mkdir(this.sharedBlobs ? join(dir, 'blobs') : join(dir, 'blobs', 'sha256'), { recursive: true });
    if (this.sharedBlobs) await fsp.mkdir(join(this.blobsRoot, 'sha256'), { recursive: true });
    // index.json first (never clobbering one another creator wrote), oci-layout last: a dir
    // with oci-layout is always complete.
    await writeFileAtomic(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [] }), {
      sync: this.sync,
      exclusive: true,
    });
    await writeFileAtomic(join(dir, 'oci-layout'), OCI_LAYOUT_CONTENT, { sync: this.sync, exclusive: true });
  }

  // ---- blobs ------------------------------------------------------------------

  blobPath(d: Digest): string {
    const alg = digestAlgorithm(d);
    return join(this.blobsRoot, alg, digestHex(d));
  }

  private checked(d: Digest | string): Digest {
    return parseDigest(d);
  }

  async stat(d: Digest): Promise<{ size: number } | undefined> {
    try {
      const s = await fsp.stat(this.blobPath(this.checked(d)));
      return s.isFile() ? { size: s.size } : undefined;
    } catch (e) {
      if (isENOENT(e)) return undefined;
      throw e;
    }
  }

  async has(d: Digest): Promise<boolean> {
    return (await this.stat(d)) !== undefined;
  }

  private unknown(d: Digest): OciError {
    return new OciError('BLOB_UNKNOWN', `blob ${d} not found in OCI layout ${this.dir}`);
  }

  /** A stream of a blob (or of bytes start..end, end inclusive). Fails with BLOB_UNKNOWN when missing. */
  async open(d: Digest, o: Io & { start?: number | undefined; end?: number | undefined } = {}): Promise<Readable> {
    const p = this.blobPath(this.checked(d));
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(p, 'r');
    } catch (e) {
      if (isENOENT(e)) throw this.unknown(d);
      throw e;
    }
    const stream = fh.createReadStream({
      highWaterMark: 512 * 1024,
      ...(o.start !== undefined ? { start: o.start } : {}),
      ...(o.end !== undefined ? { end: o.end } : {}),
    }) as unknown as Readable;
    if (o.signal) {
      addAbortSignal(o.signal, stream);
      // An abort before the caller starts reading (e.g. SIGINT between open() and the pipeline) must not become an
      // unhandled 'error' event that kills the process: pipeline()/for-await still see the error; the fd is closed.
      stream.on('error', () => {});
    }
    if (o.onProgress) {
      const cb = o.onProgress;
      stream.on('data', (c: Buffer) => cb(c.length));
    }
    return stream;
  }

  private async ensureDir(alg: DigestAlgorithm): Promise<string> {
    const dir = join(this.blobsRoot, alg);
    if (!this.madeDirs.has(dir)) {
      await fsp.mkdir(dir, { recursive: true });
      this.madeDirs.add(dir);
    }
    return dir;
  }

  /**
   * Store a blob from a stream, verifying digest and size (when given) while it flows.
   * An existing blob of that digest short-circuits (the body is destroyed, or drained
   * with `drain`). `onProgress` is called with each chunk's byte count.
   */
  async ingest(
    expect: { digest?: Digest | undefined; size?: number | undefined; mediaType: MediaType },
    body: AsyncIterable<Uint8Array> | Readable,
    o: IngestOptions = {},
  ): Promise<Descriptor> {
    const mediaType = expect.mediaType;
    if (expect.digest !== undefined) {
      const d = this.checked(expect.digest);
      const have = await this.stat(d);
      if (have) {
        if (expect.size !== undefined && have.size !== expect.size) {
          discard(body, false);
          throw new SizeMismatchError(expect.size, have.size, `blob ${d} (already stored with ${have.size} bytes)`);
        }
        await discard(body, o.drain ?? false, o.signal);
        return { mediaType, digest: d, size: have.size };
      }
    }
    o.signal?.throwIfAborted();
    const alg: DigestAlgorithm = expect.digest ? digestAlgorithm(expect.digest) : 'sha256';
    const dir = await this.ensureDir(alg);
    const tmp = join(dir, tmpName());
    const verifier = verifying({ digest: expect.digest, size: expect.size, what: expect.digest ? `blob ${expect.digest}` : 'blob' });
    let placed = false;
    try {
      const fh = await fsp.open(tmp, 'wx', 0o644);
      try {
        const sink = fileSink(fh, o.onProgress);
        await pipeline(body, verifier, sink, o.signal ? { signal: o.signal } : {});
        if (this.sync) await fh.sync();
      } finally {
        await fh.close();
      }
      const result = verifier.result!;
      const final = this.blobPath(result.digest);
      if (expect.digest === undefined && (await this.has(result.digest))) {
        return { mediaType, digest: result.digest, size: result.size };
      }
      await fsp.rename(tmp, final);
      placed = true;
      if (this.sync) await fsyncDir(dir);
      return { mediaType, digest: result.digest, size: result.size };
    } finally {
      if (!placed) await fsp.rm(tmp, { force: true }).catch(() => {});
    }
  }

  /**
   * Store a blob that `fill` writes into the temp file (given as a file descriptor, open for writing, empty) and
   * whose digest and size `fill` reports (it hashes what it writes: e.g. a download in a worker thread). Checked
   * against `expect` as ingest checks a stream (same errors), then fsynced and renamed into place; an existing
   * blob short-circuits without calling `fill`.
   */
  async ingestWith(
    expect: { digest: Digest; size: number; mediaType: MediaType },
    fill: (fd: number) => Promise<{ digest: Digest; size: number }>,
    o: Io = {},
  ): Promise<Descriptor> {
    const { mediaType } = expect;
    const d = this.checked(expect.digest);
    const what = `blob ${d}`;
    const have = await this.stat(d);
    if (have) {
      if (have.size !== expect.size) throw new SizeMismatchError(expect.size, have.size, `${what} (already stored with ${have.size} bytes)`);
      return { mediaType, digest: d, size: have.size };
    }
    o.signal?.throwIfAborted();
    const dir = await this.ensureDir(digestAlgorithm(d));
    await fillFileAtomic(join(dir, tmpName()), this.blobPath(d), { digest: d, size: expect.size }, fill, { sync: this.sync, what });
    if (this.sync) await fsyncDir(dir);
    return { mediaType, digest: d, size: expect.size };
  }

  /** Store bytes held in memory (manifests, configs); returns their descriptor plus `extra` fields. */
  async putBytes(mediaType: MediaType, bytes: Uint8Array | string, extra?: Partial<Omit<Descriptor, 'digest' | 'size'>>): Promise<Descriptor> {
    const buf = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
    const digest = digestOf(buf);
    const desc: Descriptor = { mediaType, digest, size: buf.length, ...extra };
    desc.mediaType = extra?.mediaType ?? mediaType;
    if (await this.has(digest)) return desc;
    await this.ensureDir('sha256');
    await writeFileAtomic(this.blobPath(digest), buf, { sync: this.sync });
    return desc;
  }

  /** Read a small blob (manifest, config) into memory, verifying its digest; fails over `limit`. */
  async readBytes(d: Digest, limit = MAX_MANIFEST_SIZE): Promise<Buffer> {
    const digest = this.checked(d);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.blobPath(digest), 'r');
    } catch (e) {
      if (isENOENT(e)) throw this.unknown(digest);
      throw e;
    }
    try {
      const { size } = await fh.stat();
      if (size > limit) throw new SizeMismatchError(limit, size, `blob ${digest}`, 'limit');
      const buf = Buffer.allocUnsafe(size);
      let off = 0;
      while (off < size) {
        const { bytesRead } = await fh.read(buf, off, size - off, off);
        if (bytesRead === 0) break;
        off += bytesRead;
      }
      const got = buf.subarray(0, off);
      const actual = digestOf(got, digestAlgorithm(digest));
      if (actual !== digest) throw new DigestMismatchError(digest, actual, `blob ${this.blobPath(digest)} (corrupt store?)`);
      return got;
    } finally {
      await fh.close();
    }
  }

  /** Remove a blob; true when it existed. Does not touch index.json. */
  async delete(d: Digest): Promise<boolean> {
    try {
      await fsp.unlink(this.blobPath(this.checked(d)));
      return true;
    } catch (e) {
      if (isENOENT(e)) return false;
      throw e;
    }
  }

  /** Every blob digest in the layout (temp files and foreign names skipped). */
  async *digests(): AsyncGenerator<Digest> {
    let algs: string[];
    try {
      algs = await fsp.readdir(this.blobsRoot);
    } catch (e) {
      if (isENOENT(e)) return;
      throw e;
    }
    for (const alg of algs.sort()) {
      let names: string[];
      try {
        names = await fsp.readdir(join(this.blobsRoot, alg));
      } catch (e) {
        if (isENOENT(e) || (e as NodeJS.ErrnoException).code === 'ENOTDIR') continue;
        throw e;
      }
      for (const n of names.sort()) {
        const d = `${alg}:${n}`;
        if (isDigest(d)) yield d;
      }
    }
  }

  // ---- index.json ---------------------------------------------------------------

  private get indexPath(): string {
    return join(this.dir, 'index.json');
  }

  /** index.json, parsed and validated; re-read only when the file changed (stat: inode, mtime, size). */
  async readIndex(): Promise<ImageIndex> {
    return structuredClone(await this.loadIndex());
  }

  private async loadIndex(): Promise<ImageIndex> {
    let st: BigIntStats;
    try {
      st = await fsp.stat(this.indexPath, { bigint: true });
    } catch (e) {
      if (isENOENT(e)) return { schemaVersion: 2, manifests: [] };
      throw e;
    }
    const key = `${st.ino}:${st.mtimeNs}:${st.size}:${st.ctimeNs}`;
    if (this.indexCache?.key === key) return this.indexCache.index;
    const bytes = await fsp.readFile(this.indexPath);
    let index: ImageIndex;
    try {
      index = validateIndex(parseJson(bytes, `${this.indexPath}`));
    } catch (e) {
      if (e instanceof ValidationError) throw new TsimageError(`${this.indexPath}: ${e.message}`, { cause: e });
      throw e;
    }
    this.indexCache = { key, index };
    return index;
  }

  /**
   * Change index.json under the layout lock: `fn` gets a fresh copy (read under the lock)
   * and returns the new index (or undefined for no change), which is written atomically.
   */
  async updateIndex<T = void>(fn: (index: ImageIndex) => { index?: ImageIndex; result: T } | Promise<{ index?: ImageIndex; result: T }>): Promise<T> {
    return this.withLock(async () => {
      const cur = structuredClone(await this.loadIndex());
      const { index, result } = await fn(cur);
      if (index) await writeFileAtomic(this.indexPath, JSON.stringify(index), { sync: this.sync });
      return result;
    });
  }

  /** Run `fn` holding the layout's index lock (in-process queue + lock dir for other processes). */
  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    return withLocalQueue(this.dir, async () => {
      let release: (() => Promise<void>) | undefined;
      try {
        release = await (await properLockfile()).lock(this.dir, {
          realpath: false,
          lockfilePath: join(this.dir, '.index.json.lock'),
          stale: 10_000,
          retries: { retries: 1000, factor: 1.2, minTimeout: 2, maxTimeout: 50, randomize: true },
        });
      } catch (e) {
        throw new TsimageError(`cannot lock OCI layout ${this.dir}: ${(e as Error).message}`, { cause: e });
      }
      try {
        return await fn();
      } finally {
        await release().catch(() => {});
      }
    });
  }

  /** The index.json entries that carry a name (`org.opencontainers.image.ref.name`). */
  async list(): Promise<TaggedEntry[]> {
    const index = await this.loadIndex();
    const out: TaggedEntry[] = [];
    for (const m of index.manifests) {
      const name = refName(m);
      if (name !== undefined) out.push({ name, descriptor: structuredClone(m) });
    }
    return out;
  }

  /** Like resolve, but undefined when nothing matches. */
  async find(refOrDigest?: string): Promise<Descriptor | undefined> {
    const index = await this.loadIndex();
    if (refOrDigest === undefined || refOrDigest === '') {
      if (index.manifests.length === 1) return structuredClone(index.manifests[0]!);
      if (index.manifests.length === 0) return undefined;
      throw new UsageError(`OCI layout ${this.dir} holds ${index.manifests.length} images: name one (DIR:TAG or DIR@DIGEST)`);
    }
    if (isDigest(refOrDigest)) {
      const hit = index.manifests.find((m) => m.digest === refOrDigest);
      if (hit) return structuredClone(hit);
      const st = await this.stat(refOrDigest);
      if (!st) return undefined;
      // A manifest not listed in index.json (an index child, a referrer): its type from its JSON.
      if (st.size > MAX_MANIFEST_SIZE) return undefined;
      const bytes = await this.readBytes(refOrDigest);
      let doc: unknown;
      try {
        doc = JSON.parse(bytes.toString('utf8'));
      } catch {
        return undefined;
      }
      const mt = guessManifestType(doc);
      if (!mt || !(isManifestType(mt) || isIndexType(mt))) return undefined;
      return { mediaType: mt, digest: refOrDigest, size: st.size };
    }
    const hits = index.manifests.filter((m) => refName(m) === refOrDigest);
    if (hits.length > 1) throw new TsimageError(`OCI layout ${this.dir}: more than one index.json entry named ${JSON.stringify(refOrDigest)}`);
    return hits[0] ? structuredClone(hits[0]) : undefined;
  }

  /**
   * The descriptor of an image by name (ref.name annotation) or digest; with no argument,
   * the only image of the layout. Fails with MANIFEST_UNKNOWN when there is none.
   */
  async resolve(refOrDigest?: string): Promise<Descriptor> {
    const d = await this.find(refOrDigest);
    if (!d) {
      throw new OciError(
        'MANIFEST_UNKNOWN',
        refOrDigest ? `no image ${JSON.stringify(refOrDigest)} in OCI layout ${this.dir}` : `OCI layout ${this.dir} holds no image`,
      );
    }
    return d;
  }

  /**
   * Name a manifest: the index.json entry of that name is replaced (or appended), as skopeo
   * does for `oci:DIR:NAME`. The descriptor's other annotations are kept.
   */
  async tag(name: string, desc: Descriptor): Promise<Descriptor> {
    validateRefName(name);
    const entry: Descriptor = structuredClone(desc);
    entry.annotations = { ...(entry.annotations ?? {}), [REF_NAME_ANNOTATION]: name };
    await this.updateIndex((index) => {
      const i = index.manifests.findIndex((m) => refName(m) === name);
      if (i >= 0) {
        if (JSON.stringify(index.manifests[i]) === JSON.stringify(entry)) return { result: undefined };
        index.manifests[i] = entry;
        // Drop any further duplicates of the name (a hand-edited index).
        index.manifests = index.manifests.filter((m, j) => j <= i || refName(m) !== name);
      } else {
        index.manifests.push(entry);
      }
      return { index, result: undefined };
    });
    return entry;
  }

  /** Add an unnamed index.json entry (skopeo's `oci:DIR` without a tag), unless that digest is already listed. */
  async addManifest(desc: Descriptor): Promise<void> {
    await this.updateIndex((index) => {
      if (index.manifests.some((m) => m.digest === desc.digest)) return { result: undefined };
      index.manifests.push(structuredClone(desc));
      return { index, result: undefined };
    });
  }

  /**
   * Add several index.json entries in one locked update: named ones replace the entry of
   * that name (as tag()), unnamed ones are added unless their digest is already listed.
   * Returns the entries as written.
   */
  async addEntries(entries: readonly { name?: string | undefined; descriptor: Descriptor }[]): Promise<Descriptor[]> {
    const out = entries.map(({ name, descriptor }) => {
      const e = structuredClone(descriptor);
      if (name !== undefined) {
        validateRefName(name);
        e.annotations = { ...(e.annotations ?? {}), [REF_NAME_ANNOTATION]: name };
      }
      return e;
    });
    await this.updateIndex((index) => {
      let changed = false;
      for (const e of out) {
        const name = refName(e);
        if (name !== undefined) {
          const i = index.manifests.findIndex((m) => refName(m) === name);
          if (i >= 0) {
            if (JSON.stringify(index.manifests[i]) === JSON.stringify(e)) continue;
            index.manifests[i] = e;
            index.manifests = index.manifests.filter((m, j) => j <= i || refName(m) !== name);
          } else index.manifests.push(e);
          changed = true;
        } else if (!index.manifests.some((m) => m.digest === e.digest)) {
          index.manifests.push(e);
          changed = true;
        }
      }
      return changed ? { index, result: undefined } : { result: undefined };
    });
    return out;
  }

  /** Remove the entry of that name; true when there was one. Blobs stay until gc(). */
  async untag(name: string): Promise<boolean> {
    return this.updateIndex((index) => {
      const before = index.manifests.length;
      index.manifests = index.manifests.filter((m) => refName(m) !== name);
      return index.manifests.length === before ? { result: false } : { index, result: true };
    });
  }

  /** Remove every index.json entry of that digest (named or not); true when one was removed. */
  async removeManifest(digest: Digest): Promise<boolean> {
    return this.updateIndex((index) => {
      const before = index.manifests.length;
      index.manifests = index.manifests.filter((m) => m.digest !== digest);
      return index.manifests.length === before ? { result: false } : { index, result: true };
    });
  }

  // ---- garbage collection -------------------------------------------------------

  /** Digests reachable from index.json (manifests, index children, configs, layers, subjects' referrers). */
  async reachable(): Promise<Set<Digest>> {
    return this.reachableFrom((await this.loadIndex()).manifests);
  }

  /**
   * Digests reachable from `roots`: manifests, index children, configs, layers and (with
   * `referrers`, default true) manifests whose `subject` is reachable, to a fixpoint.
   * Missing blobs are included (they are referenced) but not descended into.
   */
  async reachableFrom(roots: readonly Descriptor[], opts: { referrers?: boolean } = {}): Promise<Set<Digest>> {
    const marked = new Set<Digest>();
    const visit = async (desc: Descriptor): Promise<void> => {
      if (marked.has(desc.digest)) return;
      marked.add(desc.digest);
      if (!(isManifestType(desc.mediaType) || isIndexType(desc.mediaType))) return;
      const doc = await this.readDoc(desc.digest);
      if (doc) await this.visitChildren(doc, visit);
    };
    for (const m of roots) await visit(m);
    if (opts.referrers === false) return marked;
    // Referrers: manifests not reachable themselves whose subject is kept (to a fixpoint).
    const candidates: { digest: Digest; doc: Record<string, unknown> }[] = [];
    for await (const d of this.digests()) {
      if (marked.has(d)) continue;
      const doc = await this.readDoc(d, true);
      if (doc && typeof doc.subject === 'object' && doc.subject !== null) candidates.push({ digest: d, doc });
    }
    for (;;) {
      let changed = false;
      for (const c of candidates) {
        if (marked.has(c.digest)) continue;
        const subj = (c.doc.subject as { digest?: unknown }).digest;
        if (typeof subj === 'string' && marked.has(subj as Digest)) {
          marked.add(c.digest);
          await this.visitChildren(c.doc, visit);
          changed = true;
        }
      }
      if (!changed) break;
    }
    return marked;
  }

  private async visitChildren(doc: Record<string, unknown>, visit: (d: Descriptor) => Promise<void>): Promise<void> {
    const descs: unknown[] = [];
    if (doc.config) descs.push(doc.config);
    if (Array.isArray(doc.layers)) descs.push(...(doc.layers as unknown[]));
    if (Array.isArray(doc.manifests)) descs.push(...(doc.manifests as unknown[]));
    // A manifest's subject is not kept by the referrer (it is the other way round).
    for (const d of descs) {
      if (d && typeof d === 'object' && isDigest((d as Descriptor).digest)) {
        const desc = d as Descriptor;
        await visit({ ...desc, mediaType: typeof desc.mediaType === 'string' ? desc.mediaType : '' });
      }
    }
  }

  /** A blob parsed as a JSON document, or undefined (missing, too big, not JSON). */
  private async readDoc(d: Digest, sniff = false): Promise<Record<string, unknown> | undefined> {
    const p = this.blobPath(d);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(p, 'r');
    } catch (e) {
      if (isENOENT(e)) return undefined;
      throw e;
    }
    try {
      const { size } = await fh.stat();
      if (size > MAX_MANIFEST_SIZE || size < 2) return undefined;
      if (sniff) {
        const first = Buffer.alloc(1);
        await fh.read(first, 0, 1, 0);
        if (first[0] !== 0x7b /* { */) return undefined;
      }
      const buf = await fh.readFile();
      try {
        const v = JSON.parse(buf.toString('utf8')) as unknown;
        return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
      } catch {
        return undefined;
      }
    } finally {
      await fh.close();
    }
  }

  /**
   * Remove blobs not reachable from index.json, and temp files older than an hour (left
   * by crashed writers). Runs under the index lock; a blob ingested but not yet named by
   * a concurrent writer can be swept, so run it when no build or copy writes the layout.
   */
  async gc(opts: { dryRun?: boolean | undefined } = {}): Promise<GcResult> {
    // other layouts' blobs live there too: what this index.json does not reach may be theirs
    if (this.sharedBlobs) throw new UsageError(`OCI layout ${this.dir}: no gc with a shared blob directory (${this.blobsRoot})`);
    const dryRun = opts.dryRun ?? false;
    return this.withLock(async () => {
      const keep = await this.reachable();
      const removed: Digest[] = [];
      let bytes = 0;
      let kept = 0;
      for await (const d of this.digests()) {
        if (keep.has(d)) {
          kept++;
          continue;
        }
        let st: Stats;
        try {
          st = await fsp.stat(this.blobPath(d));
        } catch (e) {
          if (isENOENT(e)) continue;
          throw e;
        }
        if (!dryRun) await this.delete(d);
        removed.push(d);
        bytes += st.size;
      }
      let tempFiles = 0;
      const cutoff = Date.now() - 3600_000;
      let algs: string[] = [];
      try {
        algs = await fsp.readdir(this.blobsRoot);
      } catch {}
      for (const dir of [this.dir, ...algs.map((a) => join(this.blobsRoot, a))]) {
        let names: string[] = [];
        try {
          names = await fsp.readdir(dir);
        } catch {
          continue;
        }
        for (const n of names) {
          if (!n.startsWith(TMP_PREFIX)) continue;
          const p = join(dir, n);
          const st = await fsp.stat(p).catch(() => undefined);
          if (!st || st.mtimeMs > cutoff) continue;
          tempFiles++;
          if (!dryRun) await fsp.rm(p, { force: true });
        }
      }
      return { dryRun, kept, removed, bytes, tempFiles };
    });
  }
}

/** A Writable that writes chunks to a FileHandle (kept open for fsync by the caller). */
function fileSink(fh: fsp.FileHandle, onProgress?: (n: number) => void): Writable {
  return new Writable({
    highWaterMark: 1024 * 1024,
    write(chunk: Buffer, _enc, cb) {
      writeAll(fh, chunk).then(() => {
        onProgress?.(chunk.length);
        cb();
      }, cb);
    },
    writev(chunks, cb) {
      const bufs = chunks.map((c) => c.chunk as Buffer);
      const n = bufs.reduce((a, b) => a + b.length, 0);
      writevAll(fh, bufs).then(() => {
        onProgress?.(n);
        cb();
      }, cb);
    },
  });
}

async function writeAll(fh: fsp.FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off);
    off += bytesWritten;
  }
}

async function writevAll(fh: fsp.FileHandle, bufs: Buffer[]): Promise<void> {
  const { bytesWritten } = await fh.writev(bufs);
  const total = bufs.reduce((a, b) => a + b.length, 0);
  if (bytesWritten < total) await writeAll(fh, Buffer.concat(bufs).subarray(bytesWritten));
}

/** Get rid of a body we do not need: destroy a Readable, or read it to the end with `drain`. */
async function discard(body: AsyncIterable<Uint8Array> | Readable, drain: boolean, signal?: AbortSignal): Promise<void> {
  if (drain) {
    for await (const _ of body as AsyncIterable<Uint8Array>) signal?.throwIfAborted();
    return;
  }
  if (body instanceof Readable) body.destroy();
  else if (typeof (body as { return?: unknown }).return === 'function') await (body as unknown as AsyncGenerator).return(undefined);
}
