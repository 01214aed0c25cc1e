/**
 * `--cache-to` / `--cache-from` a registry repository: build cache entries as OCI artifacts.
 *
 * One artifact per step key, tagged `tsbuild-cache-<hex of the key>` (one manifest GET answers a
 * lookup; no index to rewrite and race on when several CI jobs push to the same repository):
 *
 *   { schemaVersion: 2, mediaType: application/vnd.oci.image.manifest.v1+json,
 *     artifactType: application/vnd.tsimage.buildcache.step.v1+json,
 *     config: the OCI empty descriptor ({}),
 *     layers: [the step's layer blob, annotated with its diffID] (or the empty descriptor),
 *     annotations: { dev.tsimage.cache.key, .parent, .instruction, .result (history/extra JSON),
 *                    org.opencontainers.image.created } }
 *
 * The layer is the same blob the image uses, so pushing the image and the cache shares blobs,
 * and a registry that already has the layer (HEAD) is not sent it again. Importing verifies the
 * manifest's key annotation and every blob's digest and size while streaming into the local store.
 * All registry I/O goes through src/copy's docker transport (one registry client in the project),
 * loaded lazily so a build without --cache-from/--cache-to does not load undici.
 */
import { Readable } from 'node:stream';
import {
  digestOf,
  EMPTY_JSON_DIGEST,
  MediaTypes,
  parseManifest,
  TsimageError,
  type ContentStore,
  type Descriptor,
  type Digest,
  type Io,
  type MediaType,
} from '../oci/index.js';
import type { ImageDestination, ImageSource, OpenOptions } from '../copy/index.js';
import type { BuildCache, CacheEntry, CacheResult } from './cache.js';

export const CACHE_ARTIFACT_TYPE = 'application/vnd.tsimage.buildcache.step.v1+json';
const A = {
  key: 'dev.tsimage.cache.key',
  parent: 'dev.tsimage.cache.parent',
  instruction: 'dev.tsimage.cache.instruction',
  result: 'dev.tsimage.cache.result',
  diffID: 'dev.tsimage.cache.diffid',
  created: 'org.opencontainers.image.created',
};

/** The tag of a cache entry in the cache repository. */
export function cacheTag(key: string): string {
  const m = /^sha256:([a-f0-9]{64})$/.exec(key);
  if (!m) throw new TsimageError(`invalid cache key ${JSON.stringify(key)}`);
  return `tsbuild-cache-${m[1]}`;
}

const EMPTY: Descriptor = { mediaType: MediaTypes.ociEmpty as MediaType, digest: EMPTY_JSON_DIGEST, size: 2 };

/** The artifact manifest of an entry (canonical bytes: same entry, same digest). */
export function cacheManifest(entry: CacheEntry): { bytes: Buffer; digest: Digest; layer?: Descriptor } {
  const layer: Descriptor | undefined = entry.result.layer
    ? {
        mediaType: entry.result.layer.mediaType as MediaType,
        digest: entry.result.layer.digest as Digest,
        size: entry.result.layer.size,
        annotations: { [A.diffID]: entry.result.layer.diffID },
      }
    : undefined;
  const rest: Omit<CacheResult, 'layer'> = {};
  if (entry.result.history) rest.history = entry.result.history;
  if (entry.result.extra) rest.extra = entry.result.extra;
  const doc = {
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    artifactType: CACHE_ARTIFACT_TYPE,
    config: EMPTY,
    layers: [layer ?? EMPTY],
    annotations: {
      [A.key]: entry.key,
      [A.parent]: entry.parent ?? '',
      [A.instruction]: entry.instruction,
      [A.result]: JSON.stringify(rest),
      [A.created]: entry.created,
    },
  };
  const bytes = Buffer.from(JSON.stringify(doc));
  const out: { bytes: Buffer; digest: Digest; layer?: Descriptor } = { bytes, digest: digestOf(bytes) };
  if (layer) out.layer = layer;
  return out;
}

export interface RegistryCacheOptions extends OpenOptions {
  /** Parallel pushes (default 4). */
  jobs?: number | undefined;
}

/**
 * A cache repository in a registry (`host/repo`, no tag). `fetch` on a local miss (--cache-from),
 * `push` after a build (--cache-to).
 */
export class RegistryCache {
  private emptyPushed = false;
  private constructor(
    readonly repo: string,
    private readonly src: ImageSource,
    private readonly dst: () => Promise<ImageDestination>,
    private readonly opts: RegistryCacheOptions,
  ) {}

  static async open(repo: string, opts: RegistryCacheOptions = {}): Promise<RegistryCache> {
    const r = repo.replace(/^docker:\/\//, '');
    const { dockerTransport } = await import('../copy/index.js');
    const name = dockerTransport.parse('//' + r);
    const ref = (name as unknown as { ref?: { tag?: string; digest?: string } }).ref;
    if (ref?.digest || (ref?.tag && r.slice(r.lastIndexOf('/')).includes(':')))
      throw new TsimageError(`cache repository ${repo}: give a repository without a tag or digest`);
    const src = await dockerTransport.source(name, opts);
    let d: ImageDestination | undefined;
    return new RegistryCache(r, src, async () => (d ??= await dockerTransport.destination(name, opts)), opts);
  }

  /** Look an entry up in the registry; on a hit, bring its layer into `store` and record it in `cache`. */
  async fetch(key: string, cache: BuildCache, store: ContentStore, io: Io = {}): Promise<CacheEntry | undefined> {
    if (!this.src.manifestByRef) throw new TsimageError(`${this.repo}: the transport cannot look up tags`);
    const m = await this.src.manifestByRef(cacheTag(key), io);
    if (!m) return undefined;
    const p = parseManifest(m.bytes, m.mediaType);
    if (p.kind !== 'manifest') throw new TsimageError(`${this.repo}:${cacheTag(key)} is not a cache entry (an index)`);
    const doc = p.doc;
    const ann = doc.annotations ?? {};
    if (doc.artifactType !== CACHE_ARTIFACT_TYPE || ann[A.key] !== key)
      throw new TsimageError(`${this.repo}:${cacheTag(key)} is not the cache entry of ${key} (artifactType ${doc.artifactType ?? 'none'}, key ${ann[A.key] ?? 'none'})`);
    const l = doc.layers[0];
    const result: CacheResult = {};
    try {
      Object.assign(result, JSON.parse(ann[A.result] ?? '{}') as CacheResult);
    } catch {
      throw new TsimageError(`${this.repo}:${cacheTag(key)}: invalid ${A.result} annotation`);
    }
    if (l && l.mediaType !== MediaTypes.ociEmpty) {
      const diffID = l.annotations?.[A.diffID];
      if (!diffID || !/^sha256:[a-f0-9]{64}$/.test(diffID)) throw new TsimageError(`${this.repo}:${cacheTag(key)}: the layer has no diffID annotation`);
      if (!(await store.stat(l.digest))) {
        const body = await this.src.blob(l, io);
        // the store verifies digest and size while it writes; nothing appears under the digest otherwise
        await store.ingest({ digest: l.digest, size: l.size, mediaType: l.mediaType }, body, { signal: io.signal });
      }
      result.layer = { digest: l.digest, diffID, size: l.size, mediaType: l.mediaType };
    }
    const parent = ann[A.parent] || undefined;
    const e = await cache.put(key, { parent, instruction: ann[A.instruction] ?? '', result });
    return e;
  }

  /** Push entries (their layers from `store`, then the artifact manifests). */
  async push(entries: CacheEntry[], store: ContentStore, io: Io = {}): Promise<{ pushed: number; blobs: number }> {
    const dst = await this.dst();
    let blobs = 0;
    if (!this.emptyPushed) {
      const r = await dst.tryReuse(EMPTY, io);
      if (r.kind === 'absent') await dst.putBlob(EMPTY, Readable.from([Buffer.from('{}')]), io);
      this.emptyPushed = true;
    }
    const jobs = Math.max(1, this.opts.jobs ?? 4);
    let i = 0;
    const seenBlobs = new Map<string, Promise<void>>();
    const one = async (e: CacheEntry) => {
      const m = cacheManifest(e);
      if (m.layer) {
        const l = m.layer;
        let p = seenBlobs.get(l.digest);
        if (!p) {
          p = (async () => {
            const r = await dst.tryReuse(l, io);
            if (r.kind !== 'absent') return;
            if (!(await store.stat(l.digest))) throw new TsimageError(`cache entry ${e.key} (${e.instruction}): layer ${l.digest} is not in the local store`);
            await dst.putBlob(l, await store.open(l.digest, io), io);
            blobs++;
          })();
          seenBlobs.set(l.digest, p);
        }
        await p;
      }
      await dst.putManifest({ bytes: m.bytes, mediaType: MediaTypes.ociManifest as MediaType, digest: m.digest }, cacheTag(e.key), io);
    };
    const worker = async () => {
      while (i < entries.length) await one(entries[i++]!);
    };
    await Promise.all(Array.from({ length: Math.min(jobs, entries.length) }, worker));
    await dst.commit(io);
    return { pushed: entries.length, blobs };
  }

  async close(): Promise<void> {
    await this.src.close();
  }
}

/**
 * What a build does with `--cache-from` (several repositories, tried in order) and `--cache-to`
 * (one repository): `lookup` on a local miss, `record` every step key the build produced or hit,
 * `flush` at the end (pushes the recorded entries). Registries are opened on first use.
 */
export class RemoteCaches {
  private readonly from = new Map<string, Promise<RegistryCache>>();
  private to: Promise<RegistryCache> | undefined;
  private readonly keys = new Set<string>();
  constructor(
    readonly cacheFrom: readonly string[],
    readonly cacheTo: string | undefined,
    private readonly opts: RegistryCacheOptions = {},
  ) {}

  get enabled(): boolean {
    return this.cacheFrom.length > 0 || this.cacheTo !== undefined;
  }

  private open(repo: string): Promise<RegistryCache> {
    let p = this.from.get(repo);
    if (!p) {
      p = RegistryCache.open(repo, this.opts);
      this.from.set(repo, p);
    }
    return p;
  }

  /** On a local miss: the first --cache-from repository that has the key (entry imported into cache+store). */
  async lookup(key: string, cache: BuildCache, store: ContentStore, io: Io = {}): Promise<CacheEntry | undefined> {
    for (const repo of this.cacheFrom) {
      const rc = await this.open(repo);
      const e = await rc.fetch(key, cache, store, io);
      if (e) return e;
    }
    return undefined;
  }

  /** Remember a step key of this build (a hit or a new entry) for --cache-to. */
  record(key: string): void {
    if (this.cacheTo !== undefined) this.keys.add(key);
  }

  /** Push the recorded entries to --cache-to (no-op without it). */
  async flush(cache: BuildCache, store: ContentStore, io: Io = {}): Promise<{ pushed: number; blobs: number }> {
    if (this.cacheTo === undefined || this.keys.size === 0) return { pushed: 0, blobs: 0 };
    this.to ??= this.open(this.cacheTo);
    const rc = await this.to;
    const entries: CacheEntry[] = [];
    for (const k of this.keys) {
      const e = await cache.get(k, { touch: false });
      if (e) entries.push(e);
    }
    return rc.push(entries, store, io);
  }

  async close(): Promise<void> {
    for (const p of this.from.values()) await (await p.catch(() => undefined))?.close();
  }
}
