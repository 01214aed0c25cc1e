/** A real `tsregistry serve` process on 127.0.0.1:0 with a YAML config, stopped by PID after the test. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { requireTool, ROOT, sh, tempDir } from '../helpers.js';

export type T = { after(fn: () => void | Promise<void>): void };

export interface Proc {
  child: ChildProcess;
  pid: number;
  /** 127.0.0.1:PORT */
  addr: string;
  url: string;
  root: string;
  stderr: () => string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export async function startTsregistry(t: T, doc: Record<string, unknown> = {}, o: { root?: string; dir?: string; env?: NodeJS.ProcessEnv; addr?: string } = {}): Promise<Proc> {
  const dir = o.dir ?? tempDir(t, 'regprod-proc');
  const root = o.root ?? join(dir, 'data');
  mkdirSync(dir, { recursive: true });
  const cfg = join(dir, `config-${Math.random().toString(36).slice(2)}.yml`);
  writeFileSync(cfg, stringify({ ...doc, storage: { ...(doc.storage as object | undefined), root } }));
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'tsregistry.js'), 'serve', '--config', cfg, '--addr', o.addr ?? '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...o.env },
  });
  let out = '';
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    if (err.length > 4_000_000) err = err.slice(-2_000_000);
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tsregistry did not start: ${err}`)), 15_000);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /listening on (https?:\/\/[^\s]+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`tsregistry exited (${code}) before listening: ${err}`));
    });
  });
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    const t2 = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t2);
  };
  t.after(() => stop());
  const addr = new URL(url).host;
  return { child, pid: child.pid!, addr, url, root, stderr: () => err, stop };
}

/**
 * tsregistry with htpasswd users alice (alice-secret) and bob (bob-secret), the given access rules,
 * token auth (Bearer, service tsregistry-test) or Basic auth, no access log; in a temp dir named after label.
 */
export async function startWithUsers(t: Parameters<typeof tempDir>[0], mode: 'token' | 'basic', rules: Record<string, unknown>[], label: string): Promise<{ reg: Proc; dir: string }> {
  requireTool('htpasswd');
  const dir = tempDir(t, label);
  const ht = join(dir, 'htpasswd');
  sh('htpasswd', ['-cbB', ht, 'alice', 'alice-secret']);
  sh('htpasswd', ['-bB', ht, 'bob', 'bob-secret']);
  const auth: Record<string, unknown> = { htpasswd: ht, access: { rules } };
  if (mode === 'token') auth.token = { service: 'tsregistry-test' };
  const reg = await startTsregistry(t, { auth, log: { access: false } }, { dir });
  return { reg, dir };
}
