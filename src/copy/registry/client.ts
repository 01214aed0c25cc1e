/**
 * The project's one registry client (OCI distribution spec v1.1 + Docker registry v2), on undici.
 *
 * Layers as go-containerregistry's transport: ping `/v2/` once per registry to choose https (or http when
 * the registry is insecure) and learn the auth challenge; Basic, or Bearer tokens per scope set (cached
 * until they expire, refreshed on 401); errors parsed from the spec envelope into OciError with
 * `temporary` for 408/429/5xx; retries with exponential backoff + jitter honouring Retry-After, also on
 * connection resets. One undici Pool (keep-alive) per origin.
 *
 * Streams stay streams: blob downloads verify the digest while streaming and resume with `Range` after an
 * interrupted connection; uploads stream in PATCH chunks (only the current, not yet acknowledged chunk is
 * retained so a broken upload resumes from the registry's upload status). Only manifests and error bodies
 * are read into memory, capped.
 */
import { Readable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { ftruncate, read as fsRead, readdirSync, readFileSync, write as fsWrite } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import type { Dispatcher, Pool } from 'undici';
import {
  ALL_MANIFEST_TYPES,
  chunksOf,
  DigestMismatchError,
  Hasher,
  MAX_MANIFEST_SIZE,
  OciError,
  OCI_ERROR_STATUS,
  SizeMismatchError,
  TsimageError,
  digestAlgorithm,
  digestHex,
  digestOf,
  guessManifestType,
  isDigest,
  parseDigest,
  readAll,
  registryHost,
  type Descriptor,
  type Digest,
  type Io,
  type MediaType,
  type OciErrorCode,
} from './oci.js';
import { CATALOG_SCOPE, mergeScopes, parseWwwAuthenticate, repositoryScope, type Challenge } from './auth.js';
import { lookupCredentials, parseCreds, type Credentials } from './credentials.js';
import { isInsecureRegistry } from './registries.js';
import { connectOptions, withDeferredCAs, type ClientTls } from './trust.js';

export interface RegistryClientOptions {
  /** false: the registry may be plain HTTP or have an unverifiable certificate (skopeo --tls-verify=false). Default: registries.conf decides. */
  tlsVerify?: boolean | undefined;
  /** `user:password` or parsed credentials, overriding the auth files. */
  creds?: string | Credentials | undefined;
  /** A bearer token used as is (skopeo --registry-token). */
  registryToken?: string | undefined;
  /** auth.json path (--authfile). */
  authfile?: string | undefined;
  /** CA/client certificates directory (*.crt CAs, *.cert + *.key client pair); default /etc/containers/certs.d/HOST. */
  certDir?: string | undefined;
  /** Retries of a temporary failure (default 3). */
  retryTimes?: number | undefined;
  /** First backoff delay in ms (default 200), doubled per attempt with jitter, capped by maxRetryDelayMs (default 30 s). */
  retryDelayMs?: number | undefined;
  maxRetryDelayMs?: number | undefined;
  userAgent?: string | undefined;
  /**
   * getBlobToFile: blobs of at least this many bytes are downloaded by a worker thread (blob-workers.ts; default
   * 4 MiB; TSIMAGE_BLOB_WORKERS=0 turns the workers off).
   */
  workerMinSize?: number | undefined;
  /** Connections per origin (default 16). */
  connections?: number | undefined;
  /** Upload PATCH size: bytes retained until the registry acknowledges them (default 16 MiB). */
  chunkSize?: number | undefined;
  /** Blobs up to this size (when known) are sent in one PUT (default 1 MiB). */
  monolithicMax?: number | undefined;
  env?: NodeJS.ProcessEnv | undefined;
}

export type { Credentials };

/** An OciError from a registry response, with the Retry-After it asked for. */
export class RegistryError extends OciError {
  retryAfterMs: number | undefined;
  constructor(code: OciErrorCode, message: string, o: { status: number; detail?: unknown; temporary?: boolean; cause?: unknown; retryAfterMs?: number | undefined }) {
    super(code, message, o);
    this.retryAfterMs = o.retryAfterMs;
  }
}

const NET_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'ECONNABORTED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

function errCode(e: unknown): string | undefined {
  let cur: unknown = e;
  for (let i = 0; i < 4 && cur && typeof cur === 'object'; i++) {
    const c = (cur as { code?: unknown }).code;
    if (typeof c === 'string' && NET_CODES.has(c)) return c;
    cur = (cur as { cause?: unknown }).cause;
  }
  const c = e && typeof e === 'object' ? (e as { code?: unknown }).code : undefined;
  return typeof c === 'string' ? c : undefined;
}

/** A connection-level failure worth retrying (reset, refused, socket closed, timeouts). */
export function isNetworkError(e: unknown): boolean {
  const c = errCode(e);
  return c !== undefined && NET_CODES.has(c);
}

export function isTemporary(e: unknown): boolean {
  if (e instanceof OciError) return e.temporary;
  return isNetworkError(e);
}

/** TSIMAGE_DEBUG_HTTP=1: one stderr line per registry request (method, URL, status, time to headers). */
const DEBUG_HTTP = process.env.TSIMAGE_DEBUG_HTTP === '1';
/** How long a blob seen in a repository is taken as present there without asking again (RegistryClient.present). */
const PRESENT_TTL_MS = 10 * 60_000;

function oneLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ').trim();
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function header(res: { headers: Record<string, string | string[] | undefined> }, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function parseRetryAfter(v: string | undefined): number | undefined {
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - Date.now());
}

async function readCapped(body: Dispatcher.ResponseData['body'], limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > limit) {
      body.destroy();
      throw new SizeMismatchError(limit, n, what, 'limit');
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks, n);
}

/** Build an OciError from an error response (spec envelope when there is one). */
export async function responseError(res: Dispatcher.ResponseData, what: string): Promise<RegistryError> {
  let text = '';
  try {
    text = (await readCapped(res.body, 64 * 1024, 'error body')).toString('utf8');
  } catch {
    res.body.destroy();
  }
  const status = res.statusCode;
  let code: OciErrorCode | undefined;
  let message = '';
  let detail: unknown;
  try {
    const doc = JSON.parse(text) as { errors?: { code?: string; message?: string; detail?: unknown }[] };
    const e0 = doc.errors?.[0];
    if (e0) {
      if (e0.code && e0.code in OCI_ERROR_STATUS) code = e0.code as OciErrorCode;
      message = [e0.code, e0.message].filter(Boolean).join(': ');
      detail = e0.detail;
      if (doc.errors!.length > 1) message += ` (and ${doc.errors!.length - 1} more: ${doc.errors!.slice(1).map((e) => e.code).join(', ')})`;
    }
  } catch {
    /* not JSON */
  }
  if (!code) {
    code =
      status === 401
        ? 'UNAUTHORIZED'
        : status === 403
          ? 'DENIED'
          : status === 429
            ? 'TOOMANYREQUESTS'
            : status === 503
              ? 'UNAVAILABLE'
              : status === 405
                ? 'UNSUPPORTED'
                : 'UNKNOWN';
  }
  if (!message) message = text.trim() ? text.trim().slice(0, 300) : `HTTP ${status}`;
  const temporary = status === 408 || status === 429 || status >= 500 || code === 'UNAVAILABLE' || code === 'TOOMANYREQUESTS';
  return new RegistryError(code, `${what}: ${status} ${message}`, { status, detail, temporary, retryAfterMs: parseRetryAfter(header(res, 'retry-after')) });
}

interface SendOptions {
  method: Dispatcher.HttpMethod;
  /** Path (with query) on the registry, or an absolute URL (upload locations, redirects). */
  path: string;
  headers?: Record<string, string> | undefined;
  body?: Buffer | string | Readable | AsyncIterable<Uint8Array> | undefined;
  /** Scopes the request needs (empty: `GET /v2/` and token-less requests). */
  scopes: readonly string[];
  signal?: AbortSignal | undefined;
}

interface TokenEntry {
  token: string;
  expires: number;
}

/** The upload status of a session: where to continue and how much the registry has. */
interface UploadState {
  location: string;
  offset: number;
}

export interface BlobInfo {
  digest: Digest;
  size: number;
  mediaType?: string | undefined;
}

export interface ManifestResponse {
  bytes: Buffer;
  mediaType: MediaType;
  digest: Digest;
}

export interface ManifestHead {
  digest: Digest;
  mediaType: MediaType;
  size: number;
}

export interface BlobUploadIo extends Io {
  /**
   * The body again from byte `start` (a source that can seek, e.g. a registry blob with Range or a file). With it
   * (and a known digest and size) a blob goes in ONE streaming PATCH with nothing retained: an interruption
   * continues from the registry's upload status by reopening the source there (the registry's digest check at
   * the final PUT covers the resumed bytes); a lost session restarts from 0. Without it, PATCH chunks are retained
   * until acknowledged.
   */
  reopen?: ((start: number) => Promise<AsyncIterable<Uint8Array>>) | undefined;
}

function restartable<E extends Error>(e: E): E {
  return Object.assign(e, { restartable: true });
}

export interface UploadStats {
  /** PATCH requests sent (including resumed ones). */
  patches: number;
  /** Times an interrupted upload continued from the registry's upload status. */
  resumes: number;
}

/** Positioned file I/O of getBlobToFile (on a descriptor the caller opened). */
const ftruncateAsync = promisify(ftruncate);
const readAt = promisify(fsRead);
const writeAt = promisify(fsWrite);

/** Whether a blob worker pool may have been started (closeRegistryClients stops it). */
let blobWorkersUsed = false;

let undiciMod: Promise<{ Pool: typeof import('undici').Pool }> | undefined;
/**
 * undici's Pool only (its index also loads fetch, WebSocket, cookies...: ~3x the start-up time of a CLI copy).
 * The deep paths have no types (src/copy/registry/undici-lib.d.ts declares them); the class is the same.
 * Literal specifiers, so that scripts/bundle.mjs can bundle them.
 */
const undici = () =>
  (undiciMod ??= (async () => {
    // undici parses HTTP with llhttp compiled to WebAssembly. V8 tiers hot wasm functions up with TurboFan on a
    // background thread, and a process cannot exit before that compile ends: 40-75 ms added to every short CLI
    // command (a no-op copy took 230 ms, 170 without). Liftoff's baseline code pulls 250 MB as fast here (measured
    // with bench/copy.bench.ts), so the tier-up buys nothing. Must be set before the wasm module is compiled (first
    // connection), and is set after undici's modules are loaded: after a V8 flag change, Node compiles each built-in
    // module it loads from source (its embedded code cache no longer matches the flags), ~3x slower (http, assert...).
    // bin/tscopy.js resets the flag before it writes tscopy's code cache (bin/bundle-loader.js).
    try {
      const [pool, dispatcher, api] = await Promise.all([
        import('undici/lib/dispatcher/pool.js'),
        import('undici/lib/dispatcher/dispatcher.js'),
        import('undici/lib/api/index.js'),
      ]);
      // what undici's index does: request/stream/pipeline... on every dispatcher
      Object.assign((dispatcher!.default as { prototype: object }).prototype, api!.default);
      setFlagsFromString('--liftoff-only');
      return { Pool: pool!.default as typeof import('undici').Pool };
    } catch {
      // a future undici with another internal layout: the package itself (slower to load, same API)
      const m = await import('undici');
      setFlagsFromString('--liftoff-only');
      return { Pool: m.Pool };
    }
  })());

/**
 * A client for one registry host (`host[:port]`; `docker.io` talks to registry-1.docker.io). Repository
 * names are passed per call. Instances are cheap to share: use `registryClient()` to get the process-wide
 * one for a host and option set (pools and tokens are then shared by sources and destinations).
 */
export class RegistryClient {
  /** Registry name as in references (`docker.io`, `localhost:5000`). */
  readonly registry: string;
  /** Host contacted (`registry-1.docker.io` for docker.io). */
  readonly host: string;
  private readonly opts: RegistryClientOptions;
  private origin: string | undefined;
  private pinging: Promise<void> | undefined;
  private challenge: Challenge | undefined;
  private readonly tokens = new Map<string, TokenEntry>();
  private readonly tokenFetches = new Map<string, Promise<TokenEntry>>();
  private readonly pools = new Map<string, Pool>();
  private creds: Credentials | undefined | null = null;
  private readonly pushRepos = new Set<string>();
  private insecure = false;
  private tls: ClientTls | undefined;
  private closed = false;
  readonly retryTimes: number;
  /** Counters (tests and summaries). */
  readonly stats = { requests: 0, retries: 0, resumedDownloads: 0, resumedUploads: 0, restartedUploads: 0, patches: 0, tokenFetches: 0, workerDownloads: 0, workerFallbacks: 0 };
  /**
   * Blobs this client saw in a repository (HEAD 200 or its own upload; mounts are not recorded), so that the copies of one command that share
   * layers (a sync of many tags, `--all`) check each blob once per repository. Kept for PRESENT_TTL_MS: a
   * registry's garbage collection between two copies of one command is then answered by the manifest PUT, which
   * the registry refuses when a blob is missing.
   */
  private present = new Map<string, { size: number; at: number }>();
  /**
   * Set once the registry showed it has no referrers API (405, or a 404 that is not a registry error: the route
   * is not served; OCI 1.1 registries with the API never answer 404 there): later lookups go straight to the tag scheme.
   */
  private noReferrersApi = false;

  constructor(registry: string, opts: RegistryClientOptions = {}) {
    this.registry = registry;
    this.host = registryHost(registry);
    this.opts = opts;
    this.retryTimes = opts.retryTimes ?? 3;
  }

  /** The scheme+host chosen by the ping (`https://h` or `http://h`), once known. */
  get baseUrl(): string | undefined {
    return this.origin;
  }

  private credentials(repository?: string): Credentials | undefined {
    if (this.creds !== null) return this.creds;
    const c = this.opts.creds;
    if (typeof c === 'string') this.creds = parseCreds(c);
    else if (c) this.creds = c;
    else if (this.opts.registryToken) this.creds = { registryToken: this.opts.registryToken, source: '--registry-token' };
    else this.creds = lookupCredentials(this.registry, repository, { authfile: this.opts.authfile, env: this.opts.env });
    return this.creds;
  }

  /** TLS settings: --tls-verify / registries.conf, and certs.d (`--cert-dir`, else /etc/containers/certs.d/HOST, then /etc/docker/certs.d/HOST). */
  private tlsSettings(): ClientTls {
    if (this.tls) return this.tls;
    const t: ClientTls = { verify: !this.insecure, cas: [] };
    const dirs = this.opts.certDir ? [this.opts.certDir] : [join('/etc/containers/certs.d', this.host), join('/etc/docker/certs.d', this.host)];
    for (const dir of dirs) {
      let files: string[];
      try {
        files = readdirSync(dir);
      } catch {
        continue;
      }
      t.cas = files.filter((f) => f.endsWith('.crt')).map((f) => readFileSync(join(dir, f), 'utf8'));
      const cert = files.find((f) => f.endsWith('.cert'));
      if (cert) {
        const key = cert.replace(/\.cert$/, '.key');
        if (!files.includes(key)) throw new TsimageError(`${join(dir, cert)}: missing client key ${join(dir, key)}`);
        t.cert = readFileSync(join(dir, cert), 'utf8');
        t.key = readFileSync(join(dir, key), 'utf8');
      }
      break;
    }
    return (this.tls = t);
  }

  private async pool(origin: string): Promise<Pool> {
    let p = this.pools.get(origin);
    if (!p) {
      const { Pool } = await undici();
      if (this.closed) throw new TsimageError(`registry client for ${this.registry} is closed`);
      p = new Pool(origin, {
        connections: this.opts.connections ?? 16,
        keepAliveTimeout: 30_000,
        connect: origin.startsWith('https:') ? connectOptions(this.tlsSettings()) : {},
      });
      this.pools.set(origin, p);
    }
    return p;
  }

  /** Close every pooled connection. */
  async close(): Promise<void> {
    this.closed = true;
    const ps = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(ps.map((p) => p.close().catch(() => p.destroy())));
  }

  // ---------------------------------------------------------------- ping, retries, auth

  /** Choose https or http and learn the auth challenge (once per client). */
  ping(signal?: AbortSignal): Promise<void> {
    this.pinging ??= this.pingOnce(signal).catch((e) => {
      this.pinging = undefined;
      throw e;
    });
    return this.pinging;
  }

  private async pingOnce(signal?: AbortSignal): Promise<void> {
    this.insecure = this.opts.tlsVerify === false || (this.opts.tlsVerify === undefined && (await isInsecureRegistry(this.host, this.opts.env)));
    /** GET /v2/ on one origin: the challenge (when 401) or a thrown error. */
    const probe = async (origin: string): Promise<{ origin: string; challenge: Challenge | undefined }> => {
      const pool = await this.pool(origin);
      const t0 = DEBUG_HTTP ? performance.now() : 0;
      const res = await pool.request({ method: 'GET', path: '/v2/', headers: this.baseHeaders(), signal });
      if (DEBUG_HTTP) process.stderr.write(`http: @${t0.toFixed(0)} ping ${origin}/v2/ -> ${res.statusCode} (${(performance.now() - t0).toFixed(1)} ms)\n`);
      this.stats.requests++;
      let challenge: Challenge | undefined;
      if (res.statusCode === 401) {
        challenge = this.pickChallenge(parseWwwAuthenticate(res.headers['www-authenticate']));
        await res.body.dump();
      } else if (res.statusCode >= 200 && res.statusCode < 300) {
        await res.body.dump();
      } else if (res.statusCode === 404) {
        await res.body.dump();
        throw new RegistryError('UNSUPPORTED', `${origin}/v2/ answered 404: not a registry (OCI distribution API)`, { status: 404, temporary: false });
      } else {
        throw await responseError(res, `pinging ${origin}/v2/`);
      }
      return { origin, challenge };
    };
    const use = (r: { origin: string; challenge: Challenge | undefined }) => {
      if (r.challenge) this.challenge = r.challenge;
      this.origin = r.origin;
    };
    const https = `https://${this.host}`;
    const http = `http://${this.host}`;
    if (!this.insecure) {
      try {
        return use(await probe(https));
      } catch (e) {
        if (e instanceof RegistryError) throw e;
        throw Object.assign(
          new TsimageError(
            `pinging registry ${https}/v2/: ${oneLine(e)}${isNetworkError(e) ? '' : ' (for a plain-HTTP or self-signed registry use --tls-verify=false or mark it insecure in registries.conf)'}`,
            { cause: e },
          ),
          { code: errCode(e) },
        );
      }
    }
    // insecure: HTTPS (unverified) preferred, plain HTTP allowed; both probed at once so a plain-HTTP
    // registry costs no extra round trip
    const [hs, hp] = await Promise.allSettled([probe(https), probe(http)]);
    if (hs.status === 'fulfilled') {
      use(hs.value);
      void this.dropPool(http);
      return;
    }
    void this.dropPool(https);
    if (hp.status === 'fulfilled') return use(hp.value);
    const e = hs.reason as unknown;
    const e2 = hp.reason as unknown;
    if (e2 instanceof RegistryError) throw e2;
    if (e instanceof RegistryError) throw e;
    throw Object.assign(new TsimageError(`pinging registry ${this.host} (https: ${oneLine(e)}; http: ${oneLine(e2)})`, { cause: e2 }), { code: errCode(e2) });
  }

  private async dropPool(origin: string): Promise<void> {
    const p = this.pools.get(origin);
    if (!p) return;
    this.pools.delete(origin);
    await p.close().catch(() => p.destroy());
  }

  private pickChallenge(chs: Challenge[]): Challenge | undefined {
    return chs.find((c) => c.scheme === 'bearer') ?? chs.find((c) => c.scheme === 'basic');
  }

  private baseHeaders(): Record<string, string> {
    return { 'user-agent': this.opts.userAgent ?? 'tsimage-tscopy/0.1.0' };
  }

  /** Backoff before retry `attempt` (1-based): exponential with jitter, or what Retry-After asked. */
  backoffMs(attempt: number, err?: unknown): number {
    const max = this.opts.maxRetryDelayMs ?? 30_000;
    const ra = err instanceof RegistryError ? err.retryAfterMs : undefined;
    if (ra !== undefined) return Math.min(ra, Math.max(max, 60_000));
    const base = (this.opts.retryDelayMs ?? 200) * 2 ** (attempt - 1);
    return Math.min(max, base * (0.5 + Math.random() * 0.5));
  }

  /** Run `fn`, retrying temporary failures up to retryTimes with backoff. */
  async retrying<T>(what: string, fn: (attempt: number) => Promise<T>, signal?: AbortSignal): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn(attempt);
      } catch (e) {
        if (signal?.aborted) throw e;
        if (!isTemporary(e) || attempt >= this.retryTimes) {
          if (isNetworkError(e) && !(e instanceof OciError))
            throw new OciError('UNAVAILABLE', `${what}: ${(e as Error).message}${attempt ? ` (after ${attempt} retries)` : ''}`, { cause: e, temporary: true });
          throw e;
        }
        this.stats.retries++;
        await sleep(this.backoffMs(attempt + 1, e), signal);
      }
    }
  }

  /** Declare that a repository will be pushed to: its token then covers pull,push from the start. */
  wantPush(repo: string): void {
    this.pushRepos.add(repo);
  }

  /** Scopes for reading `repo` (pull,push when the repo is a push target, so one token serves both). */
  pullScope(repo: string): string[] {
    return [repositoryScope(repo, this.pushRepos.has(repo) ? ['pull', 'push'] : ['pull'])];
  }

  pushScope(repo: string): string[] {
    this.pushRepos.add(repo);
    return [repositoryScope(repo, ['pull', 'push'])];
  }

  private async authorization(scopes: readonly string[], signal?: AbortSignal, force = false): Promise<string | undefined> {
    const ch = this.challenge;
    const creds = this.credentials(scopes[0]?.split(':')[1]);
    if (creds?.registryToken) return `Bearer ${creds.registryToken}`;
    if (!ch) return undefined;
    if (ch.scheme === 'basic') {
      if (!creds?.username) return undefined;
      return 'Basic ' + Buffer.from(`${creds.username}:${creds.password ?? ''}`).toString('base64');
    }
    if (ch.scheme !== 'bearer') return undefined;
    const merged = mergeScopes(scopes);
    const key = merged.join(' ');
    const cached = this.tokens.get(key);
    if (cached && !force && cached.expires > Date.now()) return `Bearer ${cached.token}`;
    let f = this.tokenFetches.get(key);
    if (!f || force) {
      f = this.fetchToken(ch, merged, creds, signal).finally(() => this.tokenFetches.delete(key));
      this.tokenFetches.set(key, f);
    }
    const t = await f;
    this.tokens.set(key, t);
    return `Bearer ${t.token}`;
  }

  private async fetchToken(ch: Challenge, scopes: readonly string[], creds: Credentials | undefined, signal?: AbortSignal): Promise<TokenEntry> {
    const realm = ch.params.realm;
    if (!realm) throw new OciError('UNAUTHORIZED', `${this.registry}: bearer challenge without a realm`, { temporary: false });
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new OciError('UNAUTHORIZED', `${this.registry}: invalid token realm ${JSON.stringify(realm)}`, { temporary: false });
    }
    this.stats.tokenFetches++;
    const pool = await this.pool(url.origin);
    const headers: Record<string, string> = this.baseHeaders();
    let res: Dispatcher.ResponseData;
    if (creds?.identityToken) {
      // OAuth2 refresh-token grant (docker's identity tokens)
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: creds.identityToken, client_id: 'tsimage', service: ch.params.service ?? '' });
      if (scopes.length) form.set('scope', scopes.join(' '));
      res = await pool.request({
        method: 'POST',
        path: url.pathname + url.search,
        headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' },
        body: form.toString(),
        signal,
      });
    } else {
      if (ch.params.service) url.searchParams.set('service', ch.params.service);
      for (const s of scopes) url.searchParams.append('scope', s);
      if (creds?.username) headers.authorization = 'Basic ' + Buffer.from(`${creds.username}:${creds.password ?? ''}`).toString('base64');
      res = await pool.request({ method: 'GET', path: url.pathname + url.search, headers, signal });
    }
    this.stats.requests++;
    if (res.statusCode !== 200) {
      const e = await responseError(res, `getting a token from ${url.origin}${url.pathname}${creds?.username ? ` for ${creds.username}` : ' (anonymous)'}`);
      throw e;
    }
    const doc = JSON.parse((await readCapped(res.body, 1024 * 1024, 'token response')).toString('utf8')) as {
      token?: string;
      access_token?: string;
      expires_in?: number;
    };
    const token = doc.token ?? doc.access_token;
    if (!token) throw new OciError('UNAUTHORIZED', `token response from ${url.origin} has no token`, { temporary: false });
    const life = Math.max(10, doc.expires_in ?? 60);
    return { token, expires: Date.now() + (life - 5) * 1000 };
  }

  private resolveUrl(path: string): { origin: string; path: string } {
    if (/^https?:\/\//.test(path)) {
      const u = new URL(path);
      return { origin: u.origin, path: u.pathname + u.search };
    }
    return { origin: this.origin!, path };
  }

  /**
   * One HTTP request with auth: on a 401 with a replayable body the challenge is re-read, the token
   * refreshed and the request sent once more. Returns the response whatever its status.
   */
  async send(o: SendOptions): Promise<Dispatcher.ResponseData> {
    await this.ping(o.signal);
    const replayable = o.body === undefined || typeof o.body === 'string' || Buffer.isBuffer(o.body);
    let scopes = [...o.scopes];
    for (let attempt = 0; ; attempt++) {
      const { origin, path } = this.resolveUrl(o.path);
      const sameHost = origin === this.origin || new URL(origin).host === this.host;
      const headers: Record<string, string> = { ...this.baseHeaders(), ...o.headers };
      if (sameHost) {
        const a = await this.authorization(scopes, o.signal, attempt > 0);
        if (a) headers.authorization = a;
      }
      const pool = await this.pool(origin);
      const t0 = DEBUG_HTTP ? performance.now() : 0;
      // reset: false keeps the connection after a HEAD. undici closes it by default (for servers that send a body
      // with HEAD answers); registries do not, and skopeo (Go) keeps it: a new TCP (and TLS) connection per
      // manifest/blob check cost ~1 ms of CPU each on loopback, a handshake each on a real network.
      const res = await pool.request({
        method: o.method,
        path,
        headers,
        body: o.body as Dispatcher.DispatchOptions['body'],
        signal: o.signal,
        ...(o.method === 'HEAD' ? { reset: false } : {}),
      });
      if (DEBUG_HTTP) process.stderr.write(`http: @${t0.toFixed(0)} ${o.method} ${origin}${path} -> ${res.statusCode} (${(performance.now() - t0).toFixed(1)} ms)\n`);
      this.stats.requests++;
      if (res.statusCode !== 401 || !replayable || attempt > 0 || !sameHost) return res;
      const ch = this.pickChallenge(parseWwwAuthenticate(res.headers['www-authenticate']));
      if (!ch) return res;
      const creds = this.credentials();
      // retry only when something can change: a (new) bearer challenge, or basic creds not yet sent
      const changed = ch.scheme !== this.challenge?.scheme || ch.params.realm !== this.challenge?.params.realm;
      if (ch.scheme === 'basic' && (!creds?.username || (!changed && headers.authorization))) return res;
      await res.body.dump();
      this.challenge = ch;
      if (ch.params.scope) scopes = mergeScopes([...scopes, ...ch.params.scope.split(' ')]);
    }
  }

  /** send() that throws the parsed error unless the status is one of `ok`. */
  private async expect(o: SendOptions, ok: number[], what: string): Promise<Dispatcher.ResponseData> {
    const res = await this.send(o);
    if (!ok.includes(res.statusCode)) throw await responseError(res, what);
    return res;
  }

  // ---------------------------------------------------------------- login check

  /**
   * Verify credentials against the registry as `podman login` does: Basic -> GET /v2/ with them must not be
   * 401; Bearer -> the token server must issue a token for them. Throws UNAUTHORIZED otherwise.
   */
  async checkLogin(signal?: AbortSignal): Promise<void> {
    await this.ping(signal);
    const creds = this.credentials();
    if (!this.challenge) return; // the registry needs no authentication
    if (this.challenge.scheme === 'bearer') {
      await this.retrying(`logging in to ${this.registry}`, () => this.fetchToken(this.challenge!, [], creds, signal), signal).catch((e: unknown) => {
        if (e instanceof OciError && (e.status === 401 || e.status === 403))
          throw new OciError('UNAUTHORIZED', `logging in to ${this.registry}: invalid username/password (${e.message})`, { cause: e, temporary: false, status: 401 });
        throw e;
      });
      return;
    }
    const res = await this.send({ method: 'GET', path: '/v2/', scopes: [], signal });
    if (res.statusCode === 401) {
      await res.body.dump();
      throw new OciError('UNAUTHORIZED', `logging in to ${this.registry}: invalid username/password`, { temporary: false });
    }
    if (res.statusCode >= 300) throw await responseError(res, `logging in to ${this.registry}`);
    await res.body.dump();
  }

  // ---------------------------------------------------------------- manifests

  /** GET a manifest by tag or digest: bytes verbatim, capped at 4 MiB, digest verified when `ref` is one. */
  async getManifest(repo: string, ref: string, io: Io & { accept?: readonly string[] | undefined } = {}): Promise<ManifestResponse> {
    const what = `reading manifest ${this.registry}/${repo}${isDigest(ref) ? '@' : ':'}${ref}`;
    return this.retrying(
      what,
      async () => {
        const res = await this.send({
          method: 'GET',
          path: `/v2/${repo}/manifests/${ref}`,
          headers: { accept: (io.accept ?? ALL_MANIFEST_TYPES).join(', ') },
          scopes: this.pullScope(repo),
          signal: io.signal,
        });
        if (res.statusCode !== 200) throw await responseError(res, what);
        const len = Number(header(res, 'content-length') ?? NaN);
        if (len > MAX_MANIFEST_SIZE) {
          res.body.destroy();
          throw new SizeMismatchError(MAX_MANIFEST_SIZE, len, `manifest ${repo}:${ref}`, 'limit');
        }
        const bytes = await readCapped(res.body, MAX_MANIFEST_SIZE, `manifest ${this.registry}/${repo}:${ref}`);
        let digest: Digest;
        if (isDigest(ref)) {
          const got = digestOf(bytes, digestAlgorithm(ref));
          if (got !== ref) throw new DigestMismatchError(ref, got, `manifest ${this.registry}/${repo}@${ref}`);
          digest = ref;
        } else {
          digest = digestOf(bytes);
          const hd = header(res, 'docker-content-digest');
          if (hd && isDigest(hd) && digestAlgorithm(hd) === 'sha256' && hd !== digest)
            throw new DigestMismatchError(hd, digest, `manifest ${this.registry}/${repo}:${ref} (Docker-Content-Digest)`);
        }
        const ct = (header(res, 'content-type') ?? '').split(';')[0]!.trim();
        let mediaType: string = ct;
        if (!ct || ct === 'application/json' || ct === 'text/plain' || ct === 'application/octet-stream') {
          try {
            mediaType = guessManifestType(JSON.parse(bytes.toString('utf8'))) ?? ct;
          } catch {
            /* keep the header's type */
          }
        }
        return { bytes, mediaType, digest };
      },
      io.signal,
    );
  }

  /** HEAD a manifest: its digest, media type and size, or undefined when absent. */
  async headManifest(repo: string, ref: string, io: Io = {}): Promise<ManifestHead | undefined> {
    const what = `checking manifest ${this.registry}/${repo}:${ref}`;
    return this.retrying(
      what,
      async () => {
        const res = await this.send({
          method: 'HEAD',
          path: `/v2/${repo}/manifests/${ref}`,
          headers: { accept: ALL_MANIFEST_TYPES.join(', ') },
          scopes: this.pullScope(repo),
          signal: io.signal,
        });
        await res.body.dump();
        if (res.statusCode === 404) return undefined;
        if (res.statusCode !== 200) throw await responseError(res, what);
        const hd = header(res, 'docker-content-digest');
        const mediaType = (header(res, 'content-type') ?? '').split(';')[0]!.trim();
        const size = Number(header(res, 'content-length') ?? -1);
        if (hd && isDigest(hd)) return { digest: hd, mediaType, size };
        // no digest header: fall back to GET
        const m = await this.getManifest(repo, ref, io);
        return { digest: m.digest, mediaType: m.mediaType, size: m.bytes.length };
      },
      io.signal,
    );
  }

  /** PUT a manifest verbatim under a tag or its digest; returns the digest the registry reports (checked). */
  async putManifest(repo: string, ref: string, bytes: Buffer, mediaType: MediaType, io: Io = {}): Promise<Digest> {
    const digest = digestOf(bytes);
    const what = `writing manifest ${this.registry}/${repo}${isDigest(ref) ? '@' : ':'}${ref}`;
    if (isDigest(ref) && digestOf(bytes, digestAlgorithm(ref)) !== ref) throw new DigestMismatchError(ref, digestOf(bytes, digestAlgorithm(ref)), what);
    return this.retrying(
      what,
      async () => {
        const res = await this.expect(
          { method: 'PUT', path: `/v2/${repo}/manifests/${ref}`, headers: { 'content-type': mediaType }, body: bytes, scopes: this.pushScope(repo), signal: io.signal },
          [200, 201, 202],
          what,
        );
        await res.body.dump();
        const hd = header(res, 'docker-content-digest');
        if (hd && isDigest(hd) && digestAlgorithm(hd) === 'sha256' && hd !== digest) throw new DigestMismatchError(digest, hd, `${what} (registry's Docker-Content-Digest)`);
        return digest;
      },
      io.signal,
    );
  }

  /** DELETE a manifest by digest (a tag is resolved to its digest first, as skopeo delete does). */
  async deleteManifest(repo: string, ref: string, io: Io = {}): Promise<Digest> {
    let digest: Digest;
    if (isDigest(ref)) digest = ref;
    else {
      const h = await this.headManifest(repo, ref, io);
      if (!h) throw new OciError('MANIFEST_UNKNOWN', `deleting ${this.registry}/${repo}:${ref}: manifest unknown`, { temporary: false });
      digest = h.digest;
    }
    const what = `deleting manifest ${this.registry}/${repo}@${digest}`;
    await this.retrying(
      what,
      async () => {
        const res = await this.send({ method: 'DELETE', path: `/v2/${repo}/manifests/${digest}`, scopes: [repositoryScope(repo, ['pull', 'push', 'delete'])], signal: io.signal });
        if (res.statusCode === 202 || res.statusCode === 200 || res.statusCode === 204) return void (await res.body.dump());
        throw await responseError(res, what);
      },
      io.signal,
    );
    return digest;
  }

  // ---------------------------------------------------------------- blobs

  /** HEAD a blob: size when present, undefined when absent. */
  async statBlob(repo: string, digest: Digest, io: Io = {}): Promise<{ size: number } | undefined> {
    const what = `checking blob ${digest} in ${this.registry}/${repo}`;
    const seen = this.present.get(`${repo}@${digest}`);
    if (seen && Date.now() - seen.at < PRESENT_TTL_MS) return { size: seen.size };
    const found = await this.retrying(
      what,
      async () => {
        let res = await this.send({ method: 'HEAD', path: `/v2/${repo}/blobs/${digest}`, scopes: this.pullScope(repo), signal: io.signal });
        for (let i = 0; i < 5 && res.statusCode >= 300 && res.statusCode < 400 && header(res, 'location'); i++) {
          const loc = new URL(header(res, 'location')!, `${this.origin}/v2/${repo}/blobs/${digest}`).toString();
          await res.body.dump();
          res = await this.send({ method: 'HEAD', path: loc, scopes: this.pullScope(repo), signal: io.signal });
        }
        await res.body.dump();
        if (res.statusCode === 404) return undefined;
        if (res.statusCode !== 200) throw await responseError(res, what);
        return { size: Number(header(res, 'content-length') ?? -1) };
      },
      io.signal,
    );
    if (found && found.size >= 0) this.sawBlob(repo, digest, found.size);
    return found;
  }

  /** Record a blob as present in `repo` (see `present`). */
  private sawBlob(repo: string, digest: Digest, size: number): void {
    this.present.set(`${repo}@${digest}`, { size, at: Date.now() });
  }

  /** GET a blob (following redirects) from byte `start`; throws the registry's error on failure. */
  private async openBlob(repo: string, digest: Digest, start: number, signal?: AbortSignal): Promise<Dispatcher.ResponseData> {
    const what = `reading blob ${digest} from ${this.registry}/${repo}`;
    return this.retrying(
      what,
      async () => {
        const headers: Record<string, string> = start > 0 ? { range: `bytes=${start}-` } : {};
        let url = `/v2/${repo}/blobs/${digest}`;
        let res = await this.send({ method: 'GET', path: url, headers, scopes: this.pullScope(repo), signal });
        for (let i = 0; res.statusCode >= 300 && res.statusCode < 400 && header(res, 'location'); i++) {
          if (i >= 10) throw new OciError('UNKNOWN', `${what}: too many redirects`, { temporary: false });
          url = new URL(header(res, 'location')!, url.startsWith('http') ? url : `${this.origin}${url}`).toString();
          await res.body.dump();
          res = await this.send({ method: 'GET', path: url, headers, scopes: this.pullScope(repo), signal });
        }
        if (res.statusCode === 200 || res.statusCode === 206) return res;
        if (res.statusCode === 416 && start > 0) {
          await res.body.dump();
          throw new OciError('RANGE_INVALID', `${what}: the registry refused to resume at byte ${start}`, { temporary: false });
        }
        throw await responseError(res, what);
      },
      signal,
    );
  }

  /**
   * Stream a blob. The first request is made before this resolves (a missing blob throws here). An interrupted
   * transfer continues with `Range: bytes=<received>-` (up to retryTimes); the digest (when reading from 0) and
   * the size (when known) are verified while streaming, failing at the end.
   */
  async getBlob(repo: string, d: { digest: Digest; size?: number | undefined }, io: Io & { start?: number | undefined; verify?: boolean | undefined } = {}): Promise<Readable> {
    const start = io.start ?? 0;
    const signal = io.signal;
    let res = await this.openBlob(repo, d.digest, start, signal);
    const verify = (io.verify ?? true) && start === 0;
    const hasher = verify ? new Hasher(digestAlgorithm(d.digest)) : undefined;
    const onProgress = io.onProgress;
    const what = `blob ${d.digest} from ${this.registry}/${repo}`;
    const self = this;
    async function* gen(): AsyncGenerator<Buffer> {
      let offset = start;
      let failures = 0;
      for (;;) {
        // a server that ignored Range sends from 0: skip what we have
        let skip = res.statusCode === 200 ? offset : 0;
        if (res.statusCode === 206) {
          const cr = header(res, 'content-range');
          const m = cr ? /bytes (\d+)-/.exec(cr) : null;
          if (m && Number(m[1]) !== offset) {
            res.body.destroy();
            throw new OciError('RANGE_INVALID', `${what}: asked to resume at ${offset}, got Content-Range ${cr}`, { temporary: false });
          }
        }
        try {
          for await (const raw of chunksOf<Buffer>(res.body)) {
            let c = raw;
            if (skip > 0) {
              if (c.length <= skip) {
                skip -= c.length;
                continue;
              }
              c = c.subarray(skip);
              skip = 0;
            }
            if (d.size !== undefined && offset + c.length > d.size) throw new SizeMismatchError(d.size, offset + c.length, what);
            offset += c.length;
            hasher?.update(c);
            onProgress?.(c.length);
            yield c;
          }
          if (d.size === undefined || offset >= d.size) break;
          // ended early without an error: treat as an interruption
          throw Object.assign(new Error(`connection closed after ${offset} of ${d.size} bytes`), { code: 'UND_ERR_SOCKET' });
        } catch (e) {
          res.body.destroy();
          if (signal?.aborted || !isNetworkError(e) || failures >= self.retryTimes) {
            if (isNetworkError(e)) throw new OciError('UNAVAILABLE', `reading ${what}: interrupted at byte ${offset}: ${(e as Error).message}`, { cause: e });
            throw e;
          }
          failures++;
          self.stats.retries++;
          self.stats.resumedDownloads++;
          await sleep(self.backoffMs(failures, e), signal);
          res = await self.openBlob(repo, d.digest, offset, signal);
        }
      }
      if (d.size !== undefined && offset !== d.size) throw new SizeMismatchError(d.size, offset, what);
      if (hasher) {
        const got = hasher.digest();
        if (got !== d.digest) throw new DigestMismatchError(d.digest, got, what);
      }
    }
    // read ahead up to 2 MiB so the socket keeps flowing while the consumer works
    return Readable.from(gen(), { objectMode: false, highWaterMark: 2 * 1024 * 1024 });
  }

  /**
   * Download a blob into `fd` (an open, empty file: the temp file of an atomic ingest) and return the digest and
   * size of what was written; the caller compares them with what it expects (and fsyncs, renames). Blobs of at
   * least `workerMinSize` bytes are downloaded by a worker thread (hashing and writing there: the main thread stays
   * free, a pull uses every core); whatever the worker could not finish (an error status, a broken connection, a
   * crash) continues here from the bytes it wrote, with getBlob's retries, Range resume and error messages.
   */
  async getBlobToFile(repo: string, d: { digest: Digest; size: number }, fd: number, io: Io = {}): Promise<BlobInfo> {
    const signal = io.signal;
    const alg = digestAlgorithm(d.digest);
    let from = 0;
    let ticked = 0; // progress reported by the worker
    const tick = (n: number) => {
      ticked += n;
      io.onProgress?.(n);
    };
    let pool: import('./blob-workers.js').BlobWorkerPool | undefined;
    if (d.size >= (this.opts.workerMinSize ?? 4 * 1024 * 1024)) {
      blobWorkersUsed = true;
      pool = (await import('./blob-workers.js')).blobWorkers(this.opts.env);
    }
    if (pool) {
      await this.ping(signal);
      const headers: Record<string, string> = this.baseHeaders();
      const a = await this.authorization(this.pullScope(repo), signal);
      if (a) headers.authorization = a;
      const url = `${this.origin}/v2/${repo}/blobs/${d.digest}`;
      const t0 = DEBUG_HTTP ? performance.now() : 0;
      this.stats.workerDownloads++;
      const r = await pool.run({ url, headers, fd, size: d.size, algorithm: alg, tls: url.startsWith('https:') ? withDeferredCAs(this.tlsSettings()) : undefined }, { signal, onProgress: tick });
      if (DEBUG_HTTP) process.stderr.write(`http: @${t0.toFixed(0)} worker GET ${url} -> ${r.kind}${r.kind === 'status' ? ` ${r.status}` : ''} (${(performance.now() - t0).toFixed(1)} ms)\n`);
      if (r.kind !== 'crash') this.stats.requests += r.requests;
      if (r.kind === 'ok') return { digest: r.digest as Digest, size: r.size };
      signal?.throwIfAborted();
      this.stats.workerFallbacks++;
      if (r.kind === 'net' && r.written > 0) {
        // a broken connection: continue from the bytes on disk (as getBlob resumes with Range)
        from = r.written;
        this.stats.retries++;
        this.stats.resumedDownloads++;
      } else {
        // anything else: from byte 0 (getBlob then reports the registry's error, or retries)
        await ftruncateAsync(fd, 0);
      }
    }
    // here: the main thread (small blobs, no workers, or what a worker left)
    const hasher = new Hasher(alg);
    if (from > 0) {
      // hash what the worker wrote (its hash state stays in the worker)
      const buf = Buffer.allocUnsafe(Math.min(from, 1024 * 1024));
      for (let pos = 0; pos < from; ) {
        const { bytesRead: n } = await readAt(fd, buf, 0, Math.min(buf.length, from - pos), pos);
        if (n === 0) throw new TsimageError(`internal: ${from} bytes of blob ${d.digest} expected on disk, ${pos} found`);
        hasher.update(buf.subarray(0, n));
        pos += n;
      }
    }
    // progress: each byte once (bytes the worker counted and that are read again are not counted twice)
    let recount = Math.max(0, ticked - from);
    const onProgress = (n: number) => {
      const again = Math.min(recount, n);
      recount -= again;
      if (n > again) io.onProgress?.(n - again);
    };
    const body = await this.getBlob(repo, d, { signal, start: from, verify: false, onProgress });
    let pos = from;
    try {
      // chunk by chunk (undici's are <= 64 KiB): larger writes cost more system time here (see blob-workers.ts)
      for await (const c of body as AsyncIterable<Buffer>) {
        hasher.update(c);
        for (let off = 0; off < c.length; ) {
          const { bytesWritten } = await writeAt(fd, c, off, c.length - off, pos);
          off += bytesWritten;
          pos += bytesWritten;
        }
      }
    } finally {
      body.destroy();
    }
    return { digest: hasher.digest(), size: pos };
  }

  /** Read a small blob (config, signature payload) whole, capped (default 4 MiB) and verified. */
  async getBlobBytes(repo: string, d: { digest: Digest; size?: number | undefined }, io: Io & { limit?: number } = {}): Promise<Buffer> {
    const limit = io.limit ?? MAX_MANIFEST_SIZE;
    if (d.size !== undefined && d.size > limit) throw new SizeMismatchError(limit, d.size, `blob ${d.digest}`, 'limit');
    const s = await this.getBlob(repo, d, io);
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of s as AsyncIterable<Buffer>) {
      n += c.length;
      if (n > limit) {
        s.destroy();
        throw new SizeMismatchError(limit, n, `blob ${d.digest}`, 'limit');
      }
      chunks.push(c);
    }
    return Buffer.concat(chunks, n);
  }

  /** DELETE a blob. */
  async deleteBlob(repo: string, digest: Digest, io: Io = {}): Promise<void> {
    const what = `deleting blob ${digest} from ${this.registry}/${repo}`;
    this.present.delete(`${repo}@${digest}`);
    await this.retrying(
      what,
      async () => {
        const res = await this.send({ method: 'DELETE', path: `/v2/${repo}/blobs/${digest}`, scopes: [repositoryScope(repo, ['pull', 'push', 'delete'])], signal: io.signal });
        if (res.statusCode === 202 || res.statusCode === 200 || res.statusCode === 204) return void (await res.body.dump());
        throw await responseError(res, what);
      },
      io.signal,
    );
  }

  /**
   * Cross-repository mount `POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<from>`. True when mounted (201);
   * on 202 (the registry opened an upload session instead) the session is cancelled and false returned.
   * A refusal (no pull right on `from`, unknown blob) is false too.
   */
  async mountBlob(repo: string, digest: Digest, from: string, io: Io = {}): Promise<boolean> {
    const what = `mounting ${digest} from ${from} into ${this.registry}/${repo}`;
    return this.retrying(
      what,
      async () => {
        const res = await this.send({
          method: 'POST',
          path: `/v2/${repo}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`,
          scopes: [...this.pushScope(repo), repositoryScope(from, ['pull'])],
          signal: io.signal,
        });
        if (res.statusCode === 201) {
          await res.body.dump();
          return true;
        }
        if (res.statusCode === 202) {
          await res.body.dump();
          const loc = header(res, 'location');
          if (loc) await this.cancelUpload(repo, this.absLocation(loc, repo), io.signal);
          return false;
        }
        if (res.statusCode >= 500 || res.statusCode === 429 || res.statusCode === 408) throw await responseError(res, what);
        await res.body.dump();
        return false;
      },
      io.signal,
    );
  }

  private absLocation(loc: string, repo: string): string {
    return new URL(loc, `${this.origin}/v2/${repo}/blobs/uploads/`).toString();
  }

  private async startUpload(repo: string, signal?: AbortSignal): Promise<string> {
    const what = `starting an upload to ${this.registry}/${repo}`;
    return this.retrying(
      what,
      async () => {
        const res = await this.expect({ method: 'POST', path: `/v2/${repo}/blobs/uploads/`, scopes: this.pushScope(repo), signal }, [202], what);
        await res.body.dump();
        const loc = header(res, 'location');
        if (!loc) throw new OciError('BLOB_UPLOAD_INVALID', `${what}: 202 without a Location`, { temporary: false });
        return this.absLocation(loc, repo);
      },
      signal,
    );
  }

  private async cancelUpload(repo: string, location: string, signal?: AbortSignal): Promise<void> {
    try {
      const res = await this.send({ method: 'DELETE', path: location, scopes: this.pushScope(repo), signal });
      await res.body.dump();
    } catch {
      /* best effort */
    }
  }

  /** GET the upload status: where the registry is (Range: 0-N -> offset N+1). Undefined when the session is gone. */
  async uploadStatus(repo: string, location: string, signal?: AbortSignal): Promise<UploadState | undefined> {
    const what = `checking upload status in ${this.registry}/${repo}`;
    return this.retrying(
      what,
      async () => {
        const res = await this.send({ method: 'GET', path: location, scopes: this.pushScope(repo), signal });
        await res.body.dump();
        if (res.statusCode === 404) return undefined;
        if (res.statusCode !== 204 && res.statusCode !== 200) throw await responseError(res, what);
        const loc = header(res, 'location');
        return { location: loc ? this.absLocation(loc, repo) : location, offset: rangeEnd(header(res, 'range')) };
      },
      signal,
    );
  }

  private withDigest(location: string, digest: Digest): string {
    const u = new URL(location);
    u.searchParams.set('digest', digest);
    return u.toString();
  }

  /**
   * Upload a blob from a stream. Known small blobs (<= monolithicMax) go in one PUT; others stream in PATCH
   * requests of chunkSize, each retained until acknowledged so that an interrupted upload continues from the
   * registry's upload status (GET location -> Range). The digest and size are verified locally before the
   * final PUT; on failure the session is cancelled (nothing is left behind).
   */
  async putBlob(
    repo: string,
    expect: { digest?: Digest | undefined; size?: number | undefined },
    body: AsyncIterable<Uint8Array> | Readable | Buffer,
    io: BlobUploadIo = {},
  ): Promise<BlobInfo> {
    const signal = io.signal;
    const what = `uploading blob ${expect.digest ?? ''} to ${this.registry}/${repo}`.replace('  ', ' ');
    const mono = this.opts.monolithicMax ?? 1024 * 1024;
    let info: BlobInfo;
    if (Buffer.isBuffer(body) || (expect.size !== undefined && expect.size <= mono)) {
      const buf = Buffer.isBuffer(body) ? body : await readAll(body, Math.max(mono, expect.size ?? 0), what);
      info = await this.putBlobMonolithic(repo, expect, buf, io);
    } else if (io.reopen && expect.digest && expect.size !== undefined) info = await this.putBlobStreaming(repo, { digest: expect.digest, size: expect.size }, body, io, what);
    else info = await this.putBlobChunked(repo, expect, body, io, what);
    this.sawBlob(repo, info.digest, info.size);
    return info;
  }

  /** One streaming PATCH + PUT (skopeo's way); resumes by reopening the source at the registry's offset. */
  private async putBlobStreaming(
    repo: string,
    expect: { digest: Digest; size: number },
    first: AsyncIterable<Uint8Array>,
    io: BlobUploadIo & { restarts?: number },
    what: string,
  ): Promise<BlobInfo> {
    const signal = io.signal;
    const reopen = io.reopen!;
    // No local hash here: the registry computes the digest of what it stored and refuses the final PUT with
    // DIGEST_INVALID when it differs (nothing is committed); hashing 250 MB again would only cost CPU.
    let hasher: Hasher | undefined;
    let body: AsyncIterable<Uint8Array> = first;
    let loc = await this.startUpload(repo, signal);
    let offset = 0;
    let sent = 0;
    let failures = 0;
    let restarts = io.restarts ?? 0;
    let resumed = false;
    async function* counted(src: AsyncIterable<Uint8Array>, from: number): AsyncGenerator<Uint8Array> {
      let pos = from;
      for await (const c of chunksOf(src)) {
        if (pos + c.length > expect.size) throw new SizeMismatchError(expect.size, pos + c.length, `blob ${expect.digest}`);
        hasher?.update(c);
        pos += c.length;
        sent = pos;
        io.onProgress?.(c.length);
        yield c;
      }
    }
    try {
      while (offset < expect.size) {
        try {
          this.stats.patches++;
          const res = await this.send({
            method: 'PATCH',
            path: loc,
            headers: { 'content-type': 'application/octet-stream', 'content-range': `${offset}-${expect.size - 1}`, 'content-length': String(expect.size - offset) },
            body: Readable.from(counted(body, offset)),
            scopes: this.pushScope(repo),
            signal,
          });
          if (res.statusCode !== 202 && res.statusCode !== 204) throw await responseError(res, `${what}: PATCH at ${offset}`);
          await res.body.dump();
          const l = header(res, 'location');
          if (l) loc = this.absLocation(l, repo);
          const r = header(res, 'range');
          const got = r !== undefined ? rangeEnd(r) : sent;
          if (got !== expect.size) throw new OciError('BLOB_UPLOAD_INVALID', `${what}: the registry has ${got} of ${expect.size} bytes after the PATCH`, { temporary: false });
          offset = got;
        } catch (e) {
          if (sent < expect.size && e instanceof SizeMismatchError) throw e;
          if (signal?.aborted || !isTemporary(e) || failures >= this.retryTimes) throw e;
          failures++;
          this.stats.retries++;
          await sleep(this.backoffMs(failures, e), signal);
          const st = await this.uploadStatus(repo, loc, signal);
          if (!st || st.offset > expect.size) {
            // the registry lost the session (distribution killed mid-PATCH): start again from 0
            if (restarts >= this.retryTimes)
              throw new OciError('BLOB_UPLOAD_UNKNOWN', `${what}: the upload session is gone after an interruption (${(e as Error).message})`, { cause: e, temporary: true });
            restarts++;
            this.stats.restartedUploads++;
            if (st) await this.cancelUpload(repo, loc);
            loc = await this.startUpload(repo, signal);
            offset = 0;
          } else {
            this.stats.resumedUploads++;
            resumed = true;
            loc = st.location;
            offset = st.offset;
          }
          body = await reopen(offset);
        }
      }
      if (hasher) {
        const got = hasher.digest();
        if (got !== expect.digest) throw new DigestMismatchError(expect.digest, got, `blob uploaded to ${this.registry}/${repo}`);
      }
      try {
        await this.finishUpload(repo, loc, expect.digest, signal);
      } catch (e) {
        // A registry killed mid-PATCH may report an offset past what it really kept: the resumed upload then has
        // the right size and the wrong digest. The source is fine (it was verified or is re-read): send it again
        // from byte 0 in a new session, once per allowed retry.
        if (!resumed || !(e instanceof OciError) || e.code !== 'DIGEST_INVALID' || restarts >= this.retryTimes || signal?.aborted) throw e;
        this.stats.restartedUploads++;
        await this.cancelUpload(repo, loc);
        loc = '';
        return await this.putBlobStreaming(repo, expect, await reopen(0), { ...io, restarts: restarts + 1 }, what);
      }
      loc = '';
      return { digest: expect.digest, size: expect.size };
    } finally {
      if (loc) await this.cancelUpload(repo, loc);
    }
  }

  /** The final PUT ?digest= of an upload session (retried; a retry that finds the blob committed is success). */
  private async finishUpload(repo: string, loc: string, digest: Digest, signal?: AbortSignal): Promise<void> {
    const finalWhat = `finishing upload of ${digest} to ${this.registry}/${repo}`;
    await this.retrying(
      finalWhat,
      async (attempt) => {
        const res = await this.send({
          method: 'PUT',
          path: this.withDigest(loc, digest),
          headers: { 'content-type': 'application/octet-stream', 'content-length': '0' },
          body: '',
          scopes: this.pushScope(repo),
          signal,
        });
        if (res.statusCode === 201 || res.statusCode === 204 || res.statusCode === 200) return void (await res.body.dump());
        if (attempt > 0 && res.statusCode === 404 && (await this.statBlob(repo, digest, { signal }))) return void (await res.body.dump());
        throw await responseError(res, finalWhat);
      },
      signal,
    );
  }

  private async putBlobMonolithic(repo: string, expect: { digest?: Digest | undefined; size?: number | undefined }, buf: Buffer, io: Io): Promise<BlobInfo> {
    const digest = expect.digest ? expect.digest : digestOf(buf);
    const got = digestOf(buf, digestAlgorithm(digest));
    if (expect.size !== undefined && buf.length !== expect.size) throw new SizeMismatchError(expect.size, buf.length, `blob ${digest}`);
    if (got !== digest) throw new DigestMismatchError(digest, got, `blob for ${this.registry}/${repo}`);
    const what = `uploading blob ${digest} to ${this.registry}/${repo}`;
    await this.retrying(
      what,
      async () => {
        const loc = await this.startUpload(repo, io.signal);
        const res = await this.send({
          method: 'PUT',
          path: this.withDigest(loc, digest),
          headers: { 'content-type': 'application/octet-stream', 'content-length': String(buf.length) },
          body: buf,
          scopes: this.pushScope(repo),
          signal: io.signal,
        });
        if (res.statusCode !== 201 && res.statusCode !== 204 && res.statusCode !== 200) {
          const e = await responseError(res, what);
          await this.cancelUpload(repo, loc);
          throw e;
        }
        await res.body.dump();
      },
      io.signal,
    );
    io.onProgress?.(buf.length);
    return { digest, size: buf.length };
  }

  private async putBlobChunked(
    repo: string,
    expect: { digest?: Digest | undefined; size?: number | undefined },
    body: AsyncIterable<Uint8Array>,
    io: BlobUploadIo & { restarts?: number },
    what: string,
  ): Promise<BlobInfo> {
    const signal = io.signal;
    const chunk = this.opts.chunkSize ?? 16 * 1024 * 1024;
    const hasher = new Hasher(expect.digest ? digestAlgorithm(expect.digest) : 'sha256');
    const it = body[Symbol.asyncIterator]();
    // every byte pulled from the source is hashed once and kept in `win` until the registry acknowledges it
    let win: Buffer[] = [];
    let winStart = 0; // absolute offset of win[0]
    let pulled = 0; // bytes pulled from the source
    let srcDone = false;
    let pending: Promise<void> | undefined;
    const pull = (): Promise<void> =>
      (pending ??= (async () => {
        try {
          const r = await it.next();
          if (r.done) srcDone = true;
          else {
            const b = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
            if (expect.size !== undefined && pulled + b.length > expect.size) throw new SizeMismatchError(expect.size, pulled + b.length, `blob ${expect.digest ?? ''}`);
            hasher.update(b);
            win.push(b);
            pulled += b.length;
          }
        } finally {
          pending = undefined;
        }
      })());
    const ack = (offset: number) => {
      // drop acknowledged bytes
      while (win.length && winStart + win[0]!.length <= offset) {
        winStart += win[0]!.length;
        win.shift();
      }
      if (win.length && winStart < offset) {
        win[0] = win[0]!.subarray(offset - winStart);
        winStart = offset;
      }
    };
    /** Bytes [from, to) of the stream, pulling from the source as needed. */
    async function* range(from: number, to: number): AsyncGenerator<Buffer> {
      let pos = from;
      while (pos < to) {
        if (pos >= pulled) {
          if (srcDone) return;
          await pull();
          continue;
        }
        // find pos in the window
        let off = winStart;
        for (const b of win) {
          if (pos < off + b.length) {
            const piece = b.subarray(pos - off, Math.min(b.length, to - off));
            pos += piece.length;
            io.onProgress?.(piece.length);
            yield piece;
            break;
          }
          off += b.length;
        }
        if (pos < winStart) throw new TsimageError(`internal: upload window lost bytes at ${pos}`);
      }
    }
    let loc = await this.startUpload(repo, signal);
    let offset = 0; // acknowledged by the registry
    let failures = 0;
    try {
      for (;;) {
        if (srcDone && offset >= pulled) break;
        if (!srcDone && pulled <= offset) {
          await pull();
          if (srcDone && offset >= pulled) break;
        }
        const end = expect.size !== undefined ? Math.min(expect.size, offset + chunk) : offset + chunk;
        const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
        if (expect.size !== undefined) {
          if (end <= offset) throw new SizeMismatchError(expect.size, pulled, `blob ${expect.digest ?? ''}`);
          headers['content-range'] = `${offset}-${end - 1}`;
          headers['content-length'] = String(end - offset);
        }
        try {
          this.stats.patches++;
          const res = await this.send({ method: 'PATCH', path: loc, headers, body: Readable.from(range(offset, end)), scopes: this.pushScope(repo), signal });
          if (res.statusCode !== 202 && res.statusCode !== 204) throw await responseError(res, `${what}: PATCH at ${offset}`);
          await res.body.dump();
          const l = header(res, 'location');
          if (l) loc = this.absLocation(l, repo);
          const r = header(res, 'range');
          const got = r !== undefined ? rangeEnd(r) : Math.min(end, pulled);
          if (got < offset || got > pulled) throw new OciError('BLOB_UPLOAD_INVALID', `${what}: the registry reports ${got} bytes, sent ${pulled}`, { temporary: false });
          offset = got;
          ack(offset);
          failures = 0;
        } catch (e) {
          if (srcDone && expect.size !== undefined && pulled < expect.size) throw new SizeMismatchError(expect.size, pulled, `blob ${expect.digest ?? ''}`);
          if (signal?.aborted || !isTemporary(e) || failures >= this.retryTimes) throw e;
          failures++;
          this.stats.retries++;
          await sleep(this.backoffMs(failures, e), signal);
          // where is the registry? continue from there
          const st = await this.uploadStatus(repo, loc, signal);
          // not resumable: temporary (the whole blob can be sent again: io.reopen here, or the caller's retry)
          if (!st) throw restartable(new OciError('BLOB_UPLOAD_UNKNOWN', `${what}: the upload session is gone after an interruption at byte ${offset} (${(e as Error).message})`, { cause: e, temporary: true }));
          if (st.offset < winStart || st.offset > pulled)
            throw restartable(new OciError('BLOB_UPLOAD_INVALID', `${what}: cannot resume: the registry has ${st.offset} bytes, retained ${winStart}-${pulled}`, { cause: e, temporary: true }));
          this.stats.resumedUploads++;
          loc = st.location;
          offset = st.offset;
          ack(offset);
        }
      }
      const digest = hasher.digest();
      if (expect.size !== undefined && pulled !== expect.size) throw new SizeMismatchError(expect.size, pulled, `blob ${expect.digest ?? digest}`);
      if (expect.digest && digest !== expect.digest) throw new DigestMismatchError(expect.digest, digest, `blob uploaded to ${this.registry}/${repo}`);
      await this.finishUpload(repo, loc, digest, signal);
      loc = '';
      return { digest, size: pulled };
    } catch (e) {
      const restarts = io.restarts ?? 0;
      if (io.reopen && (e as { restartable?: boolean }).restartable && restarts < this.retryTimes && !signal?.aborted) {
        if (loc) await this.cancelUpload(repo, loc);
        loc = '';
        if (!srcDone) await it.return?.().catch(() => undefined);
        this.stats.restartedUploads++;
        return this.putBlobChunked(repo, expect, await io.reopen(0), { ...io, restarts: restarts + 1 }, what);
      }
      throw e;
    } finally {
      win = [];
      if (loc) {
        await this.cancelUpload(repo, loc);
        if (!srcDone) await it.return?.().catch(() => undefined);
      }
    }
  }

  // ---------------------------------------------------------------- listings

  private async paginate(first: string, scopes: string[], key: string, what: string, signal?: AbortSignal): Promise<string[]> {
    const out: string[] = [];
    let next: string | undefined = first;
    for (let page = 0; next; page++) {
      if (page > 100_000) throw new TsimageError(`${what}: too many pages`);
      const url: string = next;
      const doc = await this.retrying(
        what,
        async () => {
          const res = await this.send({ method: 'GET', path: url, scopes, signal });
          if (res.statusCode !== 200) throw await responseError(res, what);
          const link = header(res, 'link');
          const body = JSON.parse((await readCapped(res.body, 64 * 1024 * 1024, what)).toString('utf8')) as Record<string, unknown>;
          return { body, link };
        },
        signal,
      );
      const list = doc.body[key];
      if (Array.isArray(list)) for (const x of list) if (typeof x === 'string') out.push(x);
      next = undefined;
      if (doc.link) {
        const m = /<([^>]+)>\s*;\s*rel="?next"?/.exec(doc.link);
        if (m) next = new URL(m[1]!, `${this.origin}${url.startsWith('http') ? '' : url}`).toString();
      }
    }
    return out;
  }

  /** All tags of a repository (follows `Link` pagination; `pageSize` sets `n`). */
  async listTags(repo: string, io: Io & { pageSize?: number | undefined } = {}): Promise<string[]> {
    const q = io.pageSize ? `?n=${io.pageSize}` : '';
    return this.paginate(`/v2/${repo}/tags/list${q}`, this.pullScope(repo), 'tags', `listing tags of ${this.registry}/${repo}`, io.signal);
  }

  /** The registry's catalog (follows `Link` pagination). */
  async catalog(io: Io & { pageSize?: number | undefined } = {}): Promise<string[]> {
    const q = io.pageSize ? `?n=${io.pageSize}` : '';
    return this.paginate(`/v2/_catalog${q}`, [CATALOG_SCOPE], 'repositories', `listing the catalog of ${this.registry}`, io.signal);
  }

  /**
   * Referrers of a manifest: the OCI 1.1 referrers API, or (when the registry answers 404/405 there) the
   * referrers tag scheme `<alg>-<hex>` (an index whose manifests are the referrers). Filtered by artifactType
   * client-side when the registry did not apply the filter.
   */
  async referrers(repo: string, digest: Digest, io: Io & { artifactType?: string | undefined } = {}): Promise<Descriptor[]> {
    parseDigest(digest);
    const what = `listing referrers of ${this.registry}/${repo}@${digest}`;
    const q = io.artifactType ? `?artifactType=${encodeURIComponent(io.artifactType)}` : '';
    const api = this.noReferrersApi ? undefined : await this.retrying(
      what,
      async () => {
        const res = await this.send({
          method: 'GET',
          path: `/v2/${repo}/referrers/${digest}${q}`,
          headers: { accept: 'application/vnd.oci.image.index.v1+json' },
          scopes: this.pullScope(repo),
          signal: io.signal,
        });
        if (res.statusCode === 404 || res.statusCode === 405 || res.statusCode === 400) {
          const ct = (header(res, 'content-type') ?? '').split(';')[0]!.trim();
          if (res.statusCode === 405 || (res.statusCode === 404 && ct !== 'application/json')) this.noReferrersApi = true;
          await res.body.dump();
          return undefined;
        }
        if (res.statusCode !== 200) throw await responseError(res, what);
        const ct = (header(res, 'content-type') ?? '').split(';')[0]!.trim();
        const filtered = (header(res, 'oci-filters-applied') ?? '').split(',').map((s) => s.trim()).includes('artifactType');
        const body = await readCapped(res.body, MAX_MANIFEST_SIZE, what);
        if (ct && ct !== 'application/vnd.oci.image.index.v1+json' && ct !== 'application/json') return undefined;
        return { doc: JSON.parse(body.toString('utf8')) as { manifests?: Descriptor[] }, filtered };
      },
      io.signal,
    );
    let list: Descriptor[];
    let filtered = false;
    if (api) {
      list = Array.isArray(api.doc.manifests) ? api.doc.manifests : [];
      filtered = api.filtered;
    } else {
      const tag = `${digestAlgorithm(digest)}-${digestHex(digest)}`;
      let m: ManifestResponse;
      try {
        m = await this.getManifest(repo, tag, { signal: io.signal, accept: ['application/vnd.oci.image.index.v1+json'] });
      } catch (e) {
        if (e instanceof OciError && (e.code === 'MANIFEST_UNKNOWN' || e.status === 404)) return [];
        throw e;
      }
      const doc = JSON.parse(m.bytes.toString('utf8')) as { manifests?: Descriptor[] };
      list = Array.isArray(doc.manifests) ? doc.manifests : [];
    }
    if (io.artifactType && !filtered) list = list.filter((x) => x.artifactType === io.artifactType);
    return list;
  }
}

/** `Range: 0-N` (or `bytes=0-N`) -> N+1 bytes the registry holds; `0-0` and missing -> 0... see below. */
function rangeEnd(v: string | undefined): number {
  if (!v) return 0;
  const m = /(\d+)-(\d+)/.exec(v);
  if (!m) return 0;
  const end = Number(m[2]);
  // distribution answers "0-0" for an empty upload as well as for one byte; the spec says 0-0 means empty
  // only before any data was written; we treat 0-0 as 0 bytes (a 1-byte upload re-sends that byte).
  return end === 0 ? 0 : end + 1;
}

// ---------------------------------------------------------------- shared clients

const clients = new Map<string, RegistryClient>();

/**
 * The process-wide client for a registry and option set: sources and destinations on one registry share its
 * pools and tokens. Pass the registry name as in references (`docker.io`, `127.0.0.1:5000`).
 */
export function registryClient(registry: string, opts: RegistryClientOptions = {}): RegistryClient {
  const key = JSON.stringify([registry, opts.tlsVerify, opts.creds, opts.registryToken, opts.authfile, opts.certDir, opts.retryTimes, opts.retryDelayMs, opts.userAgent]);
  let c = clients.get(key);
  if (!c) {
    c = new RegistryClient(registry, opts);
    clients.set(key, c);
  }
  return c;
}

/** Close every shared client (end of a CLI command). */
export async function closeRegistryClients(): Promise<void> {
  const cs = [...clients.values()];
  clients.clear();
  await Promise.all(cs.map((c) => c.close()));
  if (blobWorkersUsed) await (await import('./blob-workers.js')).closeBlobWorkers();
}
