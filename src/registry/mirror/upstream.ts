/**
 * A small upstream-registry fetcher for the pull-through mirror (undici): GET/HEAD of
 * manifests and blobs with the distribution auth dance (Basic, or Bearer tokens from the
 * realm named in the WWW-Authenticate challenge, cached per scope until they expire).
 * Only what the mirror needs; the full client for tscopy/tsbuild lives in src/copy.
 */
import { Agent, request, type Dispatcher } from 'undici';
import type { Readable } from 'node:stream';
import { isValidTag } from '../../oci/index.js';

export interface UpstreamConfig {
  /** e.g. https://registry-1.docker.io or http://127.0.0.1:5001 */
  url: string;
  username?: string;
  password?: string;
  /** Skip TLS verification (self-signed test registries). */
  insecure?: boolean;
  /** Prepended to the upstream repository name (e.g. "library" for Docker Hub: one-component names only). */
  prefix?: string;
}

export class UpstreamError extends Error {
  constructor(
    message: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
  /** Worth serving stale / trying the next upstream (network, 429, 5xx), as opposed to "not there" (404). */
  get unavailable(): boolean {
    return this.status === undefined || this.status === 429 || this.status === 408 || this.status >= 500 || this.status === 401 || this.status === 403;
  }
}

export interface UpstreamResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable & { dump(): Promise<void>; text(): Promise<string>; arrayBuffer(): Promise<ArrayBuffer> };
}

type Challenge = { scheme: string; params: Record<string, string> };

function parseChallenge(h: string | string[] | undefined): Challenge | undefined {
  const v = Array.isArray(h) ? h[0] : h;
  if (!v) return undefined;
  const m = /^\s*(\w+)\s*(.*)$/.exec(v);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2]!))) params[p[1]!.toLowerCase()] = p[2] ?? p[3] ?? '';
  return { scheme: m[1]!.toLowerCase(), params };
}

function header(h: UpstreamResponse['headers'], k: string): string | undefined {
  const v = h[k];
  return Array.isArray(v) ? v[0] : v;
}

export { header as upstreamHeader };

const MAX_TAG_PAGES = 1000;
const MAX_REDIRECTS = 10;

function upstreamLocation(r: UpstreamResponse): string | undefined {
  return header(r.headers, 'location');
}
const MAX_TAG_PAGE = 16 * 1024 * 1024;

/** The query of a `Link: <...>; rel="next"` header ("?n=..&last=.."), or undefined. */
function nextPage(link: string | undefined, base: string): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(/,(?=\s*<)/)) {
    const m = /^\s*<([^>]*)>\s*;(.*)$/.exec(part);
    if (!m || !/\brel\s*=\s*"?next"?/i.test(m[2]!)) continue;
    try {
      const u = new URL(m[1]!, base);
      return u.search || undefined;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

async function readCapped(body: Readable, max: number, where: string): Promise<string> {
  const parts: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of body) {
      n += (c as Buffer).length;
      if (n > max) {
        body.destroy();
        throw new UpstreamError(`${where}: the answer is over ${max} bytes`, 502);
      }
      parts.push(c as Buffer);
    }
  } catch (e) {
    if (e instanceof UpstreamError) throw e;
    throw new UpstreamError(`${where}: ${(e as Error).message}`, undefined, { cause: e });
  }
  return Buffer.concat(parts).toString('utf8');
}

export class Upstream {
  readonly base: string;
  private readonly dispatcher: Dispatcher;
  private readonly tokens = new Map<string, { token: string; until: number }>();
  private basic: string | undefined;

  constructor(
    readonly config: UpstreamConfig,
    private readonly timeoutMs = 30_000,
  ) {
    this.base = config.url.replace(/\/+$/, '');
    this.dispatcher = new Agent({
      connections: 32,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      connectTimeout: Math.min(timeoutMs, 10_000),
      ...(config.insecure ? { connect: { rejectUnauthorized: false } } : {}),
    });
    if (config.username !== undefined) this.basic = `Basic ${Buffer.from(`${config.username}:${config.password ?? ''}`).toString('base64')}`;
  }

  /**
   * The upstream repository name of a local one (with the configured prefix). Docker Hub's
   * `library` prefix goes only before one-component names, as docker normalizes them:
   * alpine -> library/alpine, bitnami/redis stays bitnami/redis.
   */
  remoteName(name: string): string {
    const prefix = this.config.prefix?.replace(/\/+$/, '');
    if (!prefix || (prefix === 'library' && name.includes('/'))) return name;
    return `${prefix}/${name}`;
  }

  /**
   * One request to /v2/<name>/<path>: authenticates on 401 and retries once. Non-2xx
   * answers other than 404 and 416 are thrown as UpstreamError; connection failures too.
   */
  async fetch(method: 'GET' | 'HEAD', name: string, path: string, o: { accept?: string; range?: string; signal?: AbortSignal } = {}): Promise<UpstreamResponse> {
    const remote = this.remoteName(name);
    const scope = `repository:${remote}:pull`;
    const send = async (url: string, auth: string | undefined): Promise<UpstreamResponse> => {
      const headers: Record<string, string> = { 'user-agent': 'tsregistry-mirror' };
      if (o.accept) headers.accept = o.accept;
      if (o.range) headers.range = o.range;
      if (auth) headers.authorization = auth;
      try {
        const r = await request(url, { method, headers, dispatcher: this.dispatcher, ...(o.signal ? { signal: o.signal } : {}) });
        return { status: r.statusCode, headers: r.headers, body: r.body as unknown as UpstreamResponse['body'] };
      } catch (e) {
        const where = url.startsWith(this.base) ? path : `${path} (redirected to ${new URL(url).origin})`;
        throw new UpstreamError(`upstream ${this.base}: ${method} ${where}: ${(e as Error).message}`, undefined, { cause: e });
      }
    };
    let url = `${this.base}/v2/${remote}/${path}`;
    const cached = this.tokens.get(scope);
    let auth = cached && cached.until > Date.now() ? `Bearer ${cached.token}` : this.basic;
    let r = await send(url, auth);
    if (r.status === 401) {
      const ch = parseChallenge(r.headers['www-authenticate']);
      await r.body.dump().catch(() => {});
      auth = undefined;
      if (ch?.scheme === 'bearer' && ch.params.realm) auth = `Bearer ${await this.token(ch.params, scope, o.signal)}`;
      else if (ch?.scheme === 'basic' && this.basic) auth = this.basic;
      if (!auth) throw new UpstreamError(`upstream ${this.base}: ${method} ${path}: 401 unauthorized${this.basic ? '' : ' (no credentials configured)'}`, 401);
      r = await send(url, auth);
    }
    // blobs are often redirected to a CDN or object store (Docker Hub, ghcr.io, quay.io, ECR):
    // follow, and send the credentials only to the registry's own origin (the target URL is
    // pre-signed; object stores refuse a second authorization)
    const origin = new URL(this.base).origin;
    for (let hops = 0; r.status >= 300 && r.status < 400 && r.status !== 304 && upstreamLocation(r); hops++) {
      const next = new URL(upstreamLocation(r)!, url);
      await r.body.dump().catch(() => {});
      if (hops >= MAX_REDIRECTS) throw new UpstreamError(`upstream ${this.base}: ${method} /v2/${remote}/${path}: more than ${MAX_REDIRECTS} redirects`, 502);
      if (next.protocol !== 'http:' && next.protocol !== 'https:') throw new UpstreamError(`upstream ${this.base}: ${method} /v2/${remote}/${path}: redirected to ${next.protocol} URL`, 502);
      url = next.toString();
      r = await send(url, next.origin === origin ? auth : undefined);
    }
    if (r.status >= 200 && r.status < 300) return r;
    if (r.status === 404 || r.status === 416) return r;
    const text = method === 'GET' ? await r.body.text().catch(() => '') : (await r.body.dump().catch(() => {}), '');
    const via = url.startsWith(`${origin}/`) ? '' : ` (redirected to ${new URL(url).origin}${new URL(url).pathname})`;
    throw new UpstreamError(`upstream ${this.base}: ${method} /v2/${remote}/${path}${via}: HTTP ${r.status}${text ? ` ${text.slice(0, 200)}` : ''}`, r.status);
  }

  /**
   * Every tag of a repository upstream (GET tags/list, following the Link pages the upstream
   * sends), or undefined when the upstream does not know the repository (404). Tags that are
   * not valid tag names are dropped; a malformed answer is an UpstreamError (502).
   */
  async tagList(name: string, o: { signal?: AbortSignal } = {}): Promise<string[] | undefined> {
    const out: string[] = [];
    let path = 'tags/list';
    for (let page = 0; page < MAX_TAG_PAGES; page++) {
      const r = await this.fetch('GET', name, path, o);
      const where = `upstream ${this.base}: GET /v2/${this.remoteName(name)}/${path}`;
      if (r.status === 404 && page === 0) {
        await r.body.dump().catch(() => {});
        return undefined;
      }
      if (r.status < 200 || r.status >= 300) {
        await r.body.dump().catch(() => {});
        throw new UpstreamError(`${where}: HTTP ${r.status}`, 502);
      }
      const text = await readCapped(r.body, MAX_TAG_PAGE, where);
      let doc: { tags?: unknown };
      try {
        doc = JSON.parse(text) as { tags?: unknown };
      } catch {
        throw new UpstreamError(`${where}: the answer is not JSON: ${JSON.stringify(text.slice(0, 100))}`, 502);
      }
      if (doc.tags !== null && doc.tags !== undefined && !Array.isArray(doc.tags)) throw new UpstreamError(`${where}: "tags" is not a list`, 502);
      for (const t of (doc.tags as unknown[] | null | undefined) ?? []) if (typeof t === 'string' && isValidTag(t)) out.push(t);
      const next = nextPage(header(r.headers, 'link'), this.base);
      if (next === undefined) return out;
      path = `tags/list${next}`;
    }
    throw new UpstreamError(`upstream ${this.base}: tags/list of ${this.remoteName(name)}: more than ${MAX_TAG_PAGES} pages`, 502);
  }

  private async token(params: Record<string, string>, scope: string, signal?: AbortSignal): Promise<string> {
    const u = new URL(params.realm!);
    if (params.service) u.searchParams.set('service', params.service);
    u.searchParams.set('scope', scope);
    const headers: Record<string, string> = { 'user-agent': 'tsregistry-mirror' };
    if (this.basic) headers.authorization = this.basic;
    let r;
    try {
      r = await request(u, { method: 'GET', headers, dispatcher: this.dispatcher, ...(signal ? { signal } : {}) });
    } catch (e) {
      throw new UpstreamError(`upstream token service ${u.origin}${u.pathname}: ${(e as Error).message}`, undefined, { cause: e });
    }
    if (r.statusCode !== 200) {
      const t = await r.body.text().catch(() => '');
      throw new UpstreamError(`upstream token service ${u.origin}${u.pathname}: HTTP ${r.statusCode} ${t.slice(0, 200)}`, r.statusCode === 401 ? 401 : r.statusCode);
    }
    const doc = (await r.body.json()) as { token?: string; access_token?: string; expires_in?: number };
    const token = doc.token ?? doc.access_token;
    if (!token) throw new UpstreamError(`upstream token service ${u.origin}${u.pathname}: no token in the answer`, 502);
    this.tokens.set(scope, { token, until: Date.now() + Math.max(10, (doc.expires_in ?? 60) - 10) * 1000 });
    return token;
  }

  async close(): Promise<void> {
    await this.dispatcher.close().catch(() => {});
  }
}
