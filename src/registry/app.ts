/**
 * The registry's hono app: `createRegistryApp({ store, authorize, ... })`. Routes live one
 * file per resource in routes/; every route validates the repository name and asks the
 * authoriser for its access before the handler runs (see hooks.ts for the seams).
 */
import { Hono } from 'hono';
import { OciError } from '../oci/index.js';
import type { AppEnv, Authorizer } from './hooks.js';
import { sendError, type Deps } from './http.js';
import { blobRoutes } from './routes/blobs.js';
import { manifestRoutes } from './routes/manifests.js';
import { metaRoutes } from './routes/meta.js';
import type { RegistryStore } from './store.js';

export interface RegistryAppOptions {
  store: RegistryStore;
  /** Authentication and authorisation for every route (default: allow everything). */
  authorize?: Authorizer | undefined;
  /** Largest manifest accepted (default 4 MiB). */
  maxManifestSize?: number | undefined;
  /** Default and largest page of catalog/referrers lists (default 1000). */
  pageSize?: number | undefined;
  /**
   * Called with the app before the /v2 routes are added: add middleware (access logs,
   * metrics, request ids) with `app.use('*', ...)` and extra routes (/metrics, /healthz,
   * /token). Hot routes write to `c.env.outgoing` directly and return hono-node-server's
   * RESPONSE_ALREADY_SENT: read the status from `c.env.outgoing.statusCode` after `next()`
   * (or on the outgoing 'finish' event), not from `c.res`.
   */
  extend?: ((app: Hono<AppEnv>, deps: Deps) => void) | undefined;
}

export function createRegistryApp(o: RegistryAppOptions): Hono<AppEnv> {
  const deps: Deps = {
    store: o.store,
    authorize: o.authorize,
    maxManifestSize: o.maxManifestSize ?? 4 * 1024 * 1024,
    pageSize: o.pageSize ?? 1000,
  };
  const app = new Hono<AppEnv>();
  o.extend?.(app, deps);
  app.route('/', metaRoutes(deps));
  app.route('/', blobRoutes(deps));
  app.route('/', manifestRoutes(deps));
  app.get('/v2', (c) => c.redirect('/v2/', 301));
  app.notFound((c) => sendError(c, new OciError('UNSUPPORTED', `no such endpoint: ${c.req.method} ${c.req.path}`, { status: 404 })));
  app.onError((err, c) => sendError(c, err));
  return app;
}
