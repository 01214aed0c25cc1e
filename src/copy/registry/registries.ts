/**
 * containers-registries.conf(5), the parts a copy tool needs: which registries are insecure (plain HTTP or
 * unverified TLS allowed) and which are blocked. Files: `$CONTAINERS_REGISTRIES_CONF` or
 * `/etc/containers/registries.conf`, then `registries.conf.d/*.conf` beside it in name order (later files
 * override earlier entries with the same prefix, as containers/image does). V2 format
 * (`[[registry]] prefix/location/insecure/blocked/mirror-by-digest-only` with `[[registry.mirror]]
 * location/insecure/pull-from-mirror`) and the V1 tables (`[registries.insecure] registries = [...]`,
 * `[registries.block]`).
 *
 * Rewriting and mirrors (pullSources/pushLocation): a name under an entry's prefix is rewritten to its location
 * (`prefix = "example.com/foo"`, `location = "internal:5000/bar"`: example.com/foo/app -> internal:5000/bar/app);
 * pulls try the entry's mirrors first, in order (those whose pull-from-mirror admits a tag or digest name), then
 * the location; pushes go to the location only.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { TsimageError } from './oci.js';

export interface RegistryMirror {
  location: string;
  insecure: boolean;
  /** Which names may be pulled from this mirror (default all). */
  pullFromMirror: 'all' | 'digest-only' | 'tag-only';
}

export interface RegistryEntry {
  /** What the entry matches: `host[:port][/ns...]` or `*.domain`. */
  prefix: string;
  location: string;
  insecure: boolean;
  blocked: boolean;
  mirrors: RegistryMirror[];
  source: string;
}

export interface RegistriesConf {
  entries: RegistryEntry[];
  files: string[];
}

export const SYSTEM_REGISTRIES_CONF = '/etc/containers/registries.conf';

let cached: { key: string; conf: RegistriesConf } | undefined;

/** The files, listed once per process and main file: every image reference is resolved through them (a sync of
 * 50 tags listed the drop-in directory 500 times). */
const pathsOf = new Map<string, string[]>();
function configPaths(env: NodeJS.ProcessEnv): string[] {
  const main = env.CONTAINERS_REGISTRIES_CONF || SYSTEM_REGISTRIES_CONF;
  let out = pathsOf.get(main);
  if (out) return out;
  const dDir = join(dirname(main), 'registries.conf.d');
  out = [main];
  try {
    for (const f of readdirSync(dDir).filter((f) => f.endsWith('.conf')).sort()) out.push(join(dDir, f));
  } catch {
    /* no drop-in dir */
  }
  pathsOf.set(main, out);
  return out;
}

function asBool(v: unknown, where: string): boolean {
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw new TsimageError(`${where}: expected true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** Parse one registries.conf text (exported for tests). */
export async function parseRegistriesConf(text: string, source: string): Promise<RegistryEntry[]> {
  const { parse } = await import('smol-toml');
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new TsimageError(`${source}: invalid TOML: ${(e as Error).message}`, { cause: e });
  }
  const out: RegistryEntry[] = [];
  const regs = doc.registry;
  if (regs !== undefined) {
    if (!Array.isArray(regs)) throw new TsimageError(`${source}: "registry" must be an array of tables ([[registry]])`);
    regs.forEach((r: Record<string, unknown>, i: number) => {
      const where = `${source}: [[registry]] #${i + 1}`;
      const location = typeof r.location === 'string' ? r.location : '';
      const prefix = typeof r.prefix === 'string' && r.prefix ? r.prefix : location;
      if (!prefix) throw new TsimageError(`${where}: needs "location" or "prefix"`);
      if (prefix.startsWith('*.') && location && location !== prefix) throw new TsimageError(`${where}: a wildcard prefix (${prefix}) cannot have another location (${location})`);
      const byDigestOnly = asBool(r['mirror-by-digest-only'], `${where} mirror-by-digest-only`);
      const mirrors: RegistryMirror[] = [];
      const ms = r.mirror;
      if (ms !== undefined && !Array.isArray(ms)) throw new TsimageError(`${where}: "mirror" must be an array of tables ([[registry.mirror]])`);
      (ms ?? []).forEach((m: Record<string, unknown>, j: number) => {
        const mw = `${where} mirror #${j + 1}`;
        if (typeof m.location !== 'string' || !m.location) throw new TsimageError(`${mw}: needs "location"`);
        const pfm = m['pull-from-mirror'] ?? 'all';
        if (pfm !== 'all' && pfm !== 'digest-only' && pfm !== 'tag-only') throw new TsimageError(`${mw}: pull-from-mirror must be "all", "digest-only" or "tag-only", not ${JSON.stringify(pfm)}`);
        if (byDigestOnly && pfm !== 'all') throw new TsimageError(`${mw}: pull-from-mirror cannot be combined with mirror-by-digest-only`);
        mirrors.push({ location: m.location.replace(/\/+$/, ''), insecure: asBool(m.insecure, `${mw} insecure`), pullFromMirror: byDigestOnly ? 'digest-only' : pfm });
      });
      out.push({
        prefix: prefix.replace(/\/+$/, ''),
        location: location.replace(/\/+$/, ''),
        insecure: asBool(r.insecure, `${where} insecure`),
        blocked: asBool(r.blocked, `${where} blocked`),
        mirrors,
        source,
      });
    });
  }
  // V1 format
  const v1 = doc.registries as Record<string, { registries?: unknown }> | undefined;
  if (v1 && typeof v1 === 'object') {
    for (const [table, flag] of [
      ['insecure', 'insecure'],
      ['block', 'blocked'],
    ] as const) {
      const list = v1[table]?.registries;
      if (list === undefined) continue;
      if (!Array.isArray(list)) throw new TsimageError(`${source}: registries.${table}.registries must be a list`);
      for (const l of list) {
        if (typeof l !== 'string') continue;
        const existing = out.find((e) => e.prefix === l);
        if (existing) existing[flag] = true;
        else out.push({ prefix: l, location: l, insecure: flag === 'insecure', blocked: flag === 'blocked', mirrors: [], source });
      }
    }
  }
  return out;
}

/** Load (and cache per process) the system registries configuration. */
export async function loadRegistriesConf(env: NodeJS.ProcessEnv = process.env): Promise<RegistriesConf> {
  const paths = configPaths(env);
  const key = paths.join('\0');
  if (cached?.key === key) return cached.conf;
  const byPrefix = new Map<string, RegistryEntry>();
  const files: string[] = [];
  for (const p of paths) {
    let text: string;
    try {
      text = readFileSync(p, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw new TsimageError(`reading ${p}: ${(e as Error).message}`, { cause: e });
    }
    files.push(p);
    for (const e of await parseRegistriesConf(text, p)) byPrefix.set(e.prefix, e);
  }
  const conf = { entries: [...byPrefix.values()], files };
  cached = { key, conf };
  return conf;
}

function matches(prefix: string, ref: string): boolean {
  if (prefix.startsWith('*.')) {
    const host = ref.split('/')[0]!.replace(/:\d+$/, '');
    const suffix = prefix.slice(1).split('/')[0]!;
    return host.endsWith(suffix) && host.length > suffix.length;
  }
  if (ref === prefix) return true;
  return ref.startsWith(prefix) && (ref[prefix.length] === '/' || ref[prefix.length] === ':' || ref[prefix.length] === '@');
}

/** The most specific entry matching `host[/repo]` (longest prefix; wildcards lose to exact prefixes). */
export function findRegistry(conf: RegistriesConf, hostAndRepo: string): RegistryEntry | undefined {
  let best: RegistryEntry | undefined;
  let bestLen = -1;
  for (const e of conf.entries) {
    if (!matches(e.prefix, hostAndRepo)) continue;
    const len = e.prefix.startsWith('*.') ? 0 : e.prefix.length;
    if (len > bestLen) {
      best = e;
      bestLen = len;
    }
  }
  return best;
}

/** Is `host` configured insecure in registries.conf? */
export async function isInsecureRegistry(host: string, env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  const conf = await loadRegistriesConf(env);
  return findRegistry(conf, host)?.insecure ?? false;
}

/** Is `host/repo` blocked in registries.conf? */
export async function isBlockedRegistry(hostAndRepo: string, env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  const conf = await loadRegistriesConf(env);
  return findRegistry(conf, hostAndRepo)?.blocked ?? false;
}

/** One place to pull a name from: `host[:port]/repo` (rewritten), and whether plain HTTP / unverified TLS is allowed. */
export interface PullSource {
  /** `host[:port]/path` to use instead of the name's own repository. */
  repository: string;
  insecure: boolean;
  /** A mirror (not the entry's location). */
  mirror: boolean;
}

function rewrite(e: RegistryEntry, to: string, repoName: string): string {
  if (e.prefix.startsWith('*.') || !to) return repoName;
  return `${to}${repoName.slice(e.prefix.length)}`;
}

/**
 * Where to pull `host/repo` from (containers/image PullSourcesFromReference): the matching entry's mirrors that
 * admit this kind of name (by digest or by tag), in order, then its location (the name itself when no entry
 * matches or the entry has no location).
 */
export async function pullSources(repoName: string, byDigest: boolean, env: NodeJS.ProcessEnv = process.env): Promise<PullSource[]> {
  const e = findRegistry(await loadRegistriesConf(env), repoName);
  if (!e) return [{ repository: repoName, insecure: false, mirror: false }];
  const out: PullSource[] = [];
  for (const m of e.mirrors) {
    if ((m.pullFromMirror === 'digest-only' && !byDigest) || (m.pullFromMirror === 'tag-only' && byDigest)) continue;
    out.push({ repository: rewrite(e, m.location, repoName), insecure: m.insecure, mirror: true });
  }
  out.push({ repository: rewrite(e, e.location, repoName), insecure: e.insecure, mirror: false });
  return out;
}

/** Where a push of `host/repo` goes: the matching entry's location (prefix rewriting), never a mirror. */
export async function pushLocation(repoName: string, env: NodeJS.ProcessEnv = process.env): Promise<PullSource> {
  const all = await pullSources(repoName, false, env);
  return all[all.length - 1]!;
}
