/**
 * Pull-through mirror configuration (the `mirror` section):
 *
 *   mirror:
 *     tagTtl: 5m               # a cached tag is served without asking upstream for this long
 *     timeout: 30s             # per upstream request (headers, and between body chunks)
 *     namespaces:
 *       - prefix: hub          # local repositories hub/... are mirrored ("" = every repository)
 *         upstreams:           # tried in order: the first that has the content serves it
 *           - url: https://registry-1.docker.io
 *             prefix: library  # optional, prepended upstream: hub/alpine -> library/alpine
 *                                # ("library" as docker: hub/bitnami/redis stays bitnami/redis)
 *             username: me
 *             passwordFile: /etc/tsregistry/hub.pass   # or password: ...
 *           - url: https://mirror.gcr.io
 *             insecure: false  # true: do not verify the upstream's TLS certificate
 *
 * Mirrored repositories are read-only for clients (pushes answer 405 UNSUPPORTED); manifests
 * and blobs are cached as they are pulled, tags are revalidated after tagTtl, and when every
 * upstream fails or answers 429 the cached copy is served (and logged).
 */
import { readFileSync } from 'node:fs';
import { UsageError } from '../../oci/index.js';
import type { UpstreamConfig } from './upstream.js';

export interface MirrorNamespace {
  prefix: string;
  upstreams: UpstreamConfig[];
}

export interface MirrorSettings {
  tagTtl: number;
  timeout: number;
  namespaces: MirrorNamespace[];
}

function mapping(v: unknown, at: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new UsageError(`${at}: expected a mapping`);
  return v as Record<string, unknown>;
}

function onlyKeys(o: Record<string, unknown>, keys: string[], at: string): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) throw new UsageError(`${at}.${k}: unknown key (known: ${keys.join(', ')})`);
}

export function validateMirror(raw: unknown, parseDuration: (v: unknown) => number, at = 'config mirror'): MirrorSettings | undefined {
  if (raw === undefined || raw === null) return undefined;
  const o = mapping(raw, at);
  onlyKeys(o, ['tagTtl', 'timeout', 'namespaces'], at);
  const dur = (k: string, def: number): number => {
    if (o[k] === undefined) return def;
    try {
      return parseDuration(o[k]);
    } catch {
      throw new UsageError(`${at}.${k}: expected a duration like 30s or 5m, got ${JSON.stringify(o[k])}`);
    }
  };
  if (!Array.isArray(o.namespaces) || o.namespaces.length === 0) throw new UsageError(`${at}.namespaces: expected a non-empty list`);
  const namespaces = o.namespaces.map((n: unknown, i: number): MirrorNamespace => {
    const p = `${at}.namespaces[${i}]`;
    const no = mapping(n, p);
    onlyKeys(no, ['prefix', 'upstreams'], p);
    const prefix = no.prefix ?? '';
    if (typeof prefix !== 'string' || (prefix !== '' && !/^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/.test(prefix)))
      throw new UsageError(`${p}.prefix: expected a repository name prefix like "hub" or "mirror/quay" ("" for every repository), got ${JSON.stringify(no.prefix)}`);
    if (!Array.isArray(no.upstreams) || no.upstreams.length === 0) throw new UsageError(`${p}.upstreams: expected a non-empty list`);
    const upstreams = no.upstreams.map((u: unknown, j: number): UpstreamConfig => {
      const q = `${p}.upstreams[${j}]`;
      const uo = mapping(u, q);
      onlyKeys(uo, ['url', 'prefix', 'username', 'password', 'passwordFile', 'insecure'], q);
      if (typeof uo.url !== 'string' || !/^https?:\/\/[^/]+\/?$/.test(uo.url)) throw new UsageError(`${q}.url: expected http(s)://host[:port], got ${JSON.stringify(uo.url)}`);
      const out: UpstreamConfig = { url: uo.url };
      for (const k of ['prefix', 'username', 'password'] as const) {
        if (uo[k] === undefined) continue;
        if (typeof uo[k] !== 'string') throw new UsageError(`${q}.${k}: expected a string`);
        out[k] = uo[k] as string;
      }
      if (uo.passwordFile !== undefined) {
        if (typeof uo.passwordFile !== 'string') throw new UsageError(`${q}.passwordFile: expected a path`);
        try {
          out.password = readFileSync(uo.passwordFile, 'utf8').replace(/\r?\n$/, '');
        } catch (e) {
          throw new UsageError(`${q}.passwordFile: cannot read ${uo.passwordFile}: ${(e as Error).message}`);
        }
      }
      if ((out.password !== undefined) !== (out.username !== undefined)) throw new UsageError(`${q}: username and password (or passwordFile) go together`);
      if (uo.insecure !== undefined) {
        if (typeof uo.insecure !== 'boolean') throw new UsageError(`${q}.insecure: expected true or false`);
        out.insecure = uo.insecure;
      }
      return out;
    });
    return { prefix, upstreams };
  });
  return { tagTtl: dur('tagTtl', 300_000), timeout: dur('timeout', 30_000), namespaces };
}
