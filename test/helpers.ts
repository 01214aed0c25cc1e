/** Shared test helpers: temp dirs that clean themselves up, tool checks, process helpers. */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';

/** Repository root (tests run from dist/test/...). */
export const ROOT = new URL('../../', import.meta.url).pathname;
/**
 * ../shared beside the checkout (peers, s3); for a worktree nested one level deeper
 * (e.g. /work/wt/<name>), the first `shared/peers` found walking up from the checkout.
 */
export const SHARED = ((): string => {
  for (let dir = join(ROOT, '..'); ; dir = join(dir, '..')) {
    if (existsSync(join(dir, 'shared', 'peers'))) return join(dir, 'shared');
    if (dir === '/' || join(dir, '..') === dir) return join(ROOT, '..', 'shared');
  }
})();
export const PEERS = join(SHARED, 'peers');

/** A fresh temp dir (prefix tsimage-) removed when the test ends. */
export function tempDir(t: TestContext | { after(fn: () => void): void }, label = 'test'): string {
  const d = mkdtempSync(join(tmpdir(), `tsimage-${label}-`));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Fail (never skip) when an oracle tool is missing: interop tests must not pass silently. */
/** Every file under dir (relative path -> sha256), to assert that a failure changed nothing. */
export function fileHashes(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string, rel: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(p, r);
      else out[r] = createHash('sha256').update(readFileSync(p)).digest('hex');
    }
  };
  walk(dir, '');
  return out;
}

/** The pids whose command line contains `marker` (processes a test must not leave behind). */
export function procsWith(marker: string): string[] {
  const found: string[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(marker)) found.push(p);
    } catch {}
  }
  return found;
}

/** A list of podman images removed (`podman rmi -f`, failures ignored) after the test: push each image the test pulls or builds. */
export function podmanImagesRemovedAfter(t: { after(fn: () => void): void }, ...images: string[]): string[] {
  t.after(() => {
    for (const i of images) {
      try {
        sh('podman', ['rmi', '-f', i]);
      } catch {}
    }
  });
  return images;
}

export function requireTool(name: string): string {
  const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`required tool ${name} is not installed (run: sh scripts/install-test-deps.sh)`);
  return r.stdout.trim();
}

/** Run a command, return stdout; throws with stderr on failure. */
export function sh(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {}): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 256 * 1024 * 1024, ...opts });
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.stderr || err.message}`);
  }
}

/** A free loopback TCP port (bind port 0, read it, close). */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/**
 * Start the reference registry (distribution, Debian's docker-registry) on a free
 * loopback port via ../shared/peers/start-distribution.sh; stopped (by PID) and its
 * store removed when the test ends.
 */
export async function startDistribution(t: { after(fn: () => void | Promise<void>): void }): Promise<{ addr: string; pid: number; store: string }> {
  requireTool('docker-registry');
  const port = await freePort();
  const out = sh('sh', [join(PEERS, 'start-distribution.sh'), `127.0.0.1:${port}`]);
  const vars = Object.fromEntries(out.trim().split('\n').map((l) => l.split('=', 2) as [string, string]));
  const pid = Number(vars.PID);
  const store = vars.STORE!;
  const log = vars.LOG!;
  t.after(() => {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {}
    spawnSync('sh', ['-c', `for i in $(seq 50); do kill -0 ${pid} 2>/dev/null || exit 0; sleep 0.1; done; kill -9 ${pid} 2>/dev/null`]);
    rmSync(store, { recursive: true, force: true });
    rmSync(log, { force: true });
  });
  return { addr: vars.ADDR!, pid, store };
}

/** A command run asynchronously (for tests whose own process serves something the command talks to: a spawnSync
 * would block it); killed after 2 minutes. */
export function runAsync(cmd: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    c.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), 120_000);
    c.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, out, err });
    });
  });
}

/** Listen on an ephemeral loopback port, closed (connections too) after the test; returns http://127.0.0.1:PORT. */
export async function listenLoopback(t: { after(fn: () => void | Promise<void>): void }, server: Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/**
 * A test PKI in `dir` (openssl; EC P-256; valid 2 days): a CA (ca.pem, ca.key) and, per name, a server certificate
 * for IP 127.0.0.1 signed by it (NAME.pem, NAME.key).
 */
export function makeTestPki(dir: string, servers: string[] = ['srv']): void {
  requireTool('openssl');
  const o = (args: string[]) => sh('openssl', args, { cwd: dir });
  o(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=test-ca']);
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\n');
  for (const name of servers) {
    o(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
    o(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'ext.cnf', '-out', `${name}.pem`]);
  }
}
