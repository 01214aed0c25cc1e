/**
 * Storage quotas per repository: the bytes of distinct blobs linked into a repository
 * (layers, configs and manifests; a blob shared with other repositories counts in each, as
 * it does for what a repository's users can pull).
 *
 * quota:
 *   - repos: ["team/**"]
 *     maxBytes: 10GiB
 *
 * Enforced when an upload is committed and when a blob is mounted: going over the limit is
 * refused with DENIED (403) naming the usage and the limit. Usage is counted from storage on
 * first use and kept up to date from store events; it is recounted from storage before a
 * refusal, so a stale count never refuses a push that fits.
 */
import { OciError, UsageError } from '../oci/index.js';
import { globToRegExp } from './auth/access.js';
import { formatBytes as fmtBytes } from './config.js';
import { ruleList } from './rules.js';
import type { RegistryStore } from './store.js';
import type { RegistryEvent, StoreHooks } from './hooks.js';

export interface QuotaRule {
  repos: string[];
  maxBytes: number;
}

export function validateQuota(raw: unknown, parseSize: (v: unknown) => number, at = 'quota'): QuotaRule[] {
  return ruleList(raw, at, 'rules', ['repos', 'maxBytes'], (o, p) => {
    if (!Array.isArray(o.repos) || !o.repos.length || o.repos.some((x) => typeof x !== 'string')) throw new UsageError(`${p}.repos: expected a non-empty list of globs`);
    let maxBytes: number;
    try {
      maxBytes = parseSize(o.maxBytes);
    } catch {
      throw new UsageError(`${p}.maxBytes: expected a size like 10GiB or 500MB, got ${JSON.stringify(o.maxBytes)}`);
    }
    return { repos: o.repos as string[], maxBytes };
  });
}

export class Quotas {
  private readonly rules: { repos: RegExp[]; maxBytes: number }[];
  private readonly usage = new Map<string, { bytes: number; digests: Set<string> }>();
  private store: RegistryStore | undefined;

  constructor(rules: QuotaRule[]) {
    this.rules = rules.map((r) => ({ repos: r.repos.map(globToRegExp), maxBytes: r.maxBytes }));
  }

  get enabled(): boolean {
    return this.rules.length > 0;
  }

  limitFor(repo: string): number | undefined {
    return this.rules.find((r) => r.repos.some((x) => x.test(repo)))?.maxBytes;
  }

  attach(store: RegistryStore): void {
    this.store = store;
    store.on((e) => this.onEvent(e));
  }

  /** Recount a repository from storage. */
  async recount(repo: string): Promise<number> {
    const store = this.store!;
    const digests = new Set<string>();
    let bytes = 0;
    for (const d of await store.listBlobLinks(repo)) {
      const size = await store.blobDataSize(d);
      if (size === undefined) continue;
      digests.add(d);
      bytes += size;
    }
    for (const d of await store.listManifests(repo)) {
      if (digests.has(d)) continue;
      const size = await store.blobDataSize(d);
      if (size === undefined) continue;
      digests.add(d);
      bytes += size;
    }
    this.usage.set(repo, { bytes, digests });
    return bytes;
  }

  async used(repo: string): Promise<number> {
    return this.usage.get(repo)?.bytes ?? (await this.recount(repo));
  }

  private onEvent(e: RegistryEvent): void {
    const u = this.usage.get((e as { repo?: string }).repo ?? '');
    if (!u) return;
    switch (e.type) {
      case 'blob.pushed':
      case 'blob.mounted':
      case 'manifest.pushed':
        if (!u.digests.has(e.digest)) {
          u.digests.add(e.digest);
          u.bytes += e.size;
        }
        break;
      case 'blob.deleted':
      case 'manifest.deleted':
        // sizes of removed content are not in the event: recount lazily
        this.usage.delete(e.repo);
        break;
      default:
    }
  }

  /** Forget every count (after GC). */
  reset(): void {
    this.usage.clear();
  }

  private async check(repo: string, digest: string, size: number): Promise<void> {
    const limit = this.limitFor(repo);
    if (limit === undefined) return;
    let u = this.usage.get(repo);
    if (!u) {
      await this.recount(repo);
      u = this.usage.get(repo)!;
    }
    if (u.digests.has(digest)) return;
    if (u.bytes + size <= limit) return;
    await this.recount(repo);
    u = this.usage.get(repo)!;
    if (u.digests.has(digest) || u.bytes + size <= limit) return;
    throw new OciError('DENIED', `quota exceeded for repository ${repo}: ${fmtBytes(u.bytes)} used + ${fmtBytes(size)} would exceed the limit of ${fmtBytes(limit)}`, {
      detail: { repository: repo, used: u.bytes, size, limit },
    });
  }

  hooks(): StoreHooks {
    return {
      beforeBlobCommit: (e) => this.check(e.repo, e.digest, e.size),
      beforeBlobMount: (e) => this.check(e.repo, e.digest, e.size),
      beforeManifestPut: (e) => this.check(e.repo, e.digest, e.size),
    };
  }
}
