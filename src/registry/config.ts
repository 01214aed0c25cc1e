/**
 * tsregistry configuration: a YAML file (every option documented in CONFIG_SCHEMA below),
 * environment overrides (`TSREGISTRY_<SECTION>_<KEY>`, camelCase keys in SNAKE_CASE, e.g.
 * `TSREGISTRY_STORAGE_UPLOADS_EXPIRY=24h`) and command-line flags, in that order of
 * precedence (flags win). Validation names the bad key: `config storage.uploads.expiry:
 * expected a duration like 90s, 15m, 24h or 7d, got "soon"`.
 *
 * Example (all defaults):
 *
 *   http:
 *     addr: 127.0.0.1:5000
 *     keepAliveTimeout: 75s
 *     requestTimeout: 0s        # 0 = none (long uploads)
 *     shutdownTimeout: 30s      # SIGTERM waits this long for in-flight requests
 *   storage:
 *     root: /var/lib/tsimage/registry   # $TSIMAGE_REGISTRY_ROOT
 *     fsync: true
 *     delete: { enabled: true }
 *     mountWithoutFrom: true
 *     uploads: { expiry: 168h, purgeInterval: 1h }
 *     cache: { ttl: 5s, manifestBytes: 32MiB }
 *   limits:
 *     manifestSize: 4MiB
 *     pageSize: 1000
 *
 * Other engineers' sections (auth, tls, gc, retention, quotas, mirror, metrics, log) are
 * added to CONFIG_SCHEMA in the marked block; a leaf of type 'any' is passed through for
 * its owner to validate.
 */
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { UsageError, defaultRegistryRoot } from '../oci/index.js';
import { PROD_SCHEMA } from './prod-config.js';

export type LeafType = 'string' | 'bool' | 'int' | 'duration' | 'size' | 'addr' | 'any' | 'strings';
export type Leaf = { type: LeafType; default: unknown; doc: string };
export type SchemaNode = { [key: string]: Leaf | SchemaNode };

function isLeaf(n: Leaf | SchemaNode): n is Leaf {
  return typeof (n as Leaf).type === 'string' && 'doc' in n;
}

export const CONFIG_SCHEMA: SchemaNode = {
  http: {
    addr: { type: 'addr', default: '127.0.0.1:5000', doc: 'HOST:PORT to listen on (":5000" = all interfaces; port 0 = any free port)' },
    keepAliveTimeout: { type: 'duration', default: 75_000, doc: 'idle keep-alive connection timeout' },
    requestTimeout: { type: 'duration', default: 0, doc: 'whole-request timeout (0 = none; uploads of big blobs take long)' },
    headersTimeout: { type: 'duration', default: 60_000, doc: 'time to receive request headers' },
    shutdownTimeout: { type: 'duration', default: 30_000, doc: 'on SIGINT/SIGTERM, wait this long for in-flight requests' },
  },
  storage: {
    root: { type: 'string', default: undefined, doc: 'data directory (default $TSIMAGE_REGISTRY_ROOT or <tsimage root>/registry)' },
    fsync: { type: 'bool', default: true, doc: 'fsync blobs, manifests and links before acknowledging' },
    delete: {
      enabled: { type: 'bool', default: true, doc: 'allow DELETE of blobs, manifests and tags' },
    },
    mountWithoutFrom: { type: 'bool', default: true, doc: 'POST ?mount= without from= links a blob found anywhere in the registry' },
    uploads: {
      expiry: { type: 'duration', default: 168 * 3600_000, doc: 'upload sessions older than this are removed' },
      purgeInterval: { type: 'duration', default: 3600_000, doc: 'how often expired upload sessions are looked for (0 = never)' },
    },
    cache: {
      ttl: { type: 'duration', default: 5000, doc: 'how long tag and blob-link lookups are cached in memory (0 = off)' },
      manifestBytes: { type: 'size', default: 32 * 1024 * 1024, doc: 'manifest bytes cached in memory' },
    },
  },
  limits: {
    manifestSize: { type: 'size', default: 4 * 1024 * 1024, doc: 'largest manifest accepted on PUT (413 above)' },
    pageSize: { type: 'int', default: 1000, doc: 'default and largest page of catalog and referrers lists' },
  },
  // ---- sections owned by regprod (auth, tls, gc, retention, quota, mirror, metrics, log) go below ----
  ...PROD_SCHEMA,
};

export interface RegistryConfig {
  http: { addr: string; keepAliveTimeout: number; requestTimeout: number; headersTimeout: number; shutdownTimeout: number };
  storage: {
    root: string;
    fsync: boolean;
    delete: { enabled: boolean };
    mountWithoutFrom: boolean;
    uploads: { expiry: number; purgeInterval: number };
    cache: { ttl: number; manifestBytes: number };
  };
  limits: { manifestSize: number; pageSize: number };
  /** Sections added by other modules (validated by CONFIG_SCHEMA, typed by their owners). */
  [section: string]: unknown;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1000,
  kb: 1000,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  t: 1e12,
  tb: 1e12,
  ki: 1024,
  kib: 1024,
  mi: 1024 ** 2,
  mib: 1024 ** 2,
  gi: 1024 ** 3,
  gib: 1024 ** 3,
  ti: 1024 ** 4,
  tib: 1024 ** 4,
};

/** "90s", "15m", "1h30m", "7d", "250ms"; a bare number is seconds. Returns milliseconds. */
export function parseDuration(v: unknown): number {
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return v * 1000;
  if (typeof v !== 'string') throw new Error('not a duration');
  const s = v.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s) * 1000;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s))) {
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    pos = re.lastIndex;
  }
  if (pos !== s.length || s === '') throw new Error('not a duration');
  return total;
}

/** "4MiB", "512k", "1GB"; a bare number is bytes. */
export function parseSize(v: unknown): number {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  if (typeof v !== 'string') throw new Error('not a size');
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v);
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new Error('not a size');
  return Math.round(Number(m[1]) * unit);
}

/** Bytes for people: "512 B", "1.5 MiB" (binary units, one decimal). */
export function formatBytes(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i ? v.toFixed(1) : v} ${u[i]}`;
}

/** "HOST:PORT", ":PORT" (all interfaces), "[::1]:PORT". */
export function parseAddr(v: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(v.trim());
  if (!m || Number(m[3]) > 65535) throw new Error('not HOST:PORT');
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port: Number(m[3]) };
}

function convert(leaf: Leaf, v: unknown, key: string): unknown {
  const bad = (want: string): never => {
    throw new UsageError(`config ${key}: expected ${want}, got ${JSON.stringify(v)}`);
  };
  switch (leaf.type) {
    case 'any':
      return v;
    case 'string':
      if (typeof v !== 'string' || v === '') bad('a non-empty string');
      return v;
    case 'strings':
      if (typeof v === 'string') return v.split(',').map((s) => s.trim()).filter(Boolean);
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) bad('a list of strings');
      return v;
    case 'bool':
      if (typeof v === 'boolean') return v;
      if (v === 'true' || v === '1' || v === 'yes') return true;
      if (v === 'false' || v === '0' || v === 'no') return false;
      return bad('true or false');
    case 'int': {
      const n = typeof v === 'string' && /^-?\d+$/.test(v) ? Number(v) : v;
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) bad('a non-negative integer');
      return n;
    }
    case 'duration':
      try {
        return parseDuration(v);
      } catch {
        return bad('a duration like 90s, 15m, 24h or 7d');
      }
    case 'size':
      try {
        return parseSize(v);
      } catch {
        return bad('a size like 4MiB, 512KiB or 1GB');
      }
    case 'addr':
      if (typeof v !== 'string') bad('HOST:PORT');
      try {
        parseAddr(v as string);
      } catch {
        bad('HOST:PORT (e.g. 127.0.0.1:5000, :5000, [::1]:5000)');
      }
      return v;
  }
}

function defaults(node: SchemaNode): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, n] of Object.entries(node)) out[k] = isLeaf(n) ? n.default : defaults(n);
  return out;
}

function merge(node: SchemaNode, target: Record<string, unknown>, src: unknown, path: string): void {
  if (src === null || src === undefined) return;
  if (typeof src !== 'object' || Array.isArray(src)) throw new UsageError(`config ${path || '(top level)'}: expected a mapping, got ${JSON.stringify(src)}`);
  for (const [k, v] of Object.entries(src as Record<string, unknown>)) {
    const key = path ? `${path}.${k}` : k;
    const n = node[k];
    if (!n) throw new UsageError(`config ${key}: unknown key (known keys${path ? ` under ${path}` : ''}: ${Object.keys(node).join(', ')})`);
    if (isLeaf(n)) target[k] = convert(n, v, key);
    else merge(n, target[k] as Record<string, unknown>, v, key);
  }
}

function envName(path: string[]): string {
  return `TSREGISTRY_${path.map((p) => p.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_')}`;
}

function applyEnv(node: SchemaNode, target: Record<string, unknown>, env: NodeJS.ProcessEnv, path: string[]): void {
  for (const [k, n] of Object.entries(node)) {
    const p = [...path, k];
    if (isLeaf(n)) {
      const v = env[envName(p)];
      if (v !== undefined && v !== '') target[k] = convert(n, n.type === 'any' ? parseYaml(v) : v, `${p.join('.')} (from $${envName(p)})`);
    } else applyEnv(n, target[k] as Record<string, unknown>, env, p);
  }
}

/** Every option with its env variable and doc line (for `tsregistry serve --help` and docs). */
export function describeConfig(node: SchemaNode = CONFIG_SCHEMA, path: string[] = []): { key: string; env: string; doc: string; default: unknown }[] {
  const out: { key: string; env: string; doc: string; default: unknown }[] = [];
  for (const [k, n] of Object.entries(node)) {
    const p = [...path, k];
    if (isLeaf(n)) out.push({ key: p.join('.'), env: envName(p), doc: n.doc, default: n.default });
    else out.push(...describeConfig(n, p));
  }
  return out;
}

export type ConfigOverrides = { addr?: string | undefined; root?: string | undefined };

/**
 * Build the configuration: defaults, then the YAML file (if any), then environment, then
 * the command-line overrides. Throws UsageError naming the bad key.
 */
export async function loadConfig(o: { file?: string | undefined; env?: NodeJS.ProcessEnv; overrides?: ConfigOverrides; doc?: unknown } = {}): Promise<RegistryConfig> {
  const env = o.env ?? process.env;
  const cfg = defaults(CONFIG_SCHEMA);
  if (o.file) {
    let text: string;
    try {
      text = await readFile(o.file, 'utf8');
    } catch (e) {
      throw new UsageError(`cannot read config file ${o.file}: ${(e as Error).message}`, { cause: e });
    }
    let doc: unknown;
    try {
      doc = parseYaml(text);
    } catch (e) {
      throw new UsageError(`config file ${o.file} is not valid YAML: ${(e as Error).message}`, { cause: e });
    }
    merge(CONFIG_SCHEMA, cfg, doc, '');
  }
  if (o.doc !== undefined) merge(CONFIG_SCHEMA, cfg, o.doc, '');
  applyEnv(CONFIG_SCHEMA, cfg, env, []);
  const out = cfg as unknown as RegistryConfig;
  if (o.overrides?.addr !== undefined) out.http.addr = convert(CONFIG_SCHEMA_ADDR, o.overrides.addr, '--addr') as string;
  if (o.overrides?.root !== undefined) out.storage.root = o.overrides.root;
  if (!out.storage.root) out.storage.root = defaultRegistryRoot(env);
  return out;
}

const CONFIG_SCHEMA_ADDR: Leaf = { type: 'addr', default: '', doc: '' };

/** A config for tests and embedding: defaults plus a partial document (validated the same way). */
export function makeConfig(doc: unknown = {}, env: NodeJS.ProcessEnv = {}): Promise<RegistryConfig> {
  return loadConfig({ doc, env });
}
