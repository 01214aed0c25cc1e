/**
 * Where a key password comes from, in cosign's order: `--password-file`, the environment
 * variable (COSIGN_PASSWORD), a prompt on the terminal (twice when creating a key), and
 * otherwise standard input (piped). One trailing newline is removed from files and pipes.
 */
import { readFile } from 'node:fs/promises';
import { TsimageError, UsageError } from '../../oci/errors.js';

export const PASSWORD_ENV = 'COSIGN_PASSWORD';

export interface PasswordSource {
  passwordFile?: string | undefined;
  /** Environment to read PASSWORD_ENV from (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Ask twice and compare (new keys). */
  confirm?: boolean;
  /** What the prompt says ("Enter password for private key"). */
  prompt?: string;
}

function chomp(s: string): string {
  return s.replace(/\r?\n$/, '');
}

/** Read a password without echo from the controlling terminal (stdin must be a TTY). */
export async function promptPassword(prompt: string): Promise<string> {
  const stdin = process.stdin;
  if (!stdin.isTTY) throw new UsageError('no terminal to ask for a password (use --password-file or COSIGN_PASSWORD)');
  process.stderr.write(`${prompt}: `);
  stdin.setRawMode(true);
  stdin.resume();
  try {
    return await new Promise<string>((resolve, reject) => {
      let buf = '';
      const onData = (d: Buffer): void => {
        for (const ch of d.toString('utf8')) {
          if (ch === '\r' || ch === '\n') {
            stdin.off('data', onData);
            process.stderr.write('\n');
            resolve(buf);
            return;
          }
          if (ch === '\u0003') {
            stdin.off('data', onData);
            process.stderr.write('\n');
            reject(new TsimageError('interrupted'));
            return;
          }
          if (ch === '\u007f' || ch === '\b') buf = buf.slice(0, -1);
          else buf += ch;
        }
      };
      stdin.on('data', onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Resolve the password from the sources above. */
export async function getPassword(src: PasswordSource = {}): Promise<string> {
  if (src.passwordFile) {
    try {
      return chomp(await readFile(src.passwordFile, 'utf8'));
    } catch (e) {
      throw new UsageError(`reading --password-file ${src.passwordFile}: ${(e as Error).message}`);
    }
  }
  const env = src.env ?? process.env;
  const fromEnv = env[PASSWORD_ENV];
  if (fromEnv !== undefined) return fromEnv;
  const prompt = src.prompt ?? 'Enter password for private key';
  if (process.stdin.isTTY) {
    const p = await promptPassword(prompt);
    if (src.confirm) {
      const again = await promptPassword(`${prompt} again`);
      if (again !== p) throw new UsageError('passwords do not match');
    }
    return p;
  }
  return chomp(await readStdin());
}
