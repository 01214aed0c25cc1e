/**
 * Wires the production features into the server: from a loaded RegistryConfig, build the
 * store (GC-aware, with immutability and quota hooks), the authoriser, the middleware and
 * extra routes (/token, /metrics, /healthz, access log), TLS server options, and what runs
 * once the server listens (SIGHUP reloads, scheduled GC + retention).
 *
 *   const prod = await productionSetup(config);
 *   const reg = await startServer(config, prod.startOptions);
 *   prod.started(reg);  ...  await prod.close(); await reg.close();
 */
import { createServer as createHttpsServer } from 'node:https';
import type { Server as TlsServer } from 'node:tls';
import { mkdir } from 'node:fs/promises';
import { UsageError, digestOf, type Digest } from '../oci/index.js';
import { RegistryAuth, validateAuthConfig } from './auth/index.js';
import { parseDuration, parseSize, type RegistryConfig } from './config.js';
import { FilesystemDriver } from './driver-fs.js';
import type { StorageDriver } from './driver.js';
import { GcCoordinator, collectGarbage, manifestReferences, type GcReport } from './gc.js';
import type { StoreHooks } from './hooks.js';
import { Logger, validateLogConfig } from './log.js';
import { RegistryMetrics, observe, PROMETHEUS_CONTENT_TYPE } from './metrics.js';
import { Quotas, validateQuota } from './quota.js';
import { TagImmutability, applyRetention, validateImmutable, validateRetention, type RetentionPolicy, type RetentionReport } from './retention.js';
import type { RunningRegistry, StartOptions } from './server.js';
import { RegistryStore, type ManifestInfo, type PutManifestOptions, type StoreOptions } from './store.js';
import { validateMirror } from './mirror/config.js';
import { httpsServerOptions, reloadTls, validateTlsConfig, type TlsConfig } from './tls.js';

/** Run every hook of every set, in order (the first refusal wins). */
export function combineHooks(...sets: (StoreHooks | undefined)[]): StoreHooks {
  const list = sets.filter((s): s is StoreHooks => !!s);
  const out: StoreHooks = {};
  for (const k of ['beforeManifestPut', 'beforeTagDelete', 'beforeBlobCommit', 'beforeBlobMount'] as const) {
    const fns = list.map((s) => s[k]).filter((f): f is NonNullable<typeof f> => !!f);
    if (fns.length) (out as Record<string, unknown>)[k] = async (e: never) => {
      for (const f of fns) await (f as (e: never) => unknown)(e);
    };
  }
  return out;
}

/**
 * The store with the GC handshake: a manifest PUT announces what it references before the
 * existence checks (so a concurrent GC spares those blobs, or the PUT is refused if GC
 * already took one), and existence checks of blobs GC just deleted bypass the lookup cache.
 */
export class ProductionStore extends RegistryStore {
  constructor(
    driver: StorageDriver,
    opts: StoreOptions,
    readonly gc: GcCoordinator,
  ) {
    super(driver, opts);
  }

  override async putManifest(repo: string, reference: string, bytes: Buffer, contentType: string | undefined, o: PutManifestOptions = {}): Promise<ManifestInfo> {
    const refs = manifestReferences(bytes, contentType?.split(';')[0]?.trim() || undefined);
    const self = reference.includes(':') ? (reference as Digest) : digestOf(bytes);
    const release = this.gc.protect([...refs, self]);
    try {
      return await super.putManifest(repo, reference, bytes, contentType, o);
    } finally {
      release();
    }
  }

  override async statBlob(repo: string, d: Digest): Promise<number | undefined> {
    if (this.gc.recentlyDeleted(d)) this.invalidateCaches();
    return super.statBlob(repo, d);
  }
}

export interface ProductionSetup {
  config: RegistryConfig;
  logger: Logger;
  metrics: RegistryMetrics;
  auth?: RegistryAuth;
  tls?: TlsConfig;
  store: RegistryStore;
  coordinator: GcCoordinator;
  retention: RetentionPolicy[];
  immutability: TagImmutability;
  quotas: Quotas;
  startOptions: StartOptions;
  /** Call once the server listens: SIGHUP handling, scheduled GC. */
  started(reg: RunningRegistry): void;
  /** One GC (+ retention first) run, as the schedule does. */
  runGc(o?: { dryRun?: boolean }): Promise<{ retention: RetentionReport; gc: GcReport }>;
  close(): Promise<void>;
}

export interface ProductionOptions {
  logger?: Logger;
  /** Use this driver instead of the filesystem at storage.root. */
  driver?: StorageDriver;
  /** Store factory (the mirror passes its own subclass). */
  makeStore?: (driver: StorageDriver, opts: StoreOptions, gc: GcCoordinator) => RegistryStore;
  /** Extra StartOptions.extend (mirror routes). */
  extend?: StartOptions['extend'];
}

export async function productionSetup(config: RegistryConfig, o: ProductionOptions = {}): Promise<ProductionSetup> {
  const logCfg = validateLogConfig(config.log, 'config log');
  const logger = o.logger ?? new Logger(logCfg ?? {});
  const authCfg = validateAuthConfig(config.auth, 'config auth');
  const tls = validateTlsConfig(config.tls, 'config tls');
  const retention = validateRetention(config.retention, parseDuration, 'config retention');
  const immutability = new TagImmutability(validateImmutable(config.immutable, 'config immutable'));
  const quotas = new Quotas(validateQuota(config.quota, parseSize, 'config quota'));
  const gcCfg = config.gc as { interval: number; gracePeriod: number; deleteUntagged: boolean };
  const metricsCfg = config.metrics as { enabled: boolean };
  const metrics = new RegistryMetrics();
  const coordinator = new GcCoordinator(Math.max(10 * 60_000, gcCfg.gracePeriod));
  const mirrorCfg = validateMirror(config.mirror, parseDuration, 'config mirror');
  let makeStore = o.makeStore;
  if (mirrorCfg && !makeStore) {
    const { mirrorStoreFactory } = await import('./mirror/store.js');
    makeStore = mirrorStoreFactory(mirrorCfg, logger, metrics);
  }

  if (!o.driver) await mkdir(config.storage.root, { recursive: true });
  const driver = o.driver ?? new FilesystemDriver(config.storage.root, { fsync: config.storage.fsync });
  const hooks = combineHooks(immutability.enabled ? immutability.hooks() : undefined, quotas.enabled ? quotas.hooks() : undefined);
  const storeOpts: StoreOptions = {
    hooks,
    cacheTtlMs: config.storage.cache.ttl,
    manifestCacheBytes: config.storage.cache.manifestBytes,
    deleteEnabled: config.storage.delete.enabled,
    mountWithoutFrom: config.storage.mountWithoutFrom,
  };
  const store = makeStore ? makeStore(driver, storeOpts, coordinator) : new ProductionStore(driver, storeOpts, coordinator);
  store.on(metrics.onEvent);
  if (quotas.enabled) quotas.attach(store);

  let auth: RegistryAuth | undefined;
  if (authCfg) {
    if (authCfg.clientCertUsers && !tls?.clientCA) throw new UsageError('config auth.clientCertUsers: needs tls.clientCA');
    await mkdir(config.storage.root, { recursive: true });
    auth = new RegistryAuth(authCfg, { root: config.storage.root });
  }

  const startOptions: StartOptions = {
    store,
    authorize: auth?.authorize,
    extend: (app, deps) => {
      app.use('*', observe({ metrics, logger }));
      if (metricsCfg.enabled) {
        app.get('/metrics', (c) => c.body(metrics.render(), 200, { 'Content-Type': PROMETHEUS_CONTENT_TYPE }));
        app.get('/healthz', async (c) => {
          try {
            await store.driver.list('/');
            return c.json({ status: 'ok' });
          } catch (e) {
            return c.json({ status: 'error', error: (e as Error).message }, 503);
          }
        });
      }
      if (auth?.issuer) app.route('/', auth.tokenApp() as never);
      o.extend?.(app, deps);
    },
  };
  if (tls) {
    startOptions.createServer = createHttpsServer as unknown as StartOptions['createServer'];
    startOptions.serverOptions = httpsServerOptions(tls) as Record<string, unknown>;
    startOptions.scheme = 'https';
  }

  const runGc = async (ro: { dryRun?: boolean } = {}): Promise<{ retention: RetentionReport; gc: GcReport }> => {
    const r = await applyRetention(store, retention, { dryRun: ro.dryRun === true, immutability, logger, metrics });
    const g = await collectGarbage(store, {
      dryRun: ro.dryRun === true,
      gracePeriodMs: gcCfg.gracePeriod,
      deleteUntagged: gcCfg.deleteUntagged,
      coordinator,
      logger,
      metrics,
    });
    if (!ro.dryRun) quotas.reset();
    return { retention: r, gc: g };
  };

  const cleanups: (() => void)[] = [];
  return {
    config,
    logger,
    metrics,
    ...(auth ? { auth } : {}),
    ...(tls ? { tls } : {}),
    store,
    coordinator,
    retention,
    immutability,
    quotas,
    startOptions,
    runGc,
    started(reg: RunningRegistry) {
      const onHup = (): void => {
        if (tls) reloadTls(reg.server as unknown as TlsServer, tls, logger);
        logger.reopen();
        auth?.htpasswd?.reload();
      };
      process.on('SIGHUP', onHup);
      cleanups.push(() => process.off('SIGHUP', onHup));
      if (gcCfg.interval > 0) {
        let busy = false;
        const timer = setInterval(() => {
          if (busy) return;
          busy = true;
          runGc()
            .catch(() => {})
            .finally(() => (busy = false));
        }, gcCfg.interval);
        timer.unref();
        cleanups.push(() => clearInterval(timer));
      }
      logger.info('registry started', {
        url: reg.url,
        root: config.storage.root,
        auth: auth?.mode ?? 'none',
        tls: !!tls,
        gcInterval: gcCfg.interval,
        mirror: mirrorCfg ? mirrorCfg.namespaces.map((n) => `${n.prefix || '*'} <- ${n.upstreams.map((u) => u.url).join(', ')}`) : undefined,
      });
    },
    async close() {
      for (const c of cleanups.splice(0)) c();
      await (store as { close?: () => Promise<void> }).close?.();
    },
  };
}
