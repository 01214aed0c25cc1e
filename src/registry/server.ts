/**
 * `startServer(config)`: storage, store, app and a Node HTTP server (keep-alive, no request
 * timeout for long uploads, upload purging), with a graceful close that finishes in-flight
 * requests. TLS (regprod) passes its own `createServer` and `serverOptions`.
 */
import { createServer as createHttpServer, type Server, type ServerOptions } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir } from 'node:fs/promises';
import { getRequestListener } from '@hono/node-server';
import type { Hono } from 'hono';
import { createRegistryApp, type RegistryAppOptions } from './app.js';
import { parseAddr, type RegistryConfig } from './config.js';
import { FilesystemDriver } from './driver-fs.js';
import type { StorageDriver } from './driver.js';
import type { AppEnv, Authorizer, StoreHooks } from './hooks.js';
import { RegistryStore } from './store.js';

export interface StartOptions {
  /** Use this store instead of a filesystem one at config.storage.root (mirror, tests). */
  store?: RegistryStore | undefined;
  driver?: StorageDriver | undefined;
  hooks?: StoreHooks | undefined;
  authorize?: Authorizer | undefined;
  extend?: RegistryAppOptions['extend'];
  /** e.g. https.createServer for TLS (regprod's tls.ts). */
  createServer?: ((opts: ServerOptions, listener: Parameters<typeof createHttpServer>[1]) => Server) | undefined;
  serverOptions?: ServerOptions | Record<string, unknown> | undefined;
  /** Scheme for the printed URL (https with TLS). */
  scheme?: 'http' | 'https' | undefined;
}

export interface RunningRegistry {
  /** e.g. http://127.0.0.1:5000 */
  url: string;
  /** host:port as clients address it (e.g. 127.0.0.1:5000) */
  address: string;
  port: number;
  server: Server;
  app: Hono<AppEnv>;
  store: RegistryStore;
  config: RegistryConfig;
  /** Stop accepting, finish in-flight requests (up to http.shutdownTimeout), then close everything. */
  close(): Promise<void>;
}

export function createStore(config: RegistryConfig, o: { driver?: StorageDriver | undefined; hooks?: StoreHooks | undefined } = {}): RegistryStore {
  const driver = o.driver ?? new FilesystemDriver(config.storage.root, { fsync: config.storage.fsync });
  return new RegistryStore(driver, {
    hooks: o.hooks,
    cacheTtlMs: config.storage.cache.ttl,
    manifestCacheBytes: config.storage.cache.manifestBytes,
    deleteEnabled: config.storage.delete.enabled,
    mountWithoutFrom: config.storage.mountWithoutFrom,
  });
}

export async function startServer(config: RegistryConfig, o: StartOptions = {}): Promise<RunningRegistry> {
  if (!o.store && !o.driver) await mkdir(config.storage.root, { recursive: true });
  const store = o.store ?? createStore(config, { driver: o.driver, hooks: o.hooks });
  const app = createRegistryApp({
    store,
    authorize: o.authorize,
    maxManifestSize: config.limits.manifestSize,
    pageSize: config.limits.pageSize,
    extend: o.extend,
  });
  const listener = getRequestListener(app.fetch, { overrideGlobalObjects: true });
  const serverOptions: ServerOptions = {
    keepAliveTimeout: config.http.keepAliveTimeout,
    requestTimeout: config.http.requestTimeout,
    headersTimeout: config.http.headersTimeout,
    ...(o.serverOptions as ServerOptions | undefined),
  };
  const server = o.createServer ? o.createServer(serverOptions, listener) : createHttpServer(serverOptions, listener);
  server.keepAliveTimeout = config.http.keepAliveTimeout;
  const { host, port } = parseAddr(config.http.addr);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  const shownHost = a.family === 'IPv6' ? `[${a.address}]` : a.address === '0.0.0.0' ? '127.0.0.1' : a.address;
  const address = `${shownHost}:${a.port}`;

  let purge: NodeJS.Timeout | undefined;
  if (config.storage.uploads.purgeInterval > 0) {
    purge = setInterval(() => {
      store.purgeUploads(Date.now() - config.storage.uploads.expiry).catch(() => {});
    }, config.storage.uploads.purgeInterval);
    purge.unref();
  }

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= new Promise<void>((resolve) => {
      if (purge) clearInterval(purge);
      const force = setTimeout(() => server.closeAllConnections(), config.http.shutdownTimeout);
      force.unref();
      server.close(() => {
        clearTimeout(force);
        resolve();
      });
      server.closeIdleConnections();
    }));

  return { url: `${o.scheme ?? 'http'}://${address}`, address, port: a.port, server, app, store, config, close };
}
