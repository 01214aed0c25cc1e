/**
 * Retention policies (which tags to drop) and tag immutability (which tags may never move).
 *
 * retention:                       # a list; the first policy whose repos glob matches applies
 *   - repos: ["team/**"]
 *     keepLast: 10                 # keep the 10 most recently pushed tags
 *     olderThan: 30d               # ...and any tag pushed within 30 days
 *     keep: ["latest", "v*"]       # tag globs that are always kept
 * A tag survives when it matches `keep`, is among the `keepLast` newest, or is younger than
 * `olderThan` (each only when set); every other tag of a matching repository is deleted.
 * Retention removes tags only; the manifests they pointed to become untagged and GC (with
 * `gc.deleteUntagged`) frees them once nothing else refers to them.
 *
 * immutable:
 *   - repos: ["prod/**"]
 *     tags: ["v*"]                 # tag globs that cannot be overwritten or deleted once pushed
 * Pushing a different manifest to an immutable tag, or deleting it, is refused with the
 * spec's DENIED error (403); pushing the identical manifest again is accepted (idempotent
 * retries of `skopeo copy` must not fail).
 */
import { OciError, UsageError, type Digest } from '../oci/index.js';
import { globToRegExp } from './auth/access.js';
import { ruleList } from './rules.js';
import type { RegistryStore } from './store.js';
import type { StoreHooks } from './hooks.js';
import * as P from './paths.js';
import type { Logger } from './log.js';
import type { RegistryMetrics } from './metrics.js';

export interface RetentionPolicy {
  repos: string[];
  keepLast?: number;
  /** ms */
  olderThan?: number;
  keep?: string[];
}

export interface ImmutableRule {
  repos: string[];
  tags: string[];
}

function strList(v: unknown, at: string): string[] {
  if (!Array.isArray(v) || v.length === 0 || v.some((x) => typeof x !== 'string' || !x)) throw new UsageError(`${at}: expected a non-empty list of globs`);
  return v as string[];
}

export function validateRetention(raw: unknown, parseDuration: (v: unknown) => number, at = 'retention'): RetentionPolicy[] {
  return ruleList(raw, at, 'policies', ['repos', 'keepLast', 'olderThan', 'keep'], (o, p) => {
    const out: RetentionPolicy = { repos: strList(o.repos, `${p}.repos`) };
    if (o.keepLast !== undefined) {
      if (typeof o.keepLast !== 'number' || !Number.isInteger(o.keepLast) || o.keepLast < 0) throw new UsageError(`${p}.keepLast: expected a whole number >= 0`);
      out.keepLast = o.keepLast;
    }
    if (o.olderThan !== undefined) {
      try {
        out.olderThan = parseDuration(o.olderThan);
      } catch {
        throw new UsageError(`${p}.olderThan: expected a duration like 30d or 12h, got ${JSON.stringify(o.olderThan)}`);
      }
    }
    if (o.keep !== undefined) out.keep = strList(o.keep, `${p}.keep`);
    if (out.keepLast === undefined && out.olderThan === undefined) throw new UsageError(`${p}: set keepLast and/or olderThan (otherwise the policy deletes every tag)`);
    return out;
  });
}

export function validateImmutable(raw: unknown, at = 'immutable'): ImmutableRule[] {
  return ruleList(raw, at, 'rules', ['repos', 'tags'], (o, p) => ({ repos: strList(o.repos, `${p}.repos`), tags: strList(o.tags, `${p}.tags`) }));
}

export class TagImmutability {
  private readonly rules: { repos: RegExp[]; tags: RegExp[] }[];
  constructor(rules: ImmutableRule[]) {
    this.rules = rules.map((r) => ({ repos: r.repos.map(globToRegExp), tags: r.tags.map(globToRegExp) }));
  }
  get enabled(): boolean {
    return this.rules.length > 0;
  }
  isImmutable(repo: string, tag: string): boolean {
    return this.rules.some((r) => r.repos.some((x) => x.test(repo)) && r.tags.some((x) => x.test(tag)));
  }
  /** Store hooks refusing overwrites and deletes of immutable tags. */
  hooks(): StoreHooks {
    return {
      beforeManifestPut: (e) => {
        if (e.tag && e.previous && e.previous !== e.digest && this.isImmutable(e.repo, e.tag)) {
          throw new OciError('DENIED', `tag ${e.tag} in ${e.repo} is immutable: it points to ${e.previous} and cannot be overwritten`, {
            detail: { tag: e.tag, digest: e.previous },
          });
        }
      },
      beforeTagDelete: (e) => {
        if (this.isImmutable(e.repo, e.tag)) {
          throw new OciError('DENIED', `tag ${e.tag} in ${e.repo} is immutable and cannot be deleted`, { detail: { tag: e.tag, digest: e.digest } });
        }
      },
    };
  }
}

export interface RetentionReport {
  dryRun: boolean;
  deleted: { repo: string; tag: string; digest: Digest }[];
  kept: number;
}

/** Apply retention policies to every repository (tags only). */
export async function applyRetention(
  store: RegistryStore,
  policies: RetentionPolicy[],
  o: { dryRun?: boolean; immutability?: TagImmutability; now?: number; logger?: Logger; metrics?: RegistryMetrics } = {},
): Promise<RetentionReport> {
  const report: RetentionReport = { dryRun: o.dryRun === true, deleted: [], kept: 0 };
  if (!policies.length) return report;
  const compiled = policies.map((p) => ({ ...p, repoRe: p.repos.map(globToRegExp), keepRe: (p.keep ?? []).map(globToRegExp) }));
  const now = o.now ?? Date.now();
  for (const repo of await store.listRepositories()) {
    const pol = compiled.find((p) => p.repoRe.some((r) => r.test(repo)));
    if (!pol) continue;
    const tags: { tag: string; time: number; digest: Digest }[] = [];
    for (const tag of (await store.listTags(repo)) ?? []) {
      try {
        const st = await store.driver.stat(P.tagPath(repo, tag));
        const digest = await store.resolveTag(repo, tag);
        if (digest) tags.push({ tag, time: st.modTime.getTime(), digest });
      } catch {
        // deleted meanwhile
      }
    }
    tags.sort((a, b) => b.time - a.time || (a.tag < b.tag ? -1 : 1));
    for (let i = 0; i < tags.length; i++) {
      const t = tags[i]!;
      const keep =
        pol.keepRe.some((r) => r.test(t.tag)) ||
        (pol.keepLast !== undefined && i < pol.keepLast) ||
        (pol.olderThan !== undefined && now - t.time < pol.olderThan) ||
        o.immutability?.isImmutable(repo, t.tag) === true;
      if (keep) {
        report.kept++;
        continue;
      }
      report.deleted.push({ repo, tag: t.tag, digest: t.digest });
      if (o.dryRun) continue;
      try {
        await store.driver.delete(P.tagPath(repo, t.tag));
        store.emit({ type: 'tag.deleted', repo, tag: t.tag, digest: t.digest });
        o.metrics?.retentionDeleted.inc();
      } catch (e) {
        o.logger?.warn('retention: cannot delete tag', { repo, tag: t.tag, error: (e as Error).message });
      }
    }
  }
  if (!o.dryRun && report.deleted.length) store.invalidateCaches();
  if (report.deleted.length) o.logger?.info('retention applied', { dryRun: report.dryRun, tagsDeleted: report.deleted.length, kept: report.kept });
  return report;
}
