/** Spawning a runtime process (our helper or runc) with the caller's stdio, timeout and abort. */
import { spawn, type ChildProcess, type IOType } from 'node:child_process';
import { Readable, Writable } from 'node:stream';
import type { RunOptions } from './types.js';

export type Spawned = { code: number | null; signal: NodeJS.Signals | null; status: string; timedOut: boolean; aborted: boolean };

import type { StdioIn, StdioOut } from './types.js';

type Slot = IOType | number;

function mapIn(s: StdioIn | undefined): Slot {
  if (s === undefined || s === 'ignore') return 'ignore';
  if (s === 'inherit' || typeof s === 'number') return s;
  return 'pipe';
}

function mapOut(s: StdioOut | undefined): Slot {
  if (s === undefined || s === 'inherit') return 'inherit';
  if (s === 'ignore' || typeof s === 'number') return s;
  return 'pipe';
}

/**
 * Run `cmd args` with fd 3 as a status pipe. `kill` is called (once) on timeout or abort and must make
 * the whole container tree die; the promise resolves when the process has exited and its stdio closed.
 */
export function spawnRuntime(
  cmd: string,
  args: string[],
  o: Pick<RunOptions, 'stdio' | 'timeout' | 'signal'>,
  kill: (child: ChildProcess) => void,
  extraEnv?: NodeJS.ProcessEnv,
): Promise<Spawned> {
  const stdio = o.stdio ?? {};
  return new Promise((resolve, reject) => {
    if (o.signal?.aborted) {
      resolve({ code: null, signal: 'SIGKILL', status: '', timedOut: false, aborted: true });
      return;
    }
    const child: ChildProcess = spawn(cmd, args, {
      stdio: [mapIn(stdio.stdin), mapOut(stdio.stdout), mapOut(stdio.stderr), 'pipe'],
      env: extraEnv ?? {},
    });
    let status = '';
    let timedOut = false;
    let aborted = false;
    let killed = false;
    const doKill = () => {
      if (killed) return;
      killed = true;
      kill(child);
    };
    const onAbort = () => {
      aborted = true;
      doKill();
    };
    o.signal?.addEventListener('abort', onAbort, { once: true });
    const timer =
      o.timeout !== undefined && o.timeout > 0
        ? setTimeout(() => {
            timedOut = true;
            doKill();
          }, o.timeout)
        : undefined;
    const statusPipe = child.stdio[3] as Readable | null;
    statusPipe?.setEncoding('utf8');
    statusPipe?.on('data', (d: string) => (status += d));
    if (stdio.stdin instanceof Readable && child.stdin) {
      stdio.stdin.pipe(child.stdin);
      child.stdin.on('error', () => {}); // EPIPE when the process doesn't read its input
    }
    for (const [name, target] of [['stdout', stdio.stdout], ['stderr', stdio.stderr]] as const) {
      const src = child[name];
      if (src && target instanceof Writable) src.pipe(target, { end: false });
    }
    child.on('error', (e) => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      if (stdio.stdin instanceof Readable) stdio.stdin.unpipe();
      resolve({ code, signal, status, timedOut, aborted });
    });
  });
}
