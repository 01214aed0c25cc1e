/**
 * The pull-through mirror: a ProductionStore whose mirrored repositories (per namespace,
 * mirror/config.ts) fill themselves from upstream registries, tried in order.
 *
 * - Manifests by digest: served from the cache, else fetched, verified against the digest,
 *   cached. By tag: served from the cache while younger than tagTtl; then revalidated with a
 *   HEAD upstream (a changed digest is fetched and the tag moved). When every upstream fails
 *   (connection refused, timeout, 5xx, 429, auth failure) a cached tag is served stale and a
 *   warning is logged (`tsregistry_mirror_requests_total{result="stale"}`); with nothing
 *   cached the client gets 503 UNAVAILABLE naming the upstream error. An upstream 404 is
 *   MANIFEST_UNKNOWN (the cache is left as it is).
 * - Blobs: HEAD asks the upstream for the size without downloading. A GET of an uncached blob
 *   starts one fill (mirror/fill.ts): the upstream body goes into an upload file at the
 *   upstream's pace, and every client asking for that digest meanwhile, whichever repository it
 *   asked in, reads the file as it grows (so N concurrent pulls = one upstream GET per blob, no
 *   client waits for the whole blob, none is buffered in memory). The digest is verified before
 *   the last byte goes out; then the file moves into the blob store and is linked into every
 *   repository that asked. A failed fill (upstream gone, wrong digest) breaks every client's
 *   response (or answers 503 when it failed before the first byte), leaves nothing in the cache,
 *   and the next request starts a new fill. A client that goes away does not stop the fill.
 *   Ranged GETs of an uncached blob are read from a fill in progress, else passed through
 *   without caching. Concurrent manifest lookups (and blob HEADs) share one upstream request.
 * - tags/list (as distribution's proxy): the upstreams' list (every Link page; the union when
 *   several upstreams answer), paginated here with the client's n/last; the cached tags when no
 *   upstream can answer (logged, `result="stale"`) or none knows the repository.
 * - Clients cannot push into mirrored repositories (405 UNSUPPORTED); DELETE evicts.
 */
import { createHash, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { OciError, digestAlgorithm, digestOf, isDigest, type Digest } from '../../oci/index.js';
import type { FileWriter, StorageDriver } from '../driver.js';
import type { GcCoordinator } from '../gc.js';
import type { Logger } from '../log.js';
import type { RegistryMetrics } from '../metrics.js';
import * as P from '../paths.js';
import { ProductionStore } from '../prod.js';
import { compareStrings, type ManifestInfo, type PutManifestOptions, type StoreOptions } from '../store.js';
import type { MirrorNamespace, MirrorSettings } from './config.js';
import { BlobFill } from './fill.js';
import { Upstream, UpstreamError, upstreamHeader, type UpstreamResponse } from './upstream.js';

const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

const MAX_MANIFEST = 4 * 1024 * 1024;
/** How long a client's continuation pages of tags/list reuse the upstream list of its first page. */
const TAG_LIST_REUSE_MS = 60_000;

type Route = { ns: MirrorNamespace; upstreams: Upstream[]; remote: string };

export class MirrorStore extends ProductionStore {
  private readonly namespaces: { ns: MirrorNamespace; upstreams: Upstream[] }[];
  /** repo:tag -> when it was last confirmed upstream (ms). */
  private readonly validatedAt = new Map<string, number>();
  /** repo@digest -> size, learnt from an upstream HEAD (blob not cached yet). */
  private readonly remoteSizes = new Map<string, number>();
  /** Blob downloads in progress, by digest: every request for one joins it. */
  private readonly fills = new Map<Digest, BlobFill>();
  /** Tag lists the upstreams gave lately, by repository (continuation pages reuse them). */
  private readonly tagLists = new Map<string, { tags: string[]; at: number }>();
  /** Upstream lookups in progress (manifests by repo+reference, blob HEADs by repo@digest). */
  private readonly flights = new Map<string, Promise<unknown>>();

  constructor(
    driver: StorageDriver,
    opts: StoreOptions,
    gc: GcCoordinator,
    readonly settings: MirrorSettings,
    private readonly logger?: Logger,
    private readonly metrics?: RegistryMetrics,
  ) {
    super(driver, opts, gc);
    // longest prefix first
    this.namespaces = [...settings.namespaces]
      .sort((a, b) => b.prefix.length - a.prefix.length)
      .map((ns) => ({ ns, upstreams: ns.upstreams.map((u) => new Upstream(u, settings.timeout)) }));
  }

  async close(): Promise<void> {
    await Promise.all(this.namespaces.flatMap((n) => n.upstreams.map((u) => u.close())));
  }

  /** The namespace mirroring `repo` and the repository name upstream, or undefined. */
  route(repo: string): Route | undefined {
    for (const n of this.namespaces) {
      if (n.ns.prefix === '') return { ...n, remote: repo };
      if (repo.startsWith(`${n.ns.prefix}/`)) return { ...n, remote: repo.slice(n.ns.prefix.length + 1) };
    }
    return undefined;
  }

  private count(kind: 'manifest' | 'blob' | 'tags', result: string): void {
    this.metrics?.mirror.inc({ kind, result });
  }

  /**
   * Ask each upstream in order: the first 2xx wins; 404s fall through to the next; when none
   * has it, 'missing' if at least one said 404 and none failed, else the last failure is thrown.
   */
  private async first(r: Route, ask: (u: Upstream) => Promise<UpstreamResponse>): Promise<{ res: UpstreamResponse; upstream: Upstream } | 'missing'> {
    let failure: UpstreamError | undefined;
    for (const u of r.upstreams) {
      try {
        const res = await ask(u);
        if (res.status >= 200 && res.status < 300) return { res, upstream: u };
        await res.body.dump().catch(() => {});
      } catch (e) {
        if (!(e instanceof UpstreamError)) throw e;
        failure = e;
        this.logger?.warn('mirror: upstream failed', { upstream: u.base, error: e.message, status: e.status });
      }
    }
    if (failure) throw failure;
    return 'missing';
  }

  private unavailable(repo: string, what: string, e: UpstreamError): OciError {
    return new OciError(e.status === 429 ? 'TOOMANYREQUESTS' : 'UNAVAILABLE', `mirror ${repo}: ${what} is not cached and no upstream could serve it: ${e.message}`);
  }

  // ---- manifests ------------------------------------------------------------------------

  override async statManifest(repo: string, reference: string): Promise<ManifestInfo | undefined> {
    const r = this.route(repo);
    if (!r) return this.statManifestLocal(repo, reference);
    return this.flight(`manifest ${repo}:${reference}`, () => this.mirrorManifest(repo, reference, r));
  }

  override async getManifest(repo: string, reference: string): Promise<(ManifestInfo & { bytes: Buffer }) | undefined> {
    const r = this.route(repo);
    if (!r) return this.getManifestLocal(repo, reference);
    const info = await this.flight(`manifest ${repo}:${reference}`, () => this.mirrorManifest(repo, reference, r));
    return info ? this.getManifestLocal(repo, info.digest) : undefined;
  }

  private async mirrorManifest(repo: string, ref: string, r: Route): Promise<ManifestInfo | undefined> {
    if (isDigest(ref)) {
      const local = await this.statManifestLocal(repo, ref);
      if (local) {
        this.count('manifest', 'hit');
        return local;
      }
      let got;
      try {
        got = await this.first(r, (u) => u.fetch('GET', r.remote, `manifests/${ref}`, { accept: MANIFEST_ACCEPT }));
      } catch (e) {
        if (e instanceof UpstreamError) {
          this.count('manifest', 'error');
          throw this.unavailable(repo, `manifest ${ref}`, e);
        }
        throw e;
      }
      if (got === 'missing') return undefined;
      this.count('manifest', 'miss');
      return this.cacheManifest(repo, ref, got, undefined);
    }

    const tag = ref;
    const key = `${repo}:${tag}`;
    const localDigest = await this.resolveTag(repo, tag);
    const local = localDigest ? await this.statManifestLocal(repo, localDigest) : undefined;
    if (local) {
      let at = this.validatedAt.get(key);
      if (at === undefined) {
        at = (await this.driver.stat(P.tagPath(repo, tag)).catch(() => undefined))?.modTime.getTime() ?? 0;
        this.validatedAt.set(key, at);
      }
      if (Date.now() - at < this.settings.tagTtl) {
        this.count('manifest', 'hit');
        return local;
      }
    }
    try {
      // revalidate cheaply: HEAD, and GET only when the digest changed
      const head = await this.first(r, (u) => u.fetch('HEAD', r.remote, `manifests/${tag}`, { accept: MANIFEST_ACCEPT }));
      if (head === 'missing') {
        this.count('manifest', 'missing');
        return undefined;
      }
      const upstreamDigest = upstreamHeader(head.res.headers, 'docker-content-digest');
      if (local && upstreamDigest === local.digest) {
        this.validatedAt.set(key, Date.now());
        this.count('manifest', 'revalidated');
        return local;
      }
      const byDigest = upstreamDigest && isDigest(upstreamDigest) ? upstreamDigest : undefined;
      if (byDigest) {
        const have = await this.statManifestLocal(repo, byDigest);
        if (have) {
          await this.putTag(repo, tag, byDigest);
          this.count('manifest', 'revalidated');
          return have;
        }
      }
      const got = await this.first(r, (u) => u.fetch('GET', r.remote, `manifests/${byDigest ?? tag}`, { accept: MANIFEST_ACCEPT }));
      if (got === 'missing') return undefined;
      this.count('manifest', local ? 'updated' : 'miss');
      return await this.cacheManifest(repo, byDigest, got, tag);
    } catch (e) {
      if (!(e instanceof UpstreamError)) throw e;
      if (local) {
        this.count('manifest', 'stale');
        this.logger?.warn('mirror: serving stale manifest (upstream unavailable)', { repo, tag, digest: local.digest, status: e.status, error: e.message });
        return local;
      }
      this.count('manifest', 'error');
      throw this.unavailable(repo, `tag ${tag}`, e);
    }
  }

  private async putTag(repo: string, tag: string, d: Digest): Promise<void> {
    await this.driver.putContent(P.tagPath(repo, tag), d);
    this.invalidateCaches();
    this.validatedAt.set(`${repo}:${tag}`, Date.now());
  }

  private async cacheManifest(repo: string, expect: Digest | undefined, got: { res: UpstreamResponse; upstream: Upstream }, tag: string | undefined): Promise<ManifestInfo> {
    const declared = Number(upstreamHeader(got.res.headers, 'content-length') ?? 0);
    if (declared > MAX_MANIFEST) {
      await got.res.body.dump().catch(() => {});
      throw new OciError('MANIFEST_INVALID', `upstream ${got.upstream.base} manifest is ${declared} bytes, over ${MAX_MANIFEST}`);
    }
    let bytes: Buffer;
    try {
      bytes = Buffer.from(await got.res.body.arrayBuffer());
    } catch (e) {
      const err = new UpstreamError(`upstream ${got.upstream.base}: reading a manifest: ${(e as Error).message}`);
      this.logger?.warn('mirror: upstream failed', { upstream: got.upstream.base, error: err.message });
      throw this.unavailable(repo, 'manifest', err);
    }
    const digest = digestOf(bytes, expect ? digestAlgorithm(expect) : 'sha256');
    if (expect && digest !== expect)
      throw new OciError('DIGEST_INVALID', `upstream ${got.upstream.base} served ${digest} for manifest ${expect}`, { status: 502, detail: { expected: expect, actual: digest } });
    const mediaType = upstreamHeader(got.res.headers, 'content-type');
    const info = await super.putManifest(repo, tag ?? digest, bytes, mediaType, { cache: true });
    if (tag) this.validatedAt.set(`${repo}:${tag}`, Date.now());
    return info;
  }

  /** Clients cannot push into mirrored repositories. */
  override async putManifest(repo: string, reference: string, bytes: Buffer, contentType: string | undefined, o: PutManifestOptions = {}): Promise<ManifestInfo> {
    if (!o.cache) this.refuseWrite(repo);
    return super.putManifest(repo, reference, bytes, contentType, o);
  }

  override async startUpload(repo: string): ReturnType<ProductionStore['startUpload']> {
    this.refuseWrite(repo);
    return super.startUpload(repo);
  }

  override async mountBlob(repo: string, d: Digest, from?: string): Promise<number | undefined> {
    this.refuseWrite(repo);
    // a mount needs the data here, not only upstream
    if (from !== undefined && this.route(from) && (await this.blobDataSize(d)) === undefined) return undefined;
    return super.mountBlob(repo, d, from);
  }

  private refuseWrite(repo: string): void {
    const r = this.route(repo);
    if (r) throw new OciError('UNSUPPORTED', `repository ${repo} is a pull-through mirror of ${r.upstreams.map((u) => u.base).join(', ')}: pushing is not allowed`);
  }

  // ---- tags -----------------------------------------------------------------------------

  /**
   * tags/list of a mirrored repository, as distribution's proxy: the upstreams' list when they
   * answer (the union over the upstreams, since a tag only one of them has is pullable too),
   * the cached tags when none can (logged as stale) or none knows the repository. A client's
   * first page always asks upstream; its continuation pages (`last`) reuse the list of the last
   * minute, so that paging through a long list neither refetches it nor sees it shift.
   */
  override async tagList(repo: string, o: { last?: string | undefined } = {}): Promise<string[] | undefined> {
    const r = this.route(repo);
    if (!r) return super.tagList(repo, o);
    if (o.last !== undefined) {
      const recent = this.tagLists.get(repo);
      if (recent && Date.now() - recent.at < TAG_LIST_REUSE_MS) return recent.tags;
    }
    return this.flight(`tags ${repo}`, () => this.upstreamTags(repo, r));
  }

  private async upstreamTags(repo: string, r: Route): Promise<string[] | undefined> {
    const found = new Set<string>();
    let answered = false;
    let failure: UpstreamError | undefined;
    for (const u of r.upstreams) {
      try {
        const tags = await u.tagList(r.remote);
        if (tags === undefined) continue;
        answered = true;
        for (const t of tags) found.add(t);
      } catch (e) {
        if (!(e instanceof UpstreamError)) throw e;
        failure = e;
        this.logger?.warn('mirror: upstream failed', { upstream: u.base, error: e.message, status: e.status });
      }
    }
    const local = await this.listTags(repo);
    if (!answered) {
      if (!failure) {
        // no upstream knows the repository: what is cached (or NAME_UNKNOWN)
        this.count('tags', 'missing');
        return local;
      }
      if (!local) {
        this.count('tags', 'error');
        throw this.unavailable(repo, 'the tag list', failure);
      }
      this.count('tags', 'stale');
      this.logger?.warn('mirror: serving the cached tag list (upstream unavailable)', { repo, tags: local.length, status: failure.status, error: failure.message });
      return local;
    }
    // an upstream that failed may have had tags the others lack: the cached ones stay listed
    if (failure && local) for (const t of local) found.add(t);
    const tags = [...found].sort(compareStrings);
    if (this.tagLists.size > 1000) this.tagLists.clear();
    this.tagLists.set(repo, { tags, at: Date.now() });
    this.count('tags', 'upstream');
    return tags;
  }

  // ---- blobs ----------------------------------------------------------------------------

  override async statBlob(repo: string, d: Digest): Promise<number | undefined> {
    const size = await super.statBlob(repo, d);
    const r = size === undefined ? this.route(repo) : undefined;
    if (!r) return size;
    // cached through another mirrored repository: link it here
    const have = await this.blobDataSize(d);
    if (have !== undefined) {
      await this.linkBlob(repo, d, have);
      this.count('blob', 'hit');
      return have;
    }
    const known = this.remoteSizes.get(`${repo}@${d}`);
    if (known !== undefined) return known;
    // being fetched right now: the size its GET announced
    const filling = this.fills.get(d)?.size;
    if (filling !== undefined) return filling;
    return this.flight(`blob ${repo}@${d}`, () => this.headBlob(repo, r, d));
  }

  private async headBlob(repo: string, r: Route, d: Digest): Promise<number | undefined> {
    let got;
    try {
      got = await this.first(r, (u) => u.fetch('HEAD', r.remote, `blobs/${d}`));
    } catch (e) {
      if (e instanceof UpstreamError) {
        this.count('blob', 'error');
        throw this.unavailable(repo, `blob ${d}`, e);
      }
      throw e;
    }
    if (got === 'missing') return undefined;
    const n = Number(upstreamHeader(got.res.headers, 'content-length'));
    if (!Number.isSafeInteger(n) || n < 0) throw new OciError('UNAVAILABLE', `upstream ${got.upstream.base} gave no size for blob ${d}`);
    if (this.remoteSizes.size > 10_000) this.remoteSizes.clear();
    this.remoteSizes.set(`${repo}@${d}`, n);
    return n;
  }

  /** One upstream lookup per key at a time: concurrent callers share its result (or its error). */
  private flight<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const running = this.flights.get(key);
    if (running) return running as Promise<T>;
    const p = fn().finally(() => this.flights.delete(key));
    this.flights.set(key, p);
    return p;
  }

  override async openBlob(repo: string, d: Digest, start = 0, end?: number): Promise<Readable> {
    const r = this.route(repo);
    if (!r) return super.openBlob(repo, d, start, end);
    let fill = this.fills.get(d);
    if (!fill && (await this.blobDataSize(d)) !== undefined) return super.openBlob(repo, d, start, end);
    fill = this.fills.get(d);
    if (fill) {
      this.count('blob', 'joined');
    } else {
      const size = this.remoteSizes.get(`${repo}@${d}`);
      const whole = start === 0 && (end === undefined || (size !== undefined && end === size - 1));
      // a range of a blob nobody is fetching: passed through, not cached
      if (!whole) return this.passthrough(repo, r, d, start, end);
      fill = this.startFill(repo, r, d);
    }
    fill.repos.add(repo);
    // errors before the first byte reach the client as an error response
    await fill.ready;
    if (fill.readable) return fill.reader(start, end);
    // a driver without local files: the client gets the blob once it is cached
    await fill.settled;
    if (fill.error) throw fill.error;
    return super.openBlob(repo, d, start, end);
  }

  private async passthrough(repo: string, r: Route, d: Digest, start: number, end: number | undefined): Promise<Readable> {
    let got;
    try {
      got = await this.first(r, (u) => u.fetch('GET', r.remote, `blobs/${d}`, { range: `bytes=${start}-${end ?? ''}` }));
    } catch (e) {
      if (e instanceof UpstreamError) {
        this.count('blob', 'error');
        throw this.unavailable(repo, `blob ${d}`, e);
      }
      throw e;
    }
    if (got === 'missing') throw this.blobUnknown(repo, d);
    this.count('blob', 'passthrough');
    return got.res.body;
  }

  private blobUnknown(repo: string, d: Digest): OciError {
    return new OciError('BLOB_UNKNOWN', `blob ${d} is not in repository ${repo} (nor upstream)`, { detail: { digest: d } });
  }

  /**
   * Start the one download of `d` (registered before any await, so that every request arriving
   * while it runs joins it): upstream body -> upload file (at the upstream's pace) -> verified
   * -> moved into the blob store and linked into every repository that asked meanwhile.
   */
  private startFill(repo: string, r: Route, d: Digest): BlobFill {
    const fill = new BlobFill(d);
    this.fills.set(d, fill);
    void this.runFill(fill, repo, r, d).finally(() => {
      this.fills.delete(d);
      fill.finish();
    });
    return fill;
  }

  private async runFill(fill: BlobFill, repo: string, r: Route, d: Digest): Promise<void> {
    const t0 = Date.now();
    let upstream: Upstream | undefined;
    let body: Readable | undefined;
    let w: FileWriter | undefined;
    const id = `mirror-${randomUUID()}`;
    let n = 0;
    try {
      // cached by a fill that ended just before this one started
      if ((await this.blobDataSize(d)) !== undefined) {
        const local = this.driver.localPath?.(P.blobDataPath(d));
        if (local) fill.setHandle(await open(local, 'r'));
        fill.progress((await this.blobDataSize(d)) ?? 0);
        fill.verify();
        await this.linkFilled(fill, d, fill.written);
        return;
      }
      let got;
      try {
        got = await this.first(r, (u) => u.fetch('GET', r.remote, `blobs/${d}`));
      } catch (e) {
        if (e instanceof UpstreamError) throw this.unavailable(repo, `blob ${d}`, e);
        throw e;
      }
      if (got === 'missing') throw this.blobUnknown(repo, d);
      upstream = got.upstream;
      body = got.res.body;
      const declared = Number(upstreamHeader(got.res.headers, 'content-length'));
      if (Number.isSafeInteger(declared) && declared >= 0) fill.size = declared;
      await this.driver.putContent(P.uploadStartedAtPath(repo, id), new Date().toISOString());
      w = await this.driver.writer(P.uploadDataPath(repo, id), false);
      const local = this.driver.localPath?.(P.uploadDataPath(repo, id));
      if (local) fill.setHandle(await open(local, 'r'));
      const hash = createHash(digestAlgorithm(d));
      const writer = w;
      for await (const chunk of body) {
        const b = chunk as Buffer;
        hash.update(b);
        n += b.length;
        const ok = writer.write(b, (err) => {
          if (!err) fill.progress(b.length);
        });
        if (!ok) await once(writer, 'drain');
      }
      await writer.commit();
      const actual = `${digestAlgorithm(d)}:${hash.digest('hex')}`;
      if (actual !== d)
        throw new OciError('DIGEST_INVALID', `upstream ${upstream.base} served ${actual} (${n} bytes) for blob ${d}`, { status: 502, detail: { expected: d, actual } });
      fill.verify();
      await this.driver.move(P.uploadDataPath(repo, id), P.blobDataPath(d));
      w = undefined;
      await this.linkFilled(fill, d, n);
      await this.driver.delete(P.uploadDir(repo, id));
      this.metrics?.mirrorBytes.inc({}, n);
      this.count('blob', 'miss');
      this.logger?.info('mirror: blob cached', { repo, digest: d, bytes: n, upstream: upstream.base, durationMs: Date.now() - t0, clients: fill.repos.size });
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      fill.fail(err);
      body?.destroy();
      await w?.cancel().catch(() => {});
      await this.driver.delete(P.uploadDir(repo, id)).catch(() => {});
      this.count('blob', 'error');
      this.logger?.warn(upstream ? 'mirror: blob fetch failed, nothing cached' : 'mirror: blob fetch failed', {
        repo,
        digest: d,
        bytes: n,
        ...(upstream ? { upstream: upstream.base } : {}),
        error: err.message,
      });
    }
  }

  private async linkFilled(fill: BlobFill, d: Digest, size: number): Promise<void> {
    for (const repo of fill.repos) {
      await this.linkBlob(repo, d, size);
      this.remoteSizes.delete(`${repo}@${d}`);
    }
  }
}

/** The store factory productionSetup uses when `mirror` is configured. */
export function mirrorStoreFactory(settings: MirrorSettings, logger: Logger, metrics: RegistryMetrics) {
  return (driver: StorageDriver, opts: StoreOptions, gc: GcCoordinator): MirrorStore => new MirrorStore(driver, opts, gc, settings, logger, metrics);
}
