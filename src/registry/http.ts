/**
 * Route plumbing shared by routes/*: the error envelope, name/digest validation, the access
 * guard that runs the authoriser, direct writes to the Node response for hot paths, and
 * pagination.
 */
import type { Context, MiddlewareHandler } from 'hono';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import type { OutgoingHttpHeaders } from 'node:http';
import { OciError, isDigest, isValidRepositoryName, type Digest } from '../oci/index.js';
import type { Access, AppEnv, Authorizer, RouteName } from './hooks.js';
import type { RegistryStore } from './store.js';

export type Deps = {
  store: RegistryStore;
  authorize?: Authorizer | undefined;
  /** Maximum manifest body in bytes (default 4 MiB). */
  maxManifestSize: number;
  /** Default and maximum page size of tags/catalog/referrers (default 1000). */
  pageSize: number;
};

export type Ctx = Context<AppEnv>;

export const API_VERSION_HEADER = { 'Docker-Distribution-API-Version': 'registry/2.0' } as const;

/** The spec's JSON error envelope. */
export function errorBody(e: OciError): string {
  return JSON.stringify({ errors: [e.toJSON()] });
}

/** Respond by writing straight to the Node response (no Web Response/stream conversion). */
export function send(c: Ctx, status: number, headers: OutgoingHttpHeaders, body?: Buffer | string): Response {
  const out = c.env.outgoing;
  const h: OutgoingHttpHeaders = { ...API_VERSION_HEADER, ...headers };
  if (body !== undefined && h['Content-Length'] === undefined) h['Content-Length'] = Buffer.byteLength(body);
  if (h['Content-Length'] === undefined) h['Content-Length'] = 0;
  out.writeHead(status, h);
  if (body === undefined || c.req.method === 'HEAD') out.end();
  else out.end(body);
  return RESPONSE_ALREADY_SENT;
}

export function sendJson(c: Ctx, status: number, doc: unknown, headers: OutgoingHttpHeaders = {}): Response {
  return send(c, status, { 'Content-Type': 'application/json', ...headers }, JSON.stringify(doc));
}

export function sendError(c: Ctx, err: unknown): Response {
  const e = OciError.from(err);
  const out = c.env.outgoing;
  if (out.headersSent) {
    out.destroy(e);
    return RESPONSE_ALREADY_SENT;
  }
  const extra: OutgoingHttpHeaders = {};
  const detail = e.detail as { headers?: Record<string, string> } | undefined;
  if (detail && typeof detail === 'object' && detail.headers) Object.assign(extra, detail.headers);
  if (e.code === 'UNSUPPORTED' && e.status === 405) extra.Allow = 'GET, HEAD';
  return send(c, e.status, { 'Content-Type': 'application/json', ...extra }, errorBody(e));
}

/** The repository name from the route, validated against the spec's regex. */
export function repoName(c: Ctx): string {
  const name = param(c, 'name');
  if (!name || !isValidRepositoryName(name)) throw new OciError('NAME_INVALID', `invalid repository name ${JSON.stringify(name ?? '')}`, { detail: { name } });
  return name;
}

/** A route parameter (always present when the route matched). */
export function param(c: Ctx, name: string): string {
  return (c.req.param as (k: string) => string | undefined)(name) ?? '';
}

export function digestParam(s: string | undefined, what = 'digest'): Digest {
  if (!s || !isDigest(s)) throw new OciError('DIGEST_INVALID', `invalid ${what} ${JSON.stringify(s ?? '')}`, { detail: { digest: s } });
  return s;
}

/**
 * Route middleware: validate the name, record route/repo/access on the context, and ask the
 * authoriser (when configured) before the handler runs.
 */
export function guard(deps: Deps, route: RouteName, access: (c: Ctx, repo: string | undefined) => Access[], opts: { repo?: boolean } = {}): MiddlewareHandler<AppEnv> {
  const needsRepo = opts.repo ?? true;
  return async function registryGuard(c, next) {
    try {
      const repo = needsRepo ? repoName(c) : undefined;
      const acc = access(c, repo);
      c.set('route', route);
      if (repo) c.set('repo', repo);
      c.set('access', acc);
      if (deps.authorize) {
        const res = await deps.authorize(c, acc, route);
        if (res) return res;
      }
    } catch (e) {
      return sendError(c, e);
    }
    await next();
  };
}

/** Wrap a handler so that every failure becomes the spec's error envelope. */
export function handler(fn: (c: Ctx) => Promise<Response> | Response) {
  return async (c: Ctx): Promise<Response> => {
    try {
      return await fn(c);
    } catch (e) {
      return sendError(c, e);
    }
  };
}

/** `n` and `last` of a paginated list request. n=0 means an empty page. */
export function pageParams(c: Ctx, max: number): { n: number; last: string | undefined; explicit: boolean } {
  const nRaw = c.req.query('n');
  let n = max;
  let explicit = false;
  if (nRaw !== undefined && nRaw !== '') {
    if (!/^\d+$/.test(nRaw)) throw new OciError('UNSUPPORTED', `invalid page size n=${JSON.stringify(nRaw)}`, { status: 400 });
    n = Math.min(Number(nRaw), max);
    explicit = true;
  }
  const last = c.req.query('last') || undefined;
  return { n, last, explicit };
}

/** Cut a sorted list after `last`, take `n`, and give the Link header for the next page. */
export function paginate(all: string[], p: { n: number; last: string | undefined }, base: string, extra = ''): { page: string[]; link?: string } {
  let start = 0;
  if (p.last !== undefined) {
    start = all.findIndex((x) => x > p.last!);
    if (start < 0) start = all.length;
  }
  const page = all.slice(start, start + p.n);
  const out: { page: string[]; link?: string } = { page };
  if (start + p.n < all.length && page.length > 0) {
    out.link = `<${base}?n=${p.n}&last=${encodeURIComponent(page[page.length - 1]!)}${extra}>; rel="next"`;
  }
  return out;
}
