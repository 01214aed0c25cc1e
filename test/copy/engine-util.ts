/** Helpers for the copy engine tests: run the tscopy CLI. */
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { ROOT, sh } from '../helpers.js';

export const BIN = join(ROOT, 'bin', 'tscopy.js');

/** Plain HTTP on both sides (loopback test registries). */
export const NOTLS = ['--src-tls-verify=false', '--dest-tls-verify=false'];

/** Run tscopy; stdout, or throws with stderr. */
export function tscopy(args: string[], env?: NodeJS.ProcessEnv): string {
  return sh(process.execPath, [BIN, ...args], env ? { env: { ...process.env, ...env } } : {});
}

/**
 * Run tscopy (expecting success) with TSIMAGE_DEBUG_HTTP=1: its output and the registry requests it made, one
 * `METHOD URL` string per request (the /v2/ pings as `ping URL`).
 */
export function tscopyTraced(args: string[], env?: NodeJS.ProcessEnv): { stdout: string; requests: string[] } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env, TSIMAGE_DEBUG_HTTP: '1' } });
  if (r.status !== 0) throw new Error(`tscopy ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  const requests = [...r.stderr.matchAll(/^http: @\d+ (\S+ \S+) ->/gm)].map((m) => m[1]!);
  return { stdout: r.stdout, requests };
}

/** Run tscopy expecting a failure: exit status and stderr. */
export function tscopyFail(args: string[], env?: NodeJS.ProcessEnv): { status: number | null; stderr: string; stdout: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout };
}
