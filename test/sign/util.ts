/** Helpers shared by the sign tests: tscopy as a process, and encrypted key pairs on disk. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateKeyPair, SCRYPT_PARAMS } from '../../src/copy/sign/index.js';

const TSCOPY = new URL('../../../bin/tscopy.js', import.meta.url).pathname;

export function tscopy(args: string[], env: NodeJS.ProcessEnv = {}): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [TSCOPY, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** tscopy that must exit 0 (the failure names the command and its output). */
export function ok(args: string[], env: NodeJS.ProcessEnv = {}): { stdout: string; stderr: string } {
  const r = tscopy(args, env);
  assert.equal(r.status, 0, `tscopy ${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r;
}

/** Key files in dir: <name>.key (encrypted, password "pw" in the file `pw`) and <name>.pub; pem is the public key. */
export function keyPair(dir: string, name: string): { key: string; pub: string; pw: string; pem: string } {
  const pair = generateKeyPair('pw', { params: SCRYPT_PARAMS.legacy });
  writeFileSync(join(dir, `${name}.key`), pair.privateKey);
  writeFileSync(join(dir, `${name}.pub`), pair.publicKey);
  writeFileSync(join(dir, 'pw'), 'pw\n');
  return { key: join(dir, `${name}.key`), pub: join(dir, `${name}.pub`), pw: join(dir, 'pw'), pem: pair.publicKey };
}
