/** src/registry: the OCI Distribution Spec v1.1 server (tsregistry). */
export * from './driver.js';
export * from './driver-fs.js';
export * as layout from './paths.js';
export * from './hooks.js';
export * from './store.js';
export * from './config.js';
export * from './app.js';
export * from './server.js';
export { errorBody, send, sendError, sendJson, type Deps } from './http.js';
// ---- production features (regprod) ----
export * from './auth/index.js';
export * from './tls.js';
export * from './log.js';
export * from './metrics.js';
export * from './gc.js';
export * from './retention.js';
export * from './quota.js';
export * from './prod.js';
export * from './scrub.js';
export * from './mirror/config.js';
export * from './mirror/upstream.js';
export * from './mirror/store.js';
