/** Implementations of tscopy's signing commands (loaded lazily by tscopy-sign.ts). */
import { writeFile, access } from 'node:fs/promises';
import { UsageError } from '../oci/index.js';
import { generateKeyPair, getPassword } from '../copy/sign/index.js';

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

export async function generateKeyPairCmd(opts: { outputKeyPrefix: string; passwordFile?: string | undefined; force?: boolean | undefined }): Promise<void> {
  const keyPath = `${opts.outputKeyPrefix}.key`;
  const pubPath = `${opts.outputKeyPrefix}.pub`;
  if (!opts.force) {
    for (const f of [keyPath, pubPath]) if (await exists(f)) throw new UsageError(`${f} already exists (use --force to overwrite)`);
  }
  const password = await getPassword({ passwordFile: opts.passwordFile, confirm: true });
  const pair = generateKeyPair(password);
  await writeFile(keyPath, pair.privateKey, { mode: 0o600, flag: opts.force ? 'w' : 'wx' });
  await writeFile(pubPath, pair.publicKey, { mode: 0o644, flag: opts.force ? 'w' : 'wx' });
  process.stderr.write(`Private key written to ${keyPath}\nPublic key written to ${pubPath}\n`);
}
