/**
 * RegistryStore: the OCI meaning on top of a StorageDriver (distribution's
 * registry/storage/*.go): blobs in one global content-addressed store with per-repository
 * links, upload sessions on disk, manifests by digest, tags as pointers, referrers.
 * Layout: paths.ts. HTTP lives in routes/; auth/metrics/retention plug in via hooks.ts.
 *
 * Subclass it (and override getManifest/statBlob/openBlob) for a pull-through mirror.
 */
import { createHash, randomUUID, type Hash } from 'node:crypto';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  OciError,
  ValidationError,
  digestAlgorithm,
  digestOf,
  isDigest,
  isValidTag,
  parseManifest,
  type Descriptor,
  type Digest,
  type DigestAlgorithm,
  type MediaType,
} from '../oci/index.js';
import { isNotFound, type StorageDriver } from './driver.js';
import type { EventListener, RegistryEvent, StoreHooks } from './hooks.js';
import * as P from './paths.js';

export interface StoreOptions {
  hooks?: StoreHooks | undefined;
  /** How long positive lookups (tag -> digest, blob link -> size) are cached (ms); 0 disables. Default 5000. */
  cacheTtlMs?: number | undefined;
  /** Manifest bytes kept in memory (by digest), in bytes. Default 32 MiB. */
  manifestCacheBytes?: number | undefined;
  /** Allow DELETE of blobs, manifests and tags. Default true. */
  deleteEnabled?: boolean | undefined;
  /** Mount without `from` links a blob found anywhere in the registry. Default true. */
  mountWithoutFrom?: boolean | undefined;
}

export interface PutManifestOptions {
  /** Store what an upstream served (pull-through mirror): no blob-existence checks, no hooks. */
  cache?: boolean;
}

export interface UploadState {
  repo: string;
  id: string;
  /** Bytes received so far. */
  size: number;
  startedAt: Date;
}

export interface ManifestInfo {
  digest: Digest;
  mediaType: MediaType;
  size: number;
  subject?: Digest | undefined;
  artifactType?: string | undefined;
}

type Revision = { mediaType: string; size: number; subject?: Digest; artifactType?: string; annotations?: Record<string, string> };

type Session = { hash: Hash | undefined; size: number; startedAt: Date; busy: boolean };

class TtlCache<V> {
  private readonly m = new Map<string, { v: V; t: number }>();
  constructor(
    private readonly ttl: number,
    private readonly max = 200_000,
  ) {}
  get(k: string): V | undefined {
    if (this.ttl <= 0) return undefined;
    const e = this.m.get(k);
    if (!e) return undefined;
    if (performance.now() - e.t > this.ttl) {
      this.m.delete(k);
      return undefined;
    }
    return e.v;
  }
  set(k: string, v: V): void {
    if (this.ttl <= 0) return;
    if (this.m.size >= this.max) this.m.clear();
    this.m.set(k, { v, t: performance.now() });
  }
  delete(k: string): void {
    this.m.delete(k);
  }
  deletePrefix(p: string): void {
    for (const k of this.m.keys()) if (k.startsWith(p)) this.m.delete(k);
  }
  clear(): void {
    this.m.clear();
  }
}

/** Immutable content by digest, bounded by total bytes (insertion-order eviction). */
class BytesCache {
  private readonly m = new Map<string, Buffer>();
  private total = 0;
  constructor(private readonly max: number) {}
  get(k: string): Buffer | undefined {
    return this.m.get(k);
  }
  set(k: string, b: Buffer): void {
    if (b.length > this.max / 4 || this.m.has(k)) return;
    this.m.set(k, b);
    this.total += b.length;
    for (const [key, v] of this.m) {
      if (this.total <= this.max) break;
      this.m.delete(key);
      this.total -= v.length;
    }
  }
  delete(k: string): void {
    const b = this.m.get(k);
    if (b) {
      this.total -= b.length;
      this.m.delete(k);
    }
  }
}

const UPLOAD_ID_RE = /^[a-zA-Z0-9-_]{8,64}$/;

function errMsg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Counts bytes and optionally hashes them; fails once more than `max` bytes arrive. */
class Meter extends Transform {
  n = 0;
  constructor(
    private readonly hash: Hash | undefined,
    private readonly max: number | undefined,
  ) {
    super({ highWaterMark: 4 * 1024 * 1024 });
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.n += chunk.length;
    if (this.max !== undefined && this.n > this.max) {
      cb(new OciError('SIZE_INVALID', `request body is longer than the declared ${this.max} bytes`));
      return;
    }
    this.hash?.update(chunk);
    cb(null, chunk);
  }
}

export class RegistryStore {
  readonly hooks: StoreHooks;
  readonly deleteEnabled: boolean;
  readonly mountWithoutFrom: boolean;
  private readonly listeners: EventListener[] = [];
  private readonly sessions = new Map<string, Session>();
  private readonly blobCache: TtlCache<number>;
  private readonly revCache: TtlCache<Revision>;
  private readonly tagCache: TtlCache<Digest>;
  private readonly bytes: BytesCache;

  constructor(
    readonly driver: StorageDriver,
    opts: StoreOptions = {},
  ) {
    this.hooks = opts.hooks ?? {};
    this.deleteEnabled = opts.deleteEnabled ?? true;
    this.mountWithoutFrom = opts.mountWithoutFrom ?? true;
    const ttl = opts.cacheTtlMs ?? 5000;
    this.blobCache = new TtlCache(ttl);
    this.revCache = new TtlCache(ttl);
    this.tagCache = new TtlCache(ttl);
    this.bytes = new BytesCache(opts.manifestCacheBytes ?? 32 * 1024 * 1024);
  }

  // ---- events -------------------------------------------------------------------------

  on(listener: EventListener): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  emit(e: RegistryEvent): void {
    for (const l of this.listeners) {
      try {
        l(e);
      } catch {
        // a listener's failure never fails a request
      }
    }
  }

  /** Drop every cached lookup (after something outside this process changed the store). */
  invalidateCaches(): void {
    this.blobCache.clear();
    this.revCache.clear();
    this.tagCache.clear();
  }

  // ---- repositories -------------------------------------------------------------------

  async repositoryExists(repo: string): Promise<boolean> {
    const names = await this.driver.list(P.repoPath(repo));
    return names.some((n) => (P.REPO_MARKERS as readonly string[]).includes(n));
  }

  /** Every repository name, sorted (walks /repositories). */
  async listRepositories(): Promise<string[]> {
    const out: string[] = [];
    const walk = async (rel: string): Promise<void> => {
      const names = await this.driver.list(rel ? `${P.REPOSITORIES}/${rel}` : P.REPOSITORIES);
      if (rel && names.some((n) => n === '_layers' || n === '_manifests')) out.push(rel);
      await Promise.all(names.filter((n) => !n.startsWith('_')).map((n) => walk(rel ? `${rel}/${n}` : n)));
    };
    await walk('');
    return out.sort(compareStrings);
  }

  // ---- blobs --------------------------------------------------------------------------

  /** Size of a blob linked in `repo`, or undefined. */
  async statBlob(repo: string, d: Digest): Promise<number | undefined> {
    const key = `${repo}@${d}`;
    const hit = this.blobCache.get(key);
    if (hit !== undefined) return hit;
    try {
      await this.driver.stat(P.layerLinkPath(repo, d));
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
    const size = await this.blobDataSize(d);
    if (size !== undefined) this.blobCache.set(key, size);
    return size;
  }

  /** Size of a blob in the global store (no repository check), or undefined. */
  async blobDataSize(d: Digest): Promise<number | undefined> {
    try {
      return (await this.driver.stat(P.blobDataPath(d))).size;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /** A local file for the blob's data when the driver has one (fast GET path). */
  blobLocalPath(d: Digest): string | undefined {
    return this.driver.localPath?.(P.blobDataPath(d));
  }

  async openBlob(repo: string, d: Digest, start = 0, end?: number): Promise<Readable> {
    try {
      return await this.driver.reader(P.blobDataPath(d), start, end);
    } catch (e) {
      if (isNotFound(e)) {
        this.blobCache.delete(`${repo}@${d}`);
        throw new OciError('BLOB_UNKNOWN', `blob ${d} is not in repository ${repo}`, { detail: { digest: d } });
      }
      throw e;
    }
  }

  /** Unlink a blob from a repository (its data stays until GC). */
  async deleteBlob(repo: string, d: Digest): Promise<void> {
    this.requireDelete();
    if ((await this.statBlob(repo, d)) === undefined) throw new OciError('BLOB_UNKNOWN', `blob ${d} is not in repository ${repo}`, { detail: { digest: d } });
    await this.driver.delete(P.layerLinkPath(repo, d));
    this.blobCache.delete(`${repo}@${d}`);
    this.emit({ type: 'blob.deleted', repo, digest: d });
  }

  /**
   * Link an existing blob into `repo` (cross-repository mount). With `from`, the blob must be
   * linked there; without, anywhere in the registry (when mountWithoutFrom). Returns the
   * size when mounted, undefined when the blob is not available (caller opens a session).
   */
  async mountBlob(repo: string, d: Digest, from?: string): Promise<number | undefined> {
    let size: number | undefined;
    if (from !== undefined) size = await this.statBlob(from, d);
    else if (this.mountWithoutFrom) size = await this.blobDataSize(d);
    if (size === undefined) return undefined;
    const already = await this.statBlob(repo, d);
    if (already === undefined) {
      await this.hooks.beforeBlobMount?.({ repo, digest: d, size, from });
      await this.driver.putContent(P.layerLinkPath(repo, d), d);
    }
    this.blobCache.set(`${repo}@${d}`, size);
    this.emit({ type: 'blob.mounted', repo, from, digest: d, size });
    return size;
  }

  /** Link a blob whose data is already in the global store into a repository. */
  async linkBlob(repo: string, d: Digest, size: number): Promise<void> {
    await this.driver.putContent(P.layerLinkPath(repo, d), d);
    this.blobCache.set(`${repo}@${d}`, size);
  }

  // ---- uploads ------------------------------------------------------------------------

  private skey(repo: string, id: string): string {
    return `${repo}\0${id}`;
  }

  async startUpload(repo: string): Promise<UploadState> {
    const id = randomUUID();
    const startedAt = new Date();
    // the session directory exists on disk from the start (survives a restart)
    await this.driver.putContent(P.uploadStartedAtPath(repo, id), startedAt.toISOString());
    const w = await this.driver.writer(P.uploadDataPath(repo, id), false);
    await w.commit();
    this.sessions.set(this.skey(repo, id), { hash: createHash('sha256'), size: 0, startedAt, busy: false });
    return { repo, id, size: 0, startedAt };
  }

  private async session(repo: string, id: string): Promise<Session> {
    if (!UPLOAD_ID_RE.test(id)) throw new OciError('BLOB_UPLOAD_UNKNOWN', `upload ${id} is not known`, { detail: { uuid: id } });
    const key = this.skey(repo, id);
    const s = this.sessions.get(key);
    if (s) return s;
    // not in memory (restart): the data on disk is the state; the hash is recomputed on PUT
    let size: number;
    try {
      size = (await this.driver.stat(P.uploadDataPath(repo, id))).size;
    } catch (e) {
      if (isNotFound(e)) throw new OciError('BLOB_UPLOAD_UNKNOWN', `upload ${id} is not known in ${repo}`, { detail: { uuid: id } });
      throw e;
    }
    let startedAt = new Date();
    try {
      startedAt = new Date((await this.driver.getContent(P.uploadStartedAtPath(repo, id))).toString('utf8').trim());
    } catch {}
    const again = this.sessions.get(key);
    if (again) return again;
    const fresh: Session = { hash: undefined, size, startedAt, busy: false };
    this.sessions.set(key, fresh);
    return fresh;
  }

  async getUpload(repo: string, id: string): Promise<UploadState> {
    const s = await this.session(repo, id);
    return { repo, id, size: s.size, startedAt: s.startedAt };
  }

  /**
   * Append a request body to an upload. `start` (from Content-Range) must equal the current
   * size, else RANGE_INVALID (416); `length` (Content-Length) bounds the body.
   */
  async appendUpload(
    repo: string,
    id: string,
    body: Readable,
    o: { start?: number | undefined; length?: number | undefined; signal?: AbortSignal | undefined } = {},
  ): Promise<UploadState> {
    const s = await this.session(repo, id);
    if (s.busy) throw new OciError('RANGE_INVALID', `upload ${id} is receiving another request`, { detail: { uuid: id } });
    if (o.start !== undefined && o.start !== s.size)
      throw new OciError('RANGE_INVALID', `upload ${id} is at offset ${s.size}, the request starts at ${o.start}`, { detail: { uuid: id, offset: s.size } });
    s.busy = true;
    try {
      const w = await this.driver.writer(P.uploadDataPath(repo, id), true);
      if (w.size !== s.size) {
        // memory and disk disagree (crash mid-write): the disk wins, the hash is recomputed later
        s.hash = undefined;
        if (o.start !== undefined && o.start !== w.size) {
          await w.cancel();
          s.size = w.size;
          throw new OciError('RANGE_INVALID', `upload ${id} is at offset ${w.size}, the request starts at ${o.start}`, { detail: { uuid: id, offset: w.size } });
        }
        s.size = w.size;
      }
      const meter = new Meter(s.hash, o.length);
      try {
        await pipeline(body, meter, w, o.signal ? { signal: o.signal } : {});
        await w.commit();
      } catch (e) {
        // what reached the file stays (the client may resume from the reported offset); the live hash is now unreliable
        s.hash = undefined;
        s.size = w.size;
        await w.commit().catch(() => {});
        throw e;
      }
      s.size = w.size;
      if (o.length !== undefined && meter.n !== o.length) {
        s.hash = undefined;
        throw new OciError('SIZE_INVALID', `request body has ${meter.n} bytes, Content-Length said ${o.length}`);
      }
      this.emit({ type: 'upload.bytes', repo, id, bytes: meter.n });
      return { repo, id, size: s.size, startedAt: s.startedAt };
    } finally {
      s.busy = false;
    }
  }

  /**
   * Complete an upload: the data must hash to `digest` (else DIGEST_INVALID, and the session
   * is removed), then it moves into the blob store and is linked into `repo`.
   */
  async finishUpload(
    repo: string,
    id: string,
    digest: Digest,
    body?: { stream: Readable; length?: number | undefined; signal?: AbortSignal | undefined },
  ): Promise<{ digest: Digest; size: number }> {
    if (body) await this.appendUpload(repo, id, body.stream, { length: body.length, signal: body.signal });
    const s = await this.session(repo, id);
    if (s.busy) throw new OciError('BLOB_UPLOAD_INVALID', `upload ${id} is receiving another request`, { detail: { uuid: id } });
    s.busy = true;
    try {
      const alg = digestAlgorithm(digest);
      const data = P.uploadDataPath(repo, id);
      let actual: Digest;
      if (s.hash && alg === 'sha256') actual = `sha256:${s.hash.digest('hex')}` as Digest;
      else actual = await this.hashFile(data, alg);
      s.hash = undefined;
      if (actual !== digest) {
        await this.dropSession(repo, id);
        throw new OciError('DIGEST_INVALID', `upload content has digest ${actual}, not ${digest}`, { detail: { expected: digest, actual } });
      }
      const size = s.size;
      await this.hooks.beforeBlobCommit?.({ repo, digest, size });
      await this.driver.move(data, P.blobDataPath(digest));
      await this.driver.putContent(P.layerLinkPath(repo, digest), digest);
      await this.dropSession(repo, id);
      this.blobCache.set(`${repo}@${digest}`, size);
      this.emit({ type: 'blob.pushed', repo, digest, size, durationMs: Date.now() - s.startedAt.getTime() });
      return { digest, size };
    } finally {
      s.busy = false;
    }
  }

  private async hashFile(path: string, alg: DigestAlgorithm): Promise<Digest> {
    const h = createHash(alg);
    const r = await this.driver.reader(path);
    for await (const c of r) h.update(c as Buffer);
    return `${alg}:${h.digest('hex')}` as Digest;
  }

  private async dropSession(repo: string, id: string): Promise<void> {
    this.sessions.delete(this.skey(repo, id));
    await this.driver.delete(P.uploadDir(repo, id));
  }

  async cancelUpload(repo: string, id: string): Promise<void> {
    await this.session(repo, id);
    await this.dropSession(repo, id);
  }

  /** Upload session ids of a repository (on disk). */
  async listUploads(repo: string): Promise<string[]> {
    return (await this.driver.list(P.uploadsDir(repo))).filter((n) => UPLOAD_ID_RE.test(n));
  }

  /** Remove upload sessions started before `olderThan` (ms since epoch) in every repository. */
  async purgeUploads(olderThan: number): Promise<number> {
    let n = 0;
    for (const repo of await this.listRepositoriesWithUploads()) {
      for (const id of await this.listUploads(repo)) {
        const s = this.sessions.get(this.skey(repo, id));
        if (s?.busy) continue;
        let started: number;
        try {
          started = s?.startedAt.getTime() ?? new Date((await this.driver.getContent(P.uploadStartedAtPath(repo, id))).toString('utf8').trim()).getTime();
        } catch {
          started = (await this.driver.stat(P.uploadDir(repo, id)).catch(() => undefined))?.modTime.getTime() ?? 0;
        }
        if (!(started >= olderThan)) {
          await this.dropSession(repo, id);
          this.emit({ type: 'upload.purged', repo, id });
          n++;
        }
      }
    }
    return n;
  }

  private async listRepositoriesWithUploads(): Promise<string[]> {
    const out: string[] = [];
    const walk = async (rel: string): Promise<void> => {
      const names = await this.driver.list(rel ? `${P.REPOSITORIES}/${rel}` : P.REPOSITORIES);
      if (rel && names.includes('_uploads')) out.push(rel);
      await Promise.all(names.filter((n) => !n.startsWith('_')).map((n) => walk(rel ? `${rel}/${n}` : n)));
    };
    await walk('');
    return out;
  }

  /** Monolithic upload (POST ?digest= with a body): stream, verify, commit. */
  async putBlob(repo: string, digest: Digest, stream: Readable, o: { length?: number | undefined; signal?: AbortSignal | undefined } = {}): Promise<{ digest: Digest; size: number }> {
    const up = await this.startUpload(repo);
    try {
      return await this.finishUpload(repo, up.id, digest, { stream, length: o.length, signal: o.signal });
    } catch (e) {
      await this.dropSession(repo, up.id).catch(() => {});
      throw e;
    }
  }

  // ---- manifests ----------------------------------------------------------------------

  private async revision(repo: string, d: Digest): Promise<Revision | undefined> {
    const key = `${repo}@${d}`;
    const hit = this.revCache.get(key);
    if (hit) return hit;
    let raw: Buffer;
    try {
      raw = await this.driver.getContent(P.manifestRevisionPath(repo, d));
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
    const rev = JSON.parse(raw.toString('utf8')) as Revision;
    this.revCache.set(key, rev);
    return rev;
  }

  /** The digest a tag points to, or undefined. */
  async resolveTag(repo: string, tag: string): Promise<Digest | undefined> {
    const key = `${repo}:${tag}`;
    const hit = this.tagCache.get(key);
    if (hit) return hit;
    let raw: Buffer;
    try {
      raw = await this.driver.getContent(P.tagPath(repo, tag));
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
    const d = raw.toString('utf8').trim() as Digest;
    this.tagCache.set(key, d);
    return d;
  }

  /** Manifest metadata by tag or digest, or undefined (a mirror overrides this to consult its upstreams). */
  statManifest(repo: string, reference: string): Promise<ManifestInfo | undefined> {
    return this.statManifestLocal(repo, reference);
  }

  /** Manifest bytes and metadata by tag or digest, or undefined (a mirror overrides this to consult its upstreams). */
  getManifest(repo: string, reference: string): Promise<(ManifestInfo & { bytes: Buffer }) | undefined> {
    return this.getManifestLocal(repo, reference);
  }

  /** Manifest metadata from this registry's own storage only (GC, scrub, the mirror's cache). */
  async statManifestLocal(repo: string, reference: string): Promise<ManifestInfo | undefined> {
    const d = isDigest(reference) ? reference : await this.resolveTag(repo, reference);
    if (!d) return undefined;
    const rev = await this.revision(repo, d);
    if (!rev) return undefined;
    return { digest: d, mediaType: rev.mediaType, size: rev.size, subject: rev.subject, artifactType: rev.artifactType };
  }

  /** Manifest bytes and metadata from this registry's own storage only. */
  async getManifestLocal(repo: string, reference: string): Promise<(ManifestInfo & { bytes: Buffer }) | undefined> {
    const info = await this.statManifestLocal(repo, reference);
    if (!info) return undefined;
    let bytes = this.bytes.get(info.digest);
    if (!bytes) {
      try {
        bytes = await this.driver.getContent(P.blobDataPath(info.digest));
      } catch (e) {
        if (isNotFound(e)) return undefined;
        throw e;
      }
      this.bytes.set(info.digest, bytes);
    }
    return { ...info, bytes };
  }

  /**
   * Store a manifest under a tag or digest reference. Validates the body against its media
   * type (MANIFEST_INVALID), the digest reference (DIGEST_INVALID), the tag (TAG_INVALID) and
   * that every referenced blob and child manifest is in the repository (MANIFEST_BLOB_UNKNOWN).
   */
  async putManifest(repo: string, reference: string, bytes: Buffer, contentType: string | undefined, o: PutManifestOptions = {}): Promise<ManifestInfo> {
    let tag: string | undefined;
    let digest: Digest;
    if (reference.includes(':')) {
      if (!isDigest(reference)) throw new OciError('DIGEST_INVALID', `invalid digest reference ${JSON.stringify(reference)}`);
      digest = digestOf(bytes, digestAlgorithm(reference));
      if (digest !== reference) throw new OciError('DIGEST_INVALID', `manifest body has digest ${digest}, not ${reference}`, { detail: { expected: reference, actual: digest } });
    } else {
      if (!isValidTag(reference)) throw new OciError('TAG_INVALID', `invalid tag ${JSON.stringify(reference)}`, { detail: { tag: reference } });
      tag = reference;
      digest = digestOf(bytes);
    }
    const ct = contentType?.split(';')[0]?.trim();
    let parsed;
    try {
      parsed = parseManifest(bytes, ct || undefined);
    } catch (e) {
      if (e instanceof ValidationError) throw new OciError('MANIFEST_INVALID', `manifest invalid: ${e.message}`, { cause: e });
      throw e;
    }
    // every referenced blob / child manifest must be in the repository
    const missing: Descriptor[] = [];
    if (o.cache) {
      // a pull-through mirror caches what its upstream serves: blobs arrive later, on demand
    } else if (parsed.kind === 'manifest') {
      const blobs = [parsed.doc.config, ...parsed.doc.layers];
      await Promise.all(
        blobs.map(async (b) => {
          if (b.urls?.length) return; // foreign/non-distributable layers live elsewhere
          if ((await this.statBlob(repo, b.digest)) === undefined) missing.push(b);
        }),
      );
    } else {
      await Promise.all(
        parsed.doc.manifests.map(async (m) => {
          if (!(await this.revision(repo, m.digest))) missing.push(m);
        }),
      );
    }
    if (missing.length) {
      const m = missing[0]!;
      throw new OciError('MANIFEST_BLOB_UNKNOWN', `manifest references ${m.digest}, which is not in repository ${repo}${missing.length > 1 ? ` (and ${missing.length - 1} more)` : ''}`, {
        detail: { digest: m.digest, missing: missing.map((x) => x.digest) },
      });
    }
    const doc = parsed.doc;
    const subject = doc.subject?.digest;
    const artifactType = doc.artifactType ?? (parsed.kind === 'manifest' ? parsed.doc.config.mediaType : undefined);
    const previous = tag ? await this.resolveTag(repo, tag) : undefined;
    if (!o.cache) await this.hooks.beforeManifestPut?.({ repo, digest, tag, previous, mediaType: parsed.mediaType, size: bytes.length });

    const rev: Revision = { mediaType: parsed.mediaType, size: bytes.length };
    if (subject) rev.subject = subject;
    if (artifactType) rev.artifactType = artifactType;
    if (doc.annotations && subject) rev.annotations = doc.annotations;

    if ((await this.blobDataSize(digest)) !== bytes.length) await this.driver.putContent(P.blobDataPath(digest), bytes);
    await this.driver.putContent(P.manifestRevisionPath(repo, digest), JSON.stringify(rev));
    this.revCache.set(`${repo}@${digest}`, rev);
    this.bytes.set(digest, bytes);
    if (subject) {
      const desc: Descriptor = { mediaType: parsed.mediaType, digest, size: bytes.length };
      if (artifactType) desc.artifactType = artifactType;
      if (doc.annotations) desc.annotations = doc.annotations;
      await this.driver.putContent(P.referrerPath(repo, subject, digest), JSON.stringify(desc));
    }
    if (tag) {
      await this.driver.putContent(P.tagPath(repo, tag), digest);
      this.tagCache.set(`${repo}:${tag}`, digest);
    }
    this.emit({ type: 'manifest.pushed', repo, digest, tag, mediaType: parsed.mediaType, size: bytes.length, subject });
    return { digest, mediaType: parsed.mediaType, size: bytes.length, subject, artifactType };
  }

  /** Remove a tag (the manifest stays). */
  async deleteTag(repo: string, tag: string): Promise<void> {
    this.requireDelete();
    const d = await this.resolveTag(repo, tag);
    if (!d) throw new OciError('MANIFEST_UNKNOWN', `tag ${tag} is not in repository ${repo}`, { detail: { tag } });
    await this.hooks.beforeTagDelete?.({ repo, tag, digest: d });
    await this.driver.delete(P.tagPath(repo, tag));
    this.tagCache.delete(`${repo}:${tag}`);
    this.emit({ type: 'tag.deleted', repo, tag, digest: d });
  }

  /** Remove a manifest revision, every tag pointing to it, and its referrer entry. */
  async deleteManifest(repo: string, d: Digest): Promise<void> {
    this.requireDelete();
    const rev = await this.revision(repo, d);
    if (!rev) throw new OciError('MANIFEST_UNKNOWN', `manifest ${d} is not in repository ${repo}`, { detail: { digest: d } });
    const tags = await this.tagsPointingTo(repo, d);
    for (const tag of tags) await this.hooks.beforeTagDelete?.({ repo, tag, digest: d });
    for (const tag of tags) {
      await this.driver.delete(P.tagPath(repo, tag));
      this.tagCache.delete(`${repo}:${tag}`);
      this.emit({ type: 'tag.deleted', repo, tag, digest: d });
    }
    if (rev.subject) await this.driver.delete(P.referrerPath(repo, rev.subject, d));
    await this.driver.delete(P.manifestRevisionPath(repo, d));
    this.revCache.delete(`${repo}@${d}`);
    this.emit({ type: 'manifest.deleted', repo, digest: d });
  }

  async tagsPointingTo(repo: string, d: Digest): Promise<string[]> {
    const out: string[] = [];
    for (const tag of (await this.listTags(repo)) ?? []) if ((await this.resolveTag(repo, tag)) === d) out.push(tag);
    return out;
  }

  /** Tags of a repository in lexical order; undefined when the repository does not exist. */
  async listTags(repo: string): Promise<string[] | undefined> {
    const tags = await this.driver.list(P.tagsDir(repo));
    if (tags.length === 0 && !(await this.repositoryExists(repo))) return undefined;
    return tags.filter((t) => isValidTag(t)).sort(compareStrings);
  }

  /**
   * The tags a client's `GET /v2/<name>/tags/list` sees (sorted; undefined = unknown repository).
   * The stored tags here; the pull-through mirror asks its upstreams. `last` is the client's
   * page cursor (a continuation may reuse the list its first page came from).
   */
  async tagList(repo: string, _o: { last?: string | undefined } = {}): Promise<string[] | undefined> {
    return this.listTags(repo);
  }

  /** Manifest digests stored in a repository (revisions). */
  async listManifests(repo: string): Promise<Digest[]> {
    const out: Digest[] = [];
    for (const alg of await this.driver.list(P.manifestRevisionsDir(repo)))
      for (const hex of await this.driver.list(`${P.manifestRevisionsDir(repo)}/${alg}`)) {
        const d = `${alg}:${hex}`;
        if (isDigest(d)) out.push(d);
      }
    return out;
  }

  /** Blob digests linked in a repository. */
  async listBlobLinks(repo: string): Promise<Digest[]> {
    const out: Digest[] = [];
    for (const alg of await this.driver.list(P.layersDir(repo)))
      for (const hex of await this.driver.list(`${P.layersDir(repo)}/${alg}`)) {
        const d = `${alg}:${hex}`;
        if (isDigest(d)) out.push(d);
      }
    return out;
  }

  /** Every blob in the global store (for GC and scrub). */
  async *listBlobs(): AsyncIterable<Digest> {
    for (const alg of await this.driver.list(P.BLOBS))
      for (const pre of await this.driver.list(`${P.BLOBS}/${alg}`))
        for (const hex of await this.driver.list(`${P.BLOBS}/${alg}/${pre}`)) {
          const d = `${alg}:${hex}`;
          if (isDigest(d)) yield d;
        }
  }

  /** Drop every cached fact about a blob (its data was moved away: scrub quarantine). */
  forget(d: Digest): void {
    this.bytes.delete(d);
    this.blobCache.clear();
    this.revCache.clear();
  }

  /** Remove a blob's data from the global store (GC only: links are not checked). */
  async deleteBlobData(d: Digest): Promise<void> {
    await this.driver.delete(P.blobDataPath(d));
    this.bytes.delete(d);
    this.blobCache.clear();
  }

  // ---- referrers ----------------------------------------------------------------------

  /** Descriptors of the manifests in `repo` whose subject is `subject`, optionally filtered. */
  async referrers(repo: string, subject: Digest, artifactType?: string): Promise<Descriptor[]> {
    const dir = P.referrersDir(repo, subject);
    const names = await this.driver.list(dir);
    const out: Descriptor[] = [];
    await Promise.all(
      names.map(async (n) => {
        try {
          const desc = JSON.parse((await this.driver.getContent(`${dir}/${n}`)).toString('utf8')) as Descriptor;
          if (artifactType === undefined || desc.artifactType === artifactType) out.push(desc);
        } catch (e) {
          if (!isNotFound(e)) throw new Error(`referrer entry ${dir}/${n}: ${errMsg(e)}`, { cause: e });
        }
      }),
    );
    return out.sort((a, b) => compareStrings(a.digest, b.digest));
  }

  private requireDelete(): void {
    if (!this.deleteEnabled) throw new OciError('UNSUPPORTED', 'deletion is disabled on this registry (storage.delete.enabled: false)');
  }
}

export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
