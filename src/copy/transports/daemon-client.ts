/**
 * A minimal Docker Engine API client for the docker-daemon: transport (containers/image docker/daemon/client.go):
 * the daemon's address as skopeo takes it (--src-/--dest-daemon-host, inspect's --daemon-host), node:http, requests without an API version prefix (the daemon's current version: Docker 25+ refuses the 1.22 that
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
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { OciError, TsimageError, UsageError } from '../../oci/errors.js';
import { MAX_MANIFEST_SIZE, readAll } from '../../oci/io.js';
import { connectOptions, type ClientTls } from '../registry/trust.js';

export const DEFAULT_DOCKER_HOST = 'unix:///var/run/docker.sock';

export interface DaemonAddress {
  /** As the user gave it (or the default): used in messages. */
  host: string;
  /** Scheme and host:port (unix sockets: http://localhost). */
  origin: string;
  socketPath?: string | undefined;
  /** TLS: DOCKER_CERT_PATH's ca.pem is trusted besides the default CAs (as the docker CLI's go-connections does). */
  tls?: ClientTls | undefined;
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
  const ca = certDir ? readIf(join(certDir, 'ca.pem')) : undefined;
  const tls: ClientTls = {
    verify: opts.tlsVerify !== false,
    cas: ca ? [ca.toString('latin1')] : [],
    cert: certDir ? readIf(join(certDir, 'cert.pem'))?.toString('latin1') : undefined,
    key: certDir ? readIf(join(certDir, 'key.pem'))?.toString('latin1') : undefined,
  };
  if (!!tls.cert !== !!tls.key) throw new UsageError(`docker daemon TLS: ${certDir} has ${tls.cert ? 'cert.pem but no key.pem' : 'key.pem but no cert.pem'}`);
  return { host, origin: `https://${hostPort}`, tls };
}

/** Connection-level failures: the daemon is not there (skopeo: "Cannot connect to the Docker daemon at HOST. Is the docker daemon running?"). */
function isConnectError(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return typeof code === 'string' && /^(ENOENT|ECONNREFUSED|EACCES|ENOTSOCK|ECONNRESET|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|UND_ERR_CONNECT_TIMEOUT|UND_ERR_SOCKET)$/.test(code);
}

/** A daemon's answer: status and the body stream. */
export interface DaemonResponse {
  statusCode: number;
  body: IncomingMessage;
}

/** Drain a response body. */
export async function drain(body: Readable): Promise<void> {
  body.resume();
  await finished(body).catch(() => undefined);
}

/**
 * One connection per request (`agent: false`): a command makes one or two requests, and no keep-alive socket may
 * hold the process open. node:http, not undici: a short command pays ~40 ms for undici's first request (its modules
 * and llhttp's WebAssembly), node:http ~10 ms (measured against podman's service).
 */
export class DaemonClient {
  constructor(readonly addr: DaemonAddress) {}

  /**
   * One request; a connection failure becomes skopeo's "Cannot connect to the Docker daemon at HOST" (with the
   * cause), a non-2xx answer "Error response from daemon: MESSAGE" (the JSON `message` when there is one).
   */
  async request(
    what: string,
    method: 'GET' | 'POST' | 'HEAD',
    path: string,
    o: { body?: Readable | undefined; headers?: Record<string, string> | undefined; signal?: AbortSignal | undefined } = {},
  ): Promise<DaemonResponse> {
    const a = this.addr;
    const u = new URL(a.origin);
    const target = a.socketPath
      ? { socketPath: a.socketPath }
      : {
          host: u.hostname.replace(/^\[|\]$/g, ''),
          port: u.port || (a.tls ? 443 : 80),
          ...(a.tls ? connectOptions(a.tls) : {}),
        };
    let res: IncomingMessage;
    try {
      res = await new Promise<IncomingMessage>((resolve, reject) => {
        const req = (a.tls ? httpsRequest : httpRequest)({
          ...target,
          method,
          path,
          agent: false,
          headers: { ...(a.socketPath ? { host: 'docker' } : {}), ...o.headers },
          ...(o.signal ? { signal: o.signal } : {}),
        });
        req.once('response', resolve);
        req.once('error', reject);
        if (o.body) pipeline(o.body, req).catch((e: unknown) => req.destroy(e as Error));
        else req.end();
      });
    } catch (e) {
      if (o.signal?.aborted) throw o.signal.reason ?? e;
      if (isConnectError(e)) {
        const cause = (e as { code?: string }).code;
        throw new TsimageError(`${what}: Cannot connect to the Docker daemon at ${a.host}. Is the docker daemon running? (${cause}${a.socketPath ? ` on ${a.socketPath}` : ''})`, { cause: e });
      }
      if (a.tls && /SSL|TLS|certificate|wrong version number|EPROTO/i.test(`${(e as Error).message} ${(e as { code?: string }).code ?? ''}`))
        throw new TsimageError(
          `${what}: TLS connection to the Docker daemon at ${a.host} failed: ${(e as { reason?: string }).reason ?? (e as Error).message.split('\n')[0]}${
            a.host.startsWith('tcp://') ? ' (tcp:// means HTTPS, as in skopeo: use http://HOST:PORT for a plain-HTTP daemon)' : ''
          }`,
          { cause: e },
        );
      throw new TsimageError(`${what}: ${(e as Error).message} (docker daemon at ${a.host})`, { cause: e });
    }
    const statusCode = res.statusCode ?? 0;
    if (statusCode >= 200 && statusCode < 300) return { statusCode, body: res };
    const text = (await readAll(res, MAX_MANIFEST_SIZE, 'daemon error response').catch(() => Buffer.alloc(0))).toString('utf8').trim();
    let msg = text;
    try {
      const j = JSON.parse(text) as { message?: unknown };
      if (typeof j.message === 'string' && j.message) msg = j.message;
    } catch {}
    const full = `${what}: Error response from daemon: ${msg || `HTTP ${statusCode}`}`;
    if (statusCode === 404) throw new OciError('MANIFEST_UNKNOWN', full, { status: 404 });
    throw new TsimageError(full);
  }

  /** Nothing pooled: kept so that callers need not know. */
  async close(): Promise<void> {}
}
