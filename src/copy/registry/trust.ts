/**
 * TLS trust of outgoing connections (the registry client, its download workers, the docker daemon client): one
 * SecureContext per set of options, made when the first connection needs it.
 *
 * What is trusted is Node's: its bundled roots, plus the certificates of the file named by NODE_EXTRA_CA_CERTS, plus
 * the CAs a connection adds (certs.d `*.crt`). But Node 20 reads and parses that file, and its ~144 bundled roots,
 * at the start of every process that has the variable, TLS or not: 36 ms of a 56 ms `node -e 0` here, where
 * NODE_EXTRA_CA_CERTS names the system bundle (a proxy's CA is in it). So the launchers of tscopy and tsbuild
 * (bin/*.js, a /bin/sh line before node starts) move the variable to TSIMAGE_DEFERRED_CA_CERTS, put it back for
 * child processes once node runs (bin/deferred-ca.js), and this module adds the file's certificates to the connections
 * that verify a certificate: the same trust, paid for by the commands that use TLS. A process started some other
 * way (`node bin/tscopy.js`, tests) has had the file loaded by Node, and there is nothing deferred.
 *
 * Costs (this machine): the bundled roots 18-20 ms, once per process (Node keeps them parsed for every thread);
 * then per SecureContext a copy of that store plus each added certificate (~3 ms for the 22 certificates of the
 * system bundle that Node's roots lack: the rest are dropped as duplicates, 3 ms to find). A connection that does
 * not verify (--tls-verify=false, and the HTTPS probe of an insecure registry) builds no store at all.
 */
import { readFileSync } from 'node:fs';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';

/** A client's TLS settings (plain data: the download workers get a copy). */
export interface ClientTls {
  /** Verify the server's certificate (false: --tls-verify=false). */
  verify: boolean;
  /** PEM certificates trusted besides the default ones (certs.d `*.crt`; deferred extras are added here). */
  cas: string[];
  /** Client certificate and key (certs.d `*.cert` / `*.key`). */
  cert?: string | undefined;
  key?: string | undefined;
}

const PEM = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;
const body = (pem: string) => pem.replace(/-----[A-Z ]+-----|\s+/g, '');

let extras: string[] | undefined;

/**
 * The deferred NODE_EXTRA_CA_CERTS file's certificates that Node's bundled roots do not already hold (none when
 * nothing was deferred). A file that cannot be read is reported once, as Node reports it, and adds nothing.
 */
export function deferredExtraCAs(): string[] {
  if (extras) return extras;
  extras = [];
  const file = process.env.TSIMAGE_DEFERRED_CA_CERTS;
  if (!file) return extras;
  let text: string;
  try {
    text = readFileSync(file, 'latin1');
  } catch (e) {
    process.emitWarning(`Ignoring extra certs from \`${file}\`, load failed: ${(e as Error).message}`);
    return extras;
  }
  const roots = new Set(rootCertificates.map(body));
  extras = (text.match(PEM) ?? []).filter((pem) => !roots.has(body(pem)));
  return extras;
}

/** The settings with the deferred extras added to `cas` (what a download worker is given). */
export function withDeferredCAs(t: ClientTls): ClientTls {
  return t.verify ? { ...t, cas: [...deferredExtraCAs(), ...t.cas] } : t;
}

const contexts = new Map<string, SecureContext>();

/**
 * The SecureContext for these settings (made once per process and reused by every connection: given `ca` instead,
 * Node parses the whole list again for each connection). Verifying: Node's default store plus the deferred extras
 * and `cas`; not verifying: an empty store (no roots parsed). The download workers build theirs the same way
 * (blob-workers.ts: no imports there).
 */
export function clientSecureContext(t: ClientTls): SecureContext {
  const key = JSON.stringify([t.verify, t.cas, t.cert ?? '', t.key ?? '']);
  let ctx = contexts.get(key);
  if (!ctx) {
    const { cas } = withDeferredCAs(t);
    ctx = createSecureContext({ ...(t.verify ? {} : { ca: [] }), cert: t.cert, key: t.key });
    // adds to a copy of the default store (SecureContext::AddCACert), unlike `ca`, which replaces it
    if (t.verify) for (const pem of cas) (ctx as unknown as { context: { addCACert(pem: string): void } }).context.addCACert(pem);
    contexts.set(key, ctx);
  }
  return ctx;
}

/** tls.connect's options for these settings: the shared context, and whether a certificate that fails is refused. */
export function connectOptions(t: ClientTls): { secureContext: SecureContext; rejectUnauthorized: boolean } {
  return { secureContext: clientSecureContext(t), rejectUnauthorized: t.verify };
}
