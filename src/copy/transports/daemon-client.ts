/**
 * A minimal Docker Engine API client for the docker-daemon: transport (containers/image docker/daemon/client.go):
 * the daemon's address as skopeo takes it (--src-/--dest-daemon-host, inspect's --daemon-host), one undici Pool per
 * command, requests without an API version prefix (the daemon's current version: Docker 25+ refuses the 1.22 that
 * containers/image 5.23 sends; podman's compat API serves both).
 *
 * Addresses: `unix:///path` (a socket), `http://host:port` (plain HTTP), `tcp://host:port` and `https://host:port`
 * (HTTPS, as skopeo: "If host starts with tcp://, HTTPS is enabled by default"), verified against the system CAs or
 * `<cert-dir>/ca.pem`, client certificate `<cert-dir>/cert.pem` + `key.pem` (skopeo's --cert-dir for a daemon);
 * --tls-verify=false skips verification. Default: `$DOCKER_HOST` (read with the docker CLI's rules: tcp:// is plain
 * HTTP unless `$DOCKER_TLS_VERIFY` is set, certificates from `$DOCKER_CERT_PATH`), else unix:///var/run/docker.sock.
 * (skopeo 1.9.3 itself ignores $DOCKER_HOST.)
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import type { Readable } from 'node:stream';
import type { Dispatcher, Pool } from 'undici';
import { OciError, TsimageError, UsageError } from '../../oci/errors.js';
import { MAX_MANIFEST_SIZE, readAll } from '../../oci/io.js';

export const DEFAULT_DOCKER_HOST = 'unix:///var/run/docker.sock';

export interface DaemonAddress {
  /** As the user gave it (or the default): used in messages. */
  host: string;
  /** undici origin. */
  origin: string;
  socketPath?: string | undefined;
  tls?: { ca?: Buffer | undefined; cert?: Buffer | undefined; key?: Buffer | undefined; rejectUnauthorized: boolean } | undefined;
}

function readIf(path: string): Buffer | undefined {
  try {
    return readFileSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new UsageError(`docker daemon TLS: cannot read ${path}: ${(e as Error).message}`);
  }
}

/** Resolve the daemon address: the flag, else $DOCKER_HOST, else the default socket. */
export function daemonAddress(opts: { daemonHost?: string | undefined; certDir?: string | undefined; tlsVerify?: boolean | undefined } = {}, env = process.env): DaemonAddress {
  const fromEnv = !opts.daemonHost && !!env.DOCKER_HOST;
  const host = opts.daemonHost || env.DOCKER_HOST || DEFAULT_DOCKER_HOST;
  const m = /^([a-z0-9+.-]+):\/\/(.*)$/i.exec(host);
  if (!m) throw new UsageError(`unable to parse docker host ${JSON.stringify(host)}: want unix:///PATH, tcp://HOST:PORT, http://HOST:PORT or https://HOST:PORT`);
  const proto = m[1]!.toLowerCase();
  const addr = m[2]!;
  if (proto === 'unix') {
    if (!addr.startsWith('/')) throw new UsageError(`docker host ${JSON.stringify(host)}: the socket path must be absolute (unix:///path)`);
    return { host, origin: 'http://localhost', socketPath: addr };
  }
  if (proto !== 'tcp' && proto !== 'http' && proto !== 'https')
    throw new UsageError(`docker host ${JSON.stringify(host)}: unsupported protocol ${JSON.stringify(proto)} (want unix, tcp, http or https)`);
  const hostPort = addr.replace(/\/+$/, '');
  if (hostPort === '' || hostPort.includes('/')) throw new UsageError(`docker host ${JSON.stringify(host)}: want ${proto}://HOST:PORT`);
  // the docker CLI's $DOCKER_HOST=tcp://... is plain HTTP unless $DOCKER_TLS_VERIFY; skopeo's flag tcp:// is HTTPS
  const useTls = proto === 'https' || (proto === 'tcp' && (!fromEnv || !!env.DOCKER_TLS_VERIFY));
  if (!useTls) return { host, origin: `http://${hostPort}` };
  const certDir = opts.certDir ?? (fromEnv ? env.DOCKER_CERT_PATH : undefined);
  const tls = {
    ca: certDir ? readIf(join(certDir, 'ca.pem')) : undefined,
    cert: certDir ? readIf(join(certDir, 'cert.pem')) : undefined,
    key: certDir ? readIf(join(certDir, 'key.pem')) : undefined,
    rejectUnauthorized: opts.tlsVerify !== false,
  };
  if (!!tls.cert !== !!tls.key) throw new UsageError(`docker daemon TLS: ${certDir} has ${tls.cert ? 'cert.pem but no key.pem' : 'key.pem but no cert.pem'}`);
  return { host, origin: `https://${hostPort}`, tls };
}

let poolMod: Promise<typeof Pool> | undefined;
/** undici's Pool from its deep modules (as src/copy/registry/client.ts: the package index loads fetch, WebSocket...). */
const loadPool = () =>
  (poolMod ??= (async () => {
    try {
      const [pool, dispatcher, api] = await Promise.all([
        import('undici/lib/dispatcher/pool.js'),
        import('undici/lib/dispatcher/dispatcher.js'),
        import('undici/lib/api/index.js'),
      ]);
      Object.assign((dispatcher.default as { prototype: object }).prototype, api.default);
      // no TurboFan tier-up of llhttp's wasm (see src/copy/registry/client.ts)
      setFlagsFromString('--liftoff-only');
      return pool.default as typeof Pool;
    } catch {
      const m = await import('undici');
      setFlagsFromString('--liftoff-only');
      return m.Pool;
    }
  })());

/** Connection-level failures: the daemon is not there (skopeo: "Cannot connect to the Docker daemon at HOST. Is the docker daemon running?"). */
function isConnectError(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return typeof code === 'string' && /^(ENOENT|ECONNREFUSED|EACCES|ENOTSOCK|ECONNRESET|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|UND_ERR_CONNECT_TIMEOUT|UND_ERR_SOCKET)$/.test(code);
}

export class DaemonClient {
  private pool: Pool | undefined;

  constructor(readonly addr: DaemonAddress) {}

  private async dispatcher(): Promise<Pool> {
    if (!this.pool) {
      const P = await loadPool();
      this.pool = new P(this.addr.origin, {
        connections: 4,
        ...(this.addr.socketPath ? { socketPath: this.addr.socketPath } : {}),
        ...(this.addr.tls ? { connect: { ...this.addr.tls } } : {}),
        // a load of a big image can take long before the daemon answers; the body has no timeout either
        headersTimeout: 0,
        bodyTimeout: 0,
      });
    }
    return this.pool;
  }

  /**
   * One request; a connection failure becomes skopeo's "Cannot connect to the Docker daemon at HOST" (with the
   * cause), a non-2xx answer "Error response from daemon: MESSAGE" (the JSON `message` when there is one).
   */
  async request(
    what: string,
    method: 'GET' | 'POST' | 'HEAD',
    path: string,
    o: { body?: Readable | undefined; headers?: Record<string, string> | undefined; signal?: AbortSignal | undefined } = {},
  ): Promise<Dispatcher.ResponseData> {
    const pool = await this.dispatcher();
    let res: Dispatcher.ResponseData;
    try {
      res = await pool.request({ method, path, headers: { ...(this.addr.socketPath ? { host: 'docker' } : {}), ...o.headers }, body: o.body, signal: o.signal });
    } catch (e) {
      if (o.signal?.aborted) throw e;
      if (isConnectError(e)) {
        const cause = (e as { code?: string }).code;
        throw new TsimageError(`${what}: Cannot connect to the Docker daemon at ${this.addr.host}. Is the docker daemon running? (${cause}${this.addr.socketPath ? ` on ${this.addr.socketPath}` : ''})`, { cause: e });
      }
      if (this.addr.tls && /SSL|TLS|certificate|wrong version number|EPROTO/i.test(`${(e as Error).message} ${(e as { code?: string }).code ?? ''}`))
        throw new TsimageError(
          `${what}: TLS connection to the Docker daemon at ${this.addr.host} failed: ${(e as { reason?: string }).reason ?? (e as Error).message.split('\n')[0]}${this.addr.host.startsWith('tcp://') ? ' (tcp:// means HTTPS, as in skopeo: use http://HOST:PORT for a plain-HTTP daemon)' : ''}`,
          { cause: e },
        );
      throw new TsimageError(`${what}: ${(e as Error).message} (docker daemon at ${this.addr.host})`, { cause: e });
    }
    if (res.statusCode >= 200 && res.statusCode < 300) return res;
    const text = (await readAll(res.body, MAX_MANIFEST_SIZE, 'daemon error response').catch(() => Buffer.alloc(0))).toString('utf8').trim();
    let msg = text;
    try {
      const j = JSON.parse(text) as { message?: unknown };
      if (typeof j.message === 'string' && j.message) msg = j.message;
    } catch {}
    const full = `${what}: Error response from daemon: ${msg || `HTTP ${res.statusCode}`}`;
    if (res.statusCode === 404) throw new OciError('MANIFEST_UNKNOWN', full, { status: 404 });
    throw new TsimageError(full);
  }

  async close(): Promise<void> {
    const p = this.pool;
    this.pool = undefined;
    if (p) await p.destroy().catch(() => {});
  }
}
