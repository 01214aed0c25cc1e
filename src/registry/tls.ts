/**
 * TLS for the registry: certificate and key files (PEM, full chain in the cert file),
 * optional client-certificate authentication against a CA bundle, and reload of all three
 * files on SIGHUP without dropping connections (`tls.Server.setSecureContext`). A reload
 * that fails (half-written files, key not matching the cert) keeps the old context and logs.
 */
import { readFileSync } from 'node:fs';
import { createSecureContext, type SecureContextOptions, type Server as TlsServer } from 'node:tls';
import type { ServerOptions as HttpsServerOptions } from 'node:https';
import { UsageError } from '../oci/index.js';
import type { Logger } from './log.js';

export interface TlsConfig {
  /** PEM certificate (chain) file. */
  cert: string;
  /** PEM private key file. */
  key: string;
  /** CA bundle for client certificates; enables client-certificate checks. */
  clientCA?: string;
  /**
   * With clientCA: `require` refuses connections without a valid client certificate;
   * `verify-if-given` (default) accepts connections without one (a certificate that does not
   * verify is ignored: the request is anonymous).
   */
  clientAuth?: 'require' | 'verify-if-given';
  /** Minimum protocol version. Default TLSv1.2. */
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
}

export function validateTlsConfig(raw: unknown, at = 'tls'): TlsConfig | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new UsageError(`${at}: expected a mapping`);
  const r = raw as Record<string, unknown>;
  const known = ['cert', 'key', 'clientCA', 'clientAuth', 'minVersion'];
  for (const k of Object.keys(r)) if (!known.includes(k)) throw new UsageError(`${at}.${k}: unknown key (known: ${known.join(', ')})`);
  for (const k of ['cert', 'key']) if (typeof r[k] !== 'string' || !r[k]) throw new UsageError(`${at}.${k}: required (a PEM file path)`);
  const out: TlsConfig = { cert: r.cert as string, key: r.key as string };
  if (r.clientCA !== undefined) {
    if (typeof r.clientCA !== 'string' || !r.clientCA) throw new UsageError(`${at}.clientCA: expected a PEM file path`);
    out.clientCA = r.clientCA;
  }
  if (r.clientAuth !== undefined) {
    if (r.clientAuth !== 'require' && r.clientAuth !== 'verify-if-given') throw new UsageError(`${at}.clientAuth: expected require or verify-if-given`);
    if (!out.clientCA) throw new UsageError(`${at}.clientAuth: needs ${at}.clientCA`);
    out.clientAuth = r.clientAuth;
  }
  if (r.minVersion !== undefined) {
    if (r.minVersion !== 'TLSv1.2' && r.minVersion !== 'TLSv1.3') throw new UsageError(`${at}.minVersion: expected TLSv1.2 or TLSv1.3`);
    out.minVersion = r.minVersion;
  }
  return out;
}

function read(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new UsageError(`cannot read TLS ${what} ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** The secure-context part (files read now); throws UsageError naming the file. */
export function secureContextOptions(cfg: TlsConfig): SecureContextOptions {
  const opts: SecureContextOptions = { cert: read(cfg.cert, 'certificate'), key: read(cfg.key, 'key'), minVersion: cfg.minVersion ?? 'TLSv1.2' };
  if (cfg.clientCA) opts.ca = read(cfg.clientCA, 'client CA');
  try {
    createSecureContext(opts); // validates that the key matches the certificate
  } catch (e) {
    throw new UsageError(`TLS certificate ${cfg.cert} and key ${cfg.key} cannot be used: ${(e as Error).message}`, { cause: e });
  }
  return opts;
}

/** Options for https.createServer (or @hono/node-server's serverOptions). */
export function httpsServerOptions(cfg: TlsConfig): HttpsServerOptions {
  const o: HttpsServerOptions = { ...secureContextOptions(cfg) };
  if (cfg.clientCA) {
    o.requestCert = true;
    // verification of a presented cert still happens; `authorized` tells the auth layer
    o.rejectUnauthorized = cfg.clientAuth === 'require';
  }
  return o;
}

/**
 * Re-read the files into the running server. Returns true when the new context is active.
 */
export function reloadTls(server: TlsServer, cfg: TlsConfig, logger?: Logger): boolean {
  try {
    server.setSecureContext(secureContextOptions(cfg));
    logger?.info('tls reloaded', { cert: cfg.cert });
    return true;
  } catch (e) {
    logger?.error('tls reload failed; keeping the previous certificate', { error: (e as Error).message });
    return false;
  }
}

/** Reload on SIGHUP; returns a function that removes the handler. */
export function reloadTlsOnSighup(server: TlsServer, cfg: TlsConfig, logger?: Logger): () => void {
  const h = (): void => void reloadTls(server, cfg, logger);
  process.on('SIGHUP', h);
  return () => process.off('SIGHUP', h);
}
