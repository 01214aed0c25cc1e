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
 * - Blobs: HEAD asks the upstream for the size without downloading; GET streams the upstream
 *   body to the client and into an upload file at the same time (the slower of the two sets
 *   the pace), verifies the digest at the end and only then moves it into the blob store. A
 *   client that goes away does not stop the download (the next client gets a cache hit); an
 *   upstream that dies mid-body aborts the client's response and leaves nothing in the cache.
 *   Ranged GETs of an uncached blob are passed through without caching.
 * - Clients cannot push into mirrored repositories (405 UNSUPPORTED); DELETE evicts.
 */
import { createHash, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import { OciError, digestAlgorithm, digestOf, isDigest, type Digest } from '../../oci/index.js';
import type { StorageDriver } from '../driver.js';
import type { GcCoordinator } from '../gc.js';
import type { Logger } from '../log.js';
import type { RegistryMetrics } from '../metrics.js';
import * as P from '../paths.js';
import { ProductionStore } from '../prod.js';
import type { ManifestInfo, PutManifestOptions, StoreOptions } from '../store.js';
import type { MirrorNamespace, MirrorSettings } from './config.js';
import { Upstream, UpstreamError, upstreamHeader, type UpstreamResponse } from './upstream.js';

const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

const MAX_MANIFEST = 4 * 1024 * 1024;

type Route = { ns: MirrorNamespace; upstreams: Upstream[]; remote: string };

export class MirrorStore extends ProductionStore {
  private readonly namespaces: { ns: MirrorNamespace; upstreams: Upstream[] }[];
  /** repo:tag -> when it was last confirmed upstream (ms). */
  private readonly validatedAt = new Map<string, number>();
  /** repo@digest -> size, learnt from an upstream HEAD (blob not cached yet). */
  private readonly remoteSizes = new Map<string, number>();

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

  private count(kind: 'manifest' | 'blob', result: string): void {
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
    return this.mirrorManifest(repo, reference, r);
  }

  override async getManifest(repo: string, reference: string): Promise<(ManifestInfo & { bytes: Buffer }) | undefined> {
    const r = this.route(repo);
    if (!r) return this.getManifestLocal(repo, reference);
    const info = await this.mirrorManifest(repo, reference, r);
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

  override async openBlob(repo: string, d: Digest, start = 0, end?: number): Promise<Readable> {
    const r = this.route(repo);
    if (!r || (await this.blobDataSize(d)) !== undefined) return super.openBlob(repo, d, start, end);
    const size = this.remoteSizes.get(`${repo}@${d}`);
    const whole = start === 0 && (end === undefined || (size !== undefined && end === size - 1));
    let got;
    try {
      got = await this.first(r, (u) => u.fetch('GET', r.remote, `blobs/${d}`, whole ? {} : { range: `bytes=${start}-${end ?? ''}` }));
    } catch (e) {
      if (e instanceof UpstreamError) {
        this.count('blob', 'error');
        throw this.unavailable(repo, `blob ${d}`, e);
      }
      throw e;
    }
    if (got === 'missing') throw new OciError('BLOB_UNKNOWN', `blob ${d} is not in repository ${repo} (nor upstream)`, { detail: { digest: d } });
    if (!whole) {
      this.count('blob', 'passthrough');
      return got.res.body;
    }
    this.count('blob', 'miss');
    return this.teeToCache(repo, d, got.res.body, got.upstream);
  }

  /** Stream the upstream body to the client and into the cache; commit only a verified blob. */
  private async teeToCache(repo: string, d: Digest, body: Readable, upstream: Upstream): Promise<Readable> {
    const id = `mirror-${randomUUID()}`;
    await this.driver.putContent(P.uploadStartedAtPath(repo, id), new Date().toISOString());
    const w = await this.driver.writer(P.uploadDataPath(repo, id), false);
    const out = new PassThrough({ highWaterMark: 1024 * 1024 });
    let clientGone = false;
    out.once('close', () => (clientGone = true));
    const hash = createHash(digestAlgorithm(d));
    const t0 = Date.now();
    void (async () => {
      let n = 0;
      try {
        for await (const chunk of body) {
          const b = chunk as Buffer;
          hash.update(b);
          n += b.length;
          if (!w.write(b)) await once(w, 'drain');
          if (!clientGone && !out.write(b) && !out.destroyed) {
            await new Promise<void>((resolve) => {
              const done = (): void => {
                out.off('drain', done);
                out.off('close', done);
                resolve();
              };
              out.on('drain', done);
              out.on('close', done);
            });
          }
        }
        await w.commit();
        const got = `${digestAlgorithm(d)}:${hash.digest('hex')}`;
        if (got !== d) throw new Error(`upstream ${upstream.base} served ${got} (${n} bytes) for blob ${d}`);
        await this.driver.move(P.uploadDataPath(repo, id), P.blobDataPath(d));
        await this.linkBlob(repo, d, n);
        await this.driver.delete(P.uploadDir(repo, id));
        this.remoteSizes.delete(`${repo}@${d}`);
        this.metrics?.mirrorBytes.inc({}, n);
        this.logger?.info('mirror: blob cached', { repo, digest: d, bytes: n, upstream: upstream.base, durationMs: Date.now() - t0 });
        out.end();
      } catch (e) {
        body.destroy();
        await w.cancel().catch(() => {});
        await this.driver.delete(P.uploadDir(repo, id)).catch(() => {});
        this.count('blob', 'error');
        this.logger?.warn('mirror: blob fetch failed, nothing cached', { repo, digest: d, bytes: n, upstream: upstream.base, error: (e as Error).message });
        out.destroy(e as Error);
      }
    })();
    return out;
  }
}

/** The store factory productionSetup uses when `mirror` is configured. */
export function mirrorStoreFactory(settings: MirrorSettings, logger: Logger, metrics: RegistryMetrics) {
  return (driver: StorageDriver, opts: StoreOptions, gc: GcCoordinator): MirrorStore => new MirrorStore(driver, opts, gc, settings, logger, metrics);
}
