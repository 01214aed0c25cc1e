/**
 * Online garbage collection (mark and sweep, as distribution's garbagecollect.go, but safe
 * while the registry serves pushes).
 *
 * Mark: in every repository, start from every tag (and, unless `deleteUntagged`, every
 * manifest revision; with it, untagged revisions younger than the grace period), and follow
 * manifests -> config and layers, indexes -> child manifests, and every manifest -> its
 * referrers (`subject`). Blob links written within the grace period count as references
 * (a blob pushed for a manifest that is not there yet), and so does anything a manifest PUT
 * announced to the coordinator (see below).
 *
 * Sweep: blob data that nothing marked and that is older than the grace period is deleted,
 * with the repository links pointing at it; with `deleteUntagged`, unreachable untagged
 * manifests older than the grace period are deleted first. Upload sessions are never
 * touched (expiry is the server's upload purge).
 *
 * Concurrency: in the server, `GcCoordinator` closes the window between "GC decided blob B is
 * garbage" and "a manifest referencing B was accepted": a manifest PUT first announces the
 * digests it references (`protect`, synchronous), and GC marks a blob as being deleted
 * (`claim`, synchronous) right before deleting it, skipping protected ones; a PUT that
 * references a claimed blob is refused with MANIFEST_BLOB_UNKNOWN (the client re-uploads),
 * never accepted over a hole. Run from the CLI against a live server's storage, GC relies on
 * the grace period plus a last re-scan of manifests written while it ran.
 */
import type { Digest } from '../oci/index.js';
import { OciError, parseManifest } from '../oci/index.js';
import type { RegistryStore } from './store.js';
import { isNotFound } from './driver.js';
import * as P from './paths.js';
import type { Logger } from './log.js';
import type { RegistryMetrics } from './metrics.js';

export interface GcOptions {
  /** Report what would be deleted, delete nothing. */
  dryRun?: boolean;
  /** Blobs and untagged manifests younger than this are kept (ms). Default 1 h. */
  gracePeriodMs?: number;
  /** Delete manifests that no tag, index or referrer chain reaches. Default false (as distribution). */
  deleteUntagged?: boolean;
  coordinator?: GcCoordinator;
  logger?: Logger;
  metrics?: RegistryMetrics;
  signal?: AbortSignal;
  /** Called for each deletion (CLI listing). */
  onDelete?: (what: { kind: 'blob' | 'manifest'; digest: Digest; repo?: string; size?: number }) => void;
  /** Tests: called between mark and sweep (to race pushes against GC). */
  afterMark?: () => Promise<void> | void;
}

export interface GcReport {
  dryRun: boolean;
  repositories: number;
  manifestsMarked: number;
  blobsMarked: number;
  blobsTotal: number;
  blobsDeleted: number;
  bytesFreed: number;
  bytesKept: number;
  manifestsDeleted: number;
  linksDeleted: number;
  /** Blobs spared because a push announced them while GC ran. */
  protectedSkipped: number;
  durationMs: number;
  deleted: { kind: 'blob' | 'manifest'; digest: Digest; repo?: string; size?: number }[];
}

/** Coordinates in-process GC with manifest pushes (see the module comment). */
export class GcCoordinator {
  private readonly protectedAt = new Map<string, number>();
  private readonly inFlight = new Map<string, number>();
  private readonly claimed = new Set<string>();
  private readonly deletedAt = new Map<string, number>();
  running = false;

  constructor(private readonly holdMs = 10 * 60_000) {}

  /**
   * A manifest PUT references these (synchronous check-and-protect). Throws when GC already
   * claimed one. Returns the release to call when the PUT is over (stored or refused): from
   * then on the digests count as protected only for a GC that started before the release
   * (a GC starting later sees the stored manifest when it marks).
   */
  protect(digests: Iterable<Digest>): () => void {
    const list = [...digests];
    for (const d of list) {
      if (this.claimed.has(d)) {
        throw new OciError('MANIFEST_BLOB_UNKNOWN', `blob ${d} was just removed by garbage collection; push it again`, { detail: { digest: d } });
      }
    }
    const now = Date.now();
    for (const d of list) {
      this.inFlight.set(d, (this.inFlight.get(d) ?? 0) + 1);
      this.protectedAt.set(d, now);
    }
    if (this.protectedAt.size > 100_000) this.prune(now);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const end = Date.now();
      for (const d of list) {
        const n = (this.inFlight.get(d) ?? 1) - 1;
        if (n <= 0) this.inFlight.delete(d);
        else this.inFlight.set(d, n);
        this.protectedAt.set(d, end);
      }
    };
  }

  /** Referenced by a manifest PUT in flight, or by one that ended after `since` (a GC's start) minus a little slack. */
  isProtected(d: Digest, since: number): boolean {
    if (this.inFlight.has(d)) return true;
    const t = this.protectedAt.get(d);
    return t !== undefined && t >= since - 2000;
  }

  /** GC: take a blob for deletion unless a push protected it since `since`. */
  claim(d: Digest, since: number): boolean {
    if (this.isProtected(d, since)) return false;
    this.claimed.add(d);
    return true;
  }

  /** GC is done with a claimed blob (deleted or not); deleted ones are remembered for a while. */
  release(d: Digest, deleted: boolean): void {
    this.claimed.delete(d);
    if (deleted) this.deletedAt.set(d, Date.now());
  }

  /**
   * Deleted by GC recently: existence checks must go to storage, not to the store's lookup
   * caches (a HEAD racing the deletion can re-cache a size for data that is gone).
   */
  recentlyDeleted(d: Digest): boolean {
    const t = this.deletedAt.get(d);
    if (t === undefined) return false;
    if (t < Date.now() - this.holdMs) {
      this.deletedAt.delete(d);
      return false;
    }
    return true;
  }

  private prune(now: number): void {
    for (const [d, t] of this.protectedAt) if (t < now - this.holdMs) this.protectedAt.delete(d);
    for (const [d, t] of this.deletedAt) if (t < now - this.holdMs) this.deletedAt.delete(d);
  }
}

/** Digests a manifest references (config, layers, child manifests, subject), without the subject. */
export function manifestReferences(bytes: Buffer, mediaType?: string): Digest[] {
  try {
    const p = parseManifest(bytes, mediaType);
    if (p.kind === 'manifest') return [p.doc.config.digest, ...p.doc.layers.filter((l) => !l.urls?.length).map((l) => l.digest)];
    return p.doc.manifests.map((m) => m.digest);
  } catch {
    return [];
  }
}

async function mtime(store: RegistryStore, path: string): Promise<number | undefined> {
  try {
    return (await store.driver.stat(path)).modTime.getTime();
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
}

/** Run one garbage collection. */
export async function collectGarbage(store: RegistryStore, o: GcOptions = {}): Promise<GcReport> {
  const t0 = performance.now();
  const start = Date.now();
  const grace = o.gracePeriodMs ?? 3600_000;
  const cutoff = start - grace;
  const dryRun = o.dryRun === true;
  const coord = o.coordinator;
  if (coord?.running) throw new OciError('UNAVAILABLE', 'garbage collection is already running');
  if (coord) coord.running = true;
  const report: GcReport = {
    dryRun,
    repositories: 0,
    manifestsMarked: 0,
    blobsMarked: 0,
    blobsTotal: 0,
    blobsDeleted: 0,
    bytesFreed: 0,
    bytesKept: 0,
    manifestsDeleted: 0,
    linksDeleted: 0,
    protectedSkipped: 0,
    durationMs: 0,
    deleted: [],
  };
  const check = (): void => {
    if (o.signal?.aborted) throw o.signal.reason ?? new Error('garbage collection aborted');
  };
  try {
    const marked = new Set<string>();
    const manifestsSeen = new Set<string>();
    const repos = await store.listRepositories();
    report.repositories = repos.length;
    const doomedManifests: { repo: string; digest: Digest; subject?: Digest }[] = [];
    /** Untagged revisions judged during mark (the re-scan below looks only for new ones). */
    const considered = new Set<string>();

    /** Mark everything reachable from `roots` in `repo`; returns the manifests reached. */
    const traverse = async (repo: string, roots: Iterable<Digest>): Promise<Set<string>> => {
      const seen = new Set<string>();
      const queue = [...roots];
      while (queue.length) {
        const d = queue.pop()!;
        if (seen.has(d)) continue;
        seen.add(d);
        marked.add(d);
        manifestsSeen.add(d);
        const m = await store.getManifestLocal(repo, d);
        if (m) {
          for (const r of manifestReferences(m.bytes, m.mediaType)) {
            marked.add(r);
            // index children are manifests: follow them (they may be missing: foreign platforms)
            if (m.mediaType.includes('index') || m.mediaType.includes('manifest.list')) queue.push(r);
          }
        }
        for (const ref of await store.referrers(repo, d)) queue.push(ref.digest);
      }
      return seen;
    };

    for (const repo of repos) {
      check();
      const roots: Digest[] = [];
      for (const tag of (await store.listTags(repo)) ?? []) {
        const d = await store.resolveTag(repo, tag);
        if (d) roots.push(d);
      }
      const revisions = await store.listManifests(repo);
      const untagged: Digest[] = [];
      for (const d of revisions) {
        if (!o.deleteUntagged) roots.push(d);
        else {
          const t = await mtime(store, P.manifestRevisionPath(repo, d));
          if (t === undefined) continue;
          if (t > cutoff || coord?.isProtected(d, start)) roots.push(d);
          else {
            untagged.push(d);
            considered.add(`${repo}@${d}`);
          }
        }
      }
      const reached = await traverse(repo, roots);
      for (const d of untagged) {
        if (reached.has(d)) continue;
        const info = await store.statManifestLocal(repo, d);
        doomedManifests.push({ repo, digest: d, ...(info?.subject ? { subject: info.subject } : {}) });
      }
      // blobs linked recently count as referenced (pushed ahead of their manifest)
      for (const d of await store.listBlobLinks(repo)) {
        if (marked.has(d)) continue;
        const t = await mtime(store, P.layerLinkPath(repo, d));
        if (t !== undefined && t > cutoff) marked.add(d);
      }
    }
    report.manifestsMarked = manifestsSeen.size;
    await o.afterMark?.();

    // re-scan manifests written while we marked (pushes from other processes)
    const rescan = async (): Promise<void> => {
      for (const repo of await store.listRepositories()) {
        const fresh: Digest[] = [];
        for (const d of await store.listManifests(repo)) {
          if (marked.has(d) || considered.has(`${repo}@${d}`)) continue;
          const t = await mtime(store, P.manifestRevisionPath(repo, d));
          if (t !== undefined && t >= start - 2000) fresh.push(d);
        }
        if (fresh.length) await traverse(repo, fresh);
      }
    };
    await rescan();

    // sweep untagged manifests first (their blobs become candidates below only on the next run
    // unless nothing else marked them: they were not marked here since they were not roots)
    for (const m of doomedManifests) {
      check();
      if (marked.has(m.digest) || coord?.isProtected(m.digest, start)) continue;
      report.manifestsDeleted++;
      const entry = { kind: 'manifest' as const, digest: m.digest, repo: m.repo };
      report.deleted.push(entry);
      o.onDelete?.(entry);
      if (dryRun) continue;
      const tags = await store.tagsPointingTo(m.repo, m.digest);
      if (tags.length) continue; // tagged meanwhile
      const again = await mtime(store, P.manifestRevisionPath(m.repo, m.digest));
      if (again === undefined || again > cutoff) continue; // pushed again meanwhile
      if (m.subject) await store.driver.delete(P.referrerPath(m.repo, m.subject, m.digest));
      await store.driver.delete(P.manifestRevisionPath(m.repo, m.digest));
    }
    if (report.manifestsDeleted && !dryRun) store.invalidateCaches();

    // sweep blobs
    const doomedBlobs = new Set<string>();
    for await (const d of store.listBlobs()) {
      check();
      report.blobsTotal++;
      const st = await store.driver.stat(P.blobDataPath(d)).catch(() => undefined);
      if (!st) continue;
      if (marked.has(d) || st.modTime.getTime() > cutoff) {
        report.bytesKept += st.size;
        continue;
      }
      if (coord && !dryRun) {
        if (!coord.claim(d, start)) {
          report.protectedSkipped++;
          report.bytesKept += st.size;
          continue;
        }
      } else if (coord?.isProtected(d, start)) {
        report.protectedSkipped++;
        report.bytesKept += st.size;
        continue;
      }
      doomedBlobs.add(d);
      report.blobsDeleted++;
      report.bytesFreed += st.size;
      const entry = { kind: 'blob' as const, digest: d, size: st.size };
      report.deleted.push(entry);
      o.onDelete?.(entry);
      if (dryRun) continue;
      let ok = false;
      try {
        await store.deleteBlobData(d);
        ok = true;
      } finally {
        coord?.release(d, ok);
      }
    }
    report.blobsMarked = report.blobsTotal - report.blobsDeleted;
    // links to deleted blobs
    if (doomedBlobs.size) {
      for (const repo of await store.listRepositories()) {
        for (const d of await store.listBlobLinks(repo)) {
          if (!doomedBlobs.has(d)) continue;
          report.linksDeleted++;
          if (!dryRun && (await store.blobDataSize(d)) === undefined) await store.driver.delete(P.layerLinkPath(repo, d));
        }
      }
      if (!dryRun) store.invalidateCaches();
    }
    report.durationMs = Math.round(performance.now() - t0);
    if (o.metrics) {
      o.metrics.gcRuns.inc({ result: 'ok' });
      if (!dryRun) {
        o.metrics.gcBlobsDeleted.inc({}, report.blobsDeleted);
        o.metrics.gcManifestsDeleted.inc({}, report.manifestsDeleted);
        o.metrics.gcBytesFreed.inc({}, report.bytesFreed);
        o.metrics.storageBytes.set(report.bytesKept);
        o.metrics.storageBlobs.set(report.blobsTotal - report.blobsDeleted);
      }
      o.metrics.gcDuration.set(report.durationMs / 1000);
      o.metrics.gcLast.set(Math.floor(Date.now() / 1000));
    }
    o.logger?.info('garbage collection done', {
      dryRun,
      repositories: report.repositories,
      blobsDeleted: report.blobsDeleted,
      bytesFreed: report.bytesFreed,
      manifestsDeleted: report.manifestsDeleted,
      protectedSkipped: report.protectedSkipped,
      durationMs: report.durationMs,
    });
    return report;
  } catch (e) {
    o.metrics?.gcRuns.inc({ result: 'error' });
    o.logger?.error('garbage collection failed', { error: (e as Error).message });
    throw e;
  } finally {
    if (coord) coord.running = false;
  }
}

/** Run GC every `intervalMs` (first run after one interval); returns a stop function. */
export function scheduleGc(store: RegistryStore, intervalMs: number, o: GcOptions): () => void {
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    collectGarbage(store, o)
      .catch(() => {})
      .finally(() => (busy = false));
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
