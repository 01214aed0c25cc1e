/**
 * Registry credentials with the containers conventions (containers-auth.json(5)):
 *
 * - the auth file we write (login/logout): `--authfile`, else `$REGISTRY_AUTH_FILE`, else
 *   `$XDG_RUNTIME_DIR/containers/auth.json`, else `/run/containers/<uid>/auth.json` (podman's path for root);
 * - lookup order when reading: that file, then `$XDG_CONFIG_HOME/containers/auth.json`
 *   (`~/.config/containers/auth.json`), then `$DOCKER_CONFIG/config.json` (`~/.docker/config.json`), then `~/.dockercfg`.
 *   With an explicit `--authfile` only that file is read (as containers/image does).
 *
 * Keys are `host[:port]` or `host[:port]/namespace/repo` (the most specific match wins), and the legacy
 * `https://host/v1/` forms docker wrote. Entries are `{ "auth": base64("user:password") }` or
 * `{ "identitytoken": "..." }`.
 *
 * Credential helpers, as docker and containers/image run them: a file's `credHelpers[host]` names the helper for that
 * registry (asked before the file's `auths`), its `credsStore` the helper for every registry it has no entry for
 * (asked after). `docker-credential-<name> get` reads the server (`host[:port]`) on stdin and prints
 * `{"ServerURL","Username","Secret"}` (Username `<token>`: Secret is an identity token); "credentials not found"
 * means none. Helpers are looked up on $PATH and run synchronously (a CLI asks once per registry).
 */
import { mkdir, readFile, rename, rm, writeFile, open } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { TsimageError, UsageError } from './oci.js';

export interface Credentials {
  username?: string | undefined;
  password?: string | undefined;
  /** A bearer/refresh token instead of a password (auth.json identitytoken, --registry-token). */
  identityToken?: string | undefined;
  /** Bearer token used as is (--registry-token). */
  registryToken?: string | undefined;
  /** Where they came from (for messages). */
  source?: string | undefined;
}

export interface AuthFileOptions {
  /** `--authfile`. */
  authfile?: string | undefined;
  env?: NodeJS.ProcessEnv | undefined;
}

function uid(): number {
  return typeof process.getuid === 'function' ? process.getuid() : 0;
}

/** The auth file login/logout write (and the first one read). */
export function defaultAuthFile(o: AuthFileOptions = {}): string {
  const env = o.env ?? process.env;
  if (o.authfile) return o.authfile;
  if (env.REGISTRY_AUTH_FILE) return env.REGISTRY_AUTH_FILE;
  if (env.XDG_RUNTIME_DIR) return join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json');
  return join('/run/containers', String(uid()), 'auth.json');
}

/** Every file read for credentials, in lookup order. */
export function authFileCandidates(o: AuthFileOptions = {}): string[] {
  const env = o.env ?? process.env;
  if (o.authfile) return [o.authfile];
  const home = env.HOME || homedir();
  const out = [defaultAuthFile(o)];
  out.push(join(env.XDG_CONFIG_HOME || join(home, '.config'), 'containers', 'auth.json'));
  out.push(join(env.DOCKER_CONFIG || join(home, '.docker'), 'config.json'));
  out.push(join(home, '.dockercfg'));
  return [...new Set(out)];
}

interface AuthEntry {
  auth?: string;
  identitytoken?: string;
  [k: string]: unknown;
}
interface AuthDoc {
  auths?: Record<string, AuthEntry>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
  [k: string]: unknown;
}

/** Ask `docker-credential-<helper> get` for `server`'s credentials (undefined: the helper has none). */
export function credentialsFromHelper(helper: string, server: string, where: string, env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  if (!/^[A-Za-z0-9._-]+$/.test(helper)) throw new TsimageError(`${where}: credential helper name ${JSON.stringify(helper)} is not valid`);
  const prog = `docker-credential-${helper}`;
  // loaded here: node:child_process (with net, dgram) costs every tscopy start-up ~0.5 ms otherwise
  const { spawnSync } = createRequire(import.meta.url)('node:child_process') as typeof import('node:child_process');
  const r = spawnSync(prog, ['get'], { input: server, encoding: 'utf8', env, timeout: 60_000 });
  if (r.error) {
    const code = (r.error as NodeJS.ErrnoException).code;
    throw new TsimageError(`${where}: credential helper ${prog} ${code === 'ENOENT' ? 'is not installed (not on $PATH)' : `failed: ${r.error.message}`}`, { cause: r.error });
  }
  const out = `${r.stdout}`.trim();
  if (r.status !== 0) {
    if (/credentials not found/i.test(`${out} ${r.stderr}`)) return undefined;
    throw new TsimageError(`${where}: credential helper ${prog} get exited ${r.status}: ${(out || `${r.stderr}`).trim().slice(0, 300)}`);
  }
  let doc: { Username?: unknown; Secret?: unknown };
  try {
    doc = JSON.parse(out) as typeof doc;
  } catch {
    throw new TsimageError(`${where}: credential helper ${prog} printed something that is not JSON`);
  }
  if (typeof doc.Secret !== 'string' || doc.Secret === '') return undefined;
  const username = typeof doc.Username === 'string' ? doc.Username : '';
  const source = `${where} (${prog})`;
  return username === '<token>' ? { identityToken: doc.Secret, source } : { username, password: doc.Secret, source };
}

function readDoc(path: string): AuthDoc | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw new TsimageError(`reading auth file ${path}: ${(e as Error).message}`, { cause: e });
  }
  if (text.trim() === '') return {};
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new TsimageError(`auth file ${path} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new TsimageError(`auth file ${path}: expected a JSON object`);
  // ~/.dockercfg is the bare map without "auths"
  if (path.endsWith('.dockercfg')) return { auths: doc as Record<string, AuthEntry> };
  return doc as AuthDoc;
}

/** `https://index.docker.io/v1/` -> `docker.io`; `https://host/v2/` -> `host`. */
export function normalizeAuthKey(key: string): string {
  let k = key.replace(/^https?:\/\//, '');
  if (/^[^/]+\/v[12]\/?$/.test(k)) k = k.slice(0, k.indexOf('/'));
  k = k.replace(/\/+$/, '');
  if (k === 'index.docker.io' || k === 'registry-1.docker.io') k = 'docker.io';
  return k;
}

function decodeEntry(e: AuthEntry, where: string): Credentials | undefined {
  if (e.identitytoken) {
    let username: string | undefined;
    if (e.auth) username = Buffer.from(e.auth, 'base64').toString('utf8').split(':')[0];
    return { username, identityToken: e.identitytoken, source: where };
  }
  if (!e.auth) return undefined;
  const s = Buffer.from(e.auth, 'base64').toString('utf8');
  const i = s.indexOf(':');
  if (i < 0) throw new TsimageError(`${where}: "auth" is not base64 of "user:password"`);
  return { username: s.slice(0, i), password: s.slice(i + 1), source: where };
}

/**
 * Credentials for `registry` (host[:port]) and optionally a repository (`ns/repo`), from the auth files.
 * The most specific key wins within a file; files are tried in lookup order.
 */
export function lookupCredentials(registry: string, repository?: string, o: AuthFileOptions = {}): Credentials | undefined {
  const want = normalizeAuthKey(registry);
  for (const path of authFileCandidates(o)) {
    const doc = readDoc(path);
    if (!doc) continue;
    const helpers = doc.credHelpers && typeof doc.credHelpers === 'object' ? Object.entries(doc.credHelpers).map(([k, v]) => [normalizeAuthKey(k), v] as const) : [];
    const helper = helpers.find(([k]) => k === want)?.[1];
    // docker's helpers know Docker Hub by its v1 URL
    const server = want === 'docker.io' ? 'https://index.docker.io/v1/' : want;
    if (typeof helper === 'string') {
      const c = credentialsFromHelper(helper, server, path, o.env ?? process.env);
      if (c) return c;
      continue;
    }
    const entries = Object.entries(doc.auths && typeof doc.auths === 'object' ? doc.auths : {}).map(([k, v]) => [normalizeAuthKey(k), v] as const);
    // most specific first: host/ns/repo, host/ns, host
    const keys: string[] = [];
    if (repository) {
      const parts = repository.split('/');
      for (let n = parts.length; n >= 1; n--) keys.push(`${want}/${parts.slice(0, n).join('/')}`);
    }
    keys.push(want);
    for (const key of keys) {
      const hit = entries.find(([k]) => k === key);
      if (hit) {
        const c = decodeEntry(hit[1] ?? {}, `${path} (${key})`);
        if (c) return c;
      }
    }
    if (typeof doc.credsStore === 'string' && doc.credsStore) {
      const c = credentialsFromHelper(doc.credsStore, server, path, o.env ?? process.env);
      if (c) return c;
    }
  }
  return undefined;
}

/** Parse `user:password` (skopeo --creds; the password may contain ':'; a bare `user` has an empty password). */
export function parseCreds(s: string): Credentials {
  if (s === '') throw new UsageError('credentials must not be empty (want USERNAME[:PASSWORD])');
  const i = s.indexOf(':');
  if (i === 0) throw new UsageError('credentials have an empty username (want USERNAME[:PASSWORD])');
  if (i < 0) return { username: s, password: '', source: '--creds' };
  return { username: s.slice(0, i), password: s.slice(i + 1), source: '--creds' };
}

/** Validate a login key: `host[:port]` or `host[:port]/repo/path`, without scheme or tag. */
export function loginKey(input: string): string {
  let k = input.trim();
  if (/^[a-z]+:\/\//i.test(k)) {
    // podman accepts and strips a scheme (with a warning): do the same
    k = k.replace(/^[a-z]+:\/\//i, '');
  }
  k = k.replace(/\/+$/, '');
  if (k === '') throw new UsageError('missing registry name');
  if (k.includes('@') || k.split('/').slice(1).join('/').includes(':'))
    throw new UsageError(`${JSON.stringify(input)}: a registry (host[:port][/namespace]) is expected, not an image reference with a tag or digest`);
  return normalizeAuthKey(k);
}

async function writeDocAtomic(path: string, doc: AuthDoc): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  try {
    await writeFile(tmp, JSON.stringify(doc, null, '\t') + '\n', { mode: 0o600 });
    const fh = await open(tmp, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } finally {
    await rm(tmp, { force: true });
  }
}

async function readDocForWrite(path: string): Promise<AuthDoc> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { auths: {} };
    throw new TsimageError(`reading auth file ${path}: ${(e as Error).message}`, { cause: e });
  }
  if (text.trim() === '') return { auths: {} };
  let doc: AuthDoc;
  try {
    doc = JSON.parse(text) as AuthDoc;
  } catch (e) {
    throw new TsimageError(`auth file ${path} is not valid JSON (not overwriting it): ${(e as Error).message}`, { cause: e });
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new TsimageError(`auth file ${path}: expected a JSON object (not overwriting it)`);
  if (!doc.auths || typeof doc.auths !== 'object') doc.auths = {};
  return doc;
}

/** Store `user:password` for `key` (host or host/namespace) in the auth file; other keys are kept. Returns the path. */
export async function saveCredentials(key: string, username: string, password: string, o: AuthFileOptions = {}): Promise<string> {
  const path = defaultAuthFile(o);
  const doc = await readDocForWrite(path);
  const k = loginKey(key);
  // drop legacy spellings of the same key so the new entry is the one read
  for (const old of Object.keys(doc.auths!)) if (old !== k && normalizeAuthKey(old) === k) delete doc.auths![old];
  doc.auths![k] = { auth: Buffer.from(`${username}:${password}`).toString('base64') };
  await writeDocAtomic(path, doc);
  return path;
}

/** Remove the entry for `key` (or every entry with `all`). Returns whether something was removed. */
export async function removeCredentials(key: string | undefined, o: AuthFileOptions & { all?: boolean } = {}): Promise<boolean> {
  const path = defaultAuthFile(o);
  const doc = await readDocForWrite(path);
  let removed = false;
  if (o.all) {
    removed = Object.keys(doc.auths!).length > 0;
    doc.auths = {};
  } else {
    if (!key) throw new UsageError('logout needs a registry or --all');
    const k = loginKey(key);
    for (const old of Object.keys(doc.auths!))
      if (normalizeAuthKey(old) === k) {
        delete doc.auths![old];
        removed = true;
      }
  }
  if (removed || o.all) await writeDocAtomic(path, doc);
  return removed;
}
