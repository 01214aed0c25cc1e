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

/** containers/image parseLocation: trailing slashes dropped, no URI scheme. */
function parseLocation(input: string, fail: (msg: string) => never): string {
  const trimmed = input.replace(/\/+$/, '');
  if (trimmed.startsWith('http://') || trimmed.startsWith('https://')) fail(`invalid location '${input}': URI schemes are not supported`);
  return trimmed;
}

function optString(v: unknown, where: string): string {
  if (v === undefined) return '';
  if (typeof v !== 'string') throw new TsimageError(`${where}: expected a string, got ${JSON.stringify(v)}`);
  return v;
}

function nonEmptyList(v: unknown): boolean {
  return Array.isArray(v) && v.length > 0;
}

/** A domain (host[:port]) as docker/distribution's reference.DomainRegexp accepts it. */
const DOMAIN = /^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$/;

/**
 * Parse one registries.conf text (exported for tests), with containers/image's validation (sysregistriesv2
 * loadConfigFile + postProcessRegistries, per file) and its messages: a non-wildcard `[[registry]]` needs a
 * `location`, no URI schemes, a wildcard prefix is a bare `*.domain`, mirrors need a location, pull-from-mirror only
 * on mirrors and not with mirror-by-digest-only, entries of one location agree on insecure/blocked, V1 tables and V2
 * keys are not mixed. Of several entries with the same prefix in one file the first counts.
 */
export async function parseRegistriesConf(text: string, source: string): Promise<RegistryEntry[]> {
  const { parse } = await import('smol-toml');
  const head = `loading registries configuration ${JSON.stringify(source)}`;
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new TsimageError(`${head}: invalid TOML: ${(e as Error).message}`, { cause: e });
  }
  const failIn =
    (where: string) =>
    (msg: string): never => {
      throw new TsimageError(`${head}: ${where}${msg}`);
    };
  const v1 = doc.registries as Record<string, { registries?: unknown }> | undefined;
  const v1Set = !!v1 && typeof v1 === 'object' && ['search', 'insecure', 'block'].some((k) => nonEmptyList(v1[k]?.registries));
  const v2Set =
    nonEmptyList(doc.registry) ||
    nonEmptyList(doc['unqualified-search-registries']) ||
    (typeof doc['short-name-mode'] === 'string' && doc['short-name-mode'] !== '') ||
    (typeof doc.aliases === 'object' && doc.aliases !== null && Object.keys(doc.aliases).length > 0);
  if (v1Set && v2Set) failIn('')('mixing sysregistry v1/v2 is not supported');
  const out: RegistryEntry[] = [];
  const regs = doc.registry;
  if (regs !== undefined) {
    if (!Array.isArray(regs)) throw new TsimageError(`${head}: "registry" must be an array of tables ([[registry]])`);
    regs.forEach((r: Record<string, unknown>, i: number) => {
      const where = `${source}: [[registry]] #${i + 1}`;
      const fail = failIn(`[[registry]] #${i + 1}: `);
      const location = parseLocation(optString(r.location, `${where} location`), fail);
      let prefix = optString(r.prefix, `${where} prefix`);
      if (prefix === '') {
        if (location === '') fail('invalid condition: both location and prefix are unset');
        prefix = location;
      } else {
        prefix = parseLocation(prefix, fail);
        if (!prefix.startsWith('*.') && location === '') fail('invalid condition: location is unset and prefix is not in the format: *.example.com');
      }
      if (r['pull-from-mirror'] !== undefined && r['pull-from-mirror'] !== '') fail(`pull-from-mirror must not be set for a non-mirror registry ${JSON.stringify(prefix)}`);
      const byDigestOnly = asBool(r['mirror-by-digest-only'], `${where} mirror-by-digest-only`);
      const mirrors: RegistryMirror[] = [];
      const ms = r.mirror;
      if (ms !== undefined && !Array.isArray(ms)) fail('"mirror" must be an array of tables ([[registry.mirror]])');
      ((ms as Record<string, unknown>[] | undefined) ?? []).forEach((m: Record<string, unknown>, j: number) => {
        const mw = `${where} mirror #${j + 1}`;
        const mfail = failIn(`[[registry]] #${i + 1} mirror #${j + 1}: `);
        const mloc = parseLocation(optString(m.location, `${mw} location`), mfail);
        if (mloc === '') mfail('invalid condition: mirror location is unset');
        const pfm = optString(m['pull-from-mirror'], `${mw} pull-from-mirror`);
        if (byDigestOnly && pfm !== '') mfail(`cannot set mirror usage mirror-by-digest-only for the registry (${JSON.stringify(location)}) and pull-from-mirror for per-mirror (${JSON.stringify(mloc)}) at the same time`);
        if (pfm !== '' && pfm !== 'all' && pfm !== 'digest-only' && pfm !== 'tag-only') mfail(`unsupported pull-from-mirror value ${JSON.stringify(pfm)} for mirror ${JSON.stringify(mloc)}`);
        mirrors.push({ location: mloc, insecure: asBool(m.insecure, `${mw} insecure`), pullFromMirror: byDigestOnly ? 'digest-only' : ((pfm || 'all') as RegistryMirror['pullFromMirror']) });
      });
      out.push({
        prefix,
        location,
        insecure: asBool(r.insecure, `${where} insecure`),
        blocked: asBool(r.blocked, `${where} blocked`),
        mirrors,
        source,
      });
    });
  }
  // V1 format (converted as containers/image ConvertToV2 does: blocked first, then insecure, one entry per location)
  if (v1 && typeof v1 === 'object') {
    for (const [table, flag] of [
      ['block', 'blocked'],
      ['insecure', 'insecure'],
    ] as const) {
      const list = v1[table]?.registries;
      if (list === undefined) continue;
      if (!Array.isArray(list)) throw new TsimageError(`${head}: registries.${table}.registries must be a list`);
      for (const l of list) {
        if (typeof l !== 'string') throw new TsimageError(`${head}: registries.${table}.registries: expected strings, got ${JSON.stringify(l)}`);
        const loc = parseLocation(l, failIn(''));
        const existing = out.find((e) => e.prefix === loc);
        if (existing) existing[flag] = true;
        else out.push({ prefix: loc, location: loc, insecure: flag === 'insecure', blocked: flag === 'blocked', mirrors: [], source });
      }
    }
  }
  // one location (or a location-less wildcard prefix) named by several entries: they must agree
  const byLocation = new Map<string, RegistryEntry>();
  for (const e of out) {
    const key = e.location || e.prefix;
    const other = byLocation.get(key);
    if (!other) {
      byLocation.set(key, e);
      continue;
    }
    if (other.insecure !== e.insecure) failIn('')(`registry '${e.location}' is defined multiple times with conflicting 'insecure' setting`);
    if (other.blocked !== e.blocked) failIn('')(`registry '${e.location}' is defined multiple times with conflicting 'blocked' setting`);
  }
  const usr = doc['unqualified-search-registries'];
  if (usr !== undefined) {
    if (!Array.isArray(usr)) throw new TsimageError(`${head}: unqualified-search-registries must be a list`);
    for (const u of usr) {
      const d = parseLocation(String(u), failIn(''));
      if (typeof u !== 'string' || !DOMAIN.test(d)) failIn('')(`Invalid unqualified-search-registries entry ${JSON.stringify(d)}`);
    }
  }
  const snm = doc['short-name-mode'];
  if (snm !== undefined && snm !== '' && snm !== 'disabled' && snm !== 'permissive' && snm !== 'enforcing') failIn('')(`invalid short-name mode: ${JSON.stringify(snm)}`);
  // the first entry of a prefix wins within a file (containers/image ignores later ones)
  const seen = new Set<string>();
  const unique = out.filter((e) => (seen.has(e.prefix) ? false : (seen.add(e.prefix), true)));
  for (const e of unique)
    if (e.prefix.startsWith('*.') && /[/@:]/.test(e.prefix)) failIn('')(`Wildcarded prefix should be in the format: *.example.com. Current prefix ${JSON.stringify(e.prefix)} is incorrectly formatted`);
  return unique;
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

/**
 * The most specific entry matching `host[/repo]`: the longest prefix, as containers/image FindRegistry (a wildcard
 * counts with its own length, so `*.a.example.com` beats `*.example.com`; on a tie the exact prefix wins).
 */
export function findRegistry(conf: RegistriesConf, hostAndRepo: string): RegistryEntry | undefined {
  let best: RegistryEntry | undefined;
  let bestLen = -1;
  for (const e of conf.entries) {
    if (!matches(e.prefix, hostAndRepo)) continue;
    const len = e.prefix.length * 2 + (e.prefix.startsWith('*.') ? 0 : 1);
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

/**
 * registries.conf `blocked = true` on the entry matching `host/repo` (the name as written, before any rewrite): a
 * failure (exit 1), as containers/image's "registry X is blocked in FILE", not a usage error.
 */
export async function refuseBlockedRegistry(hostAndRepo: string, shown: string, env: NodeJS.ProcessEnv = process.env): Promise<RegistryEntry | undefined> {
  const e = findRegistry(await loadRegistriesConf(env), hostAndRepo);
  if (e?.blocked) throw new TsimageError(`${shown}: registry ${e.prefix} is blocked in registries.conf (${e.source})`);
  return e;
}

/** One place to pull a name from: `host[:port]/repo` (rewritten), and whether plain HTTP / unverified TLS is allowed. */
export interface PullSource {
  /** `host[:port]/path` to use instead of the name's own repository. */
  repository: string;
  insecure: boolean;
  /** A mirror (not the entry's location). */
  mirror: boolean;
  /** A registries.conf entry matched the name: `insecure` is its word for this name (prefix-level), not a default. */
  configured?: boolean;
}

/**
 * The TLS setting for a pull source or push location: the command line's, else the matching entry's `insecure` for
 * this very name or endpoint (containers/image FindRegistry(name) / the mirror's own flag; an entry for a prefix
 * under an insecure host is secure unless it says otherwise), else undefined (the client looks the host up).
 */
export function tlsVerifyFor(where: PullSource, cli: boolean | undefined): boolean | undefined {
  if (cli !== undefined) return cli;
  return where.configured ? !where.insecure : undefined;
}

function rewrite(e: RegistryEntry, to: string, repoName: string): string {
  if (!to || to.startsWith('*.')) return repoName;
  // a wildcard entry's location (or mirror) replaces the name's registry host
  if (e.prefix.startsWith('*.')) return `${to}${repoName.slice(repoName.split('/')[0]!.length)}`;
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
    out.push({ repository: rewrite(e, m.location, repoName), insecure: m.insecure, mirror: true, configured: true });
  }
  out.push({ repository: rewrite(e, e.location, repoName), insecure: e.insecure, mirror: false, configured: true });
  return out;
}

/**
 * Where a push of `host/repo` goes: the name as written, with the matching entry's `insecure`. containers/image
 * applies `location` rewriting and mirrors to pulls only: skopeo pushes to the name (checked with skopeo 1.9.3).
 */
export async function pushLocation(repoName: string, env: NodeJS.ProcessEnv = process.env): Promise<PullSource> {
  const e = findRegistry(await loadRegistriesConf(env), repoName);
  return e ? { repository: repoName, insecure: e.insecure, mirror: false, configured: true } : { repository: repoName, insecure: false, mirror: false };
}
