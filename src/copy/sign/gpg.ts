/**
 * OpenPGP through the `gpg` binary, as containers/image's gpgme mechanism uses it for "simple signing":
 *
 *  - sign: `gpg --sign --local-user KEY` over the payload on stdin: a binary OpenPGP message (compressed data with a
 *    one-pass signature, the literal payload and the signature; not detached, not armored), the user's keyring
 *    ($GNUPGHOME or ~/.gnupg, its gpg-agent). A passphrase file goes in with the loopback pinentry.
 *  - verify: `gpg --decrypt` of the message, the payload from stdout, the result from `--status-fd` (exactly one
 *    signature, GOODSIG + VALIDSIG, nothing expired/revoked/bad). Policy checks use an ephemeral keyring: a temporary
 *    homedir with only the policy's keys imported (containers/image newEphemeralGPGSigningMechanism), removed on every
 *    path; an agent that gpg started there is stopped first.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TsimageError } from '../../oci/errors.js';

/** gpg failed, or a signature did not verify (the message says why). */
export class GpgError extends TsimageError {}

export interface GpgRun {
  code: number | null;
  stdout: Buffer;
  stderr: string;
  /** `[GNUPG:] KEYWORD args...` lines from --status-fd, split on spaces. */
  status: string[][];
}

export interface GpgOptions {
  /** --homedir (default: gpg's own: $GNUPGHOME, else ~/.gnupg). */
  homedir?: string | undefined;
  signal?: AbortSignal | undefined;
  env?: NodeJS.ProcessEnv | undefined;
  /** --no-autostart: never start a gpg-agent (import and verify need none; an ephemeral homedir must leave none). */
  noAgent?: boolean | undefined;
}

const GPG = process.env.TSIMAGE_GPG || 'gpg';

/** Run gpg with the status lines on fd 3; never throws for a non-zero exit (the caller reads the status). */
export function runGpg(args: readonly string[], input: Buffer | undefined, o: GpgOptions = {}): Promise<GpgRun> {
  const full = ['--batch', '--no-tty', '--status-fd', '3', ...(o.noAgent ? ['--no-autostart'] : []), ...(o.homedir ? ['--homedir', o.homedir] : []), ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(GPG, full, { stdio: ['pipe', 'pipe', 'pipe', 'pipe'], env: o.env ?? process.env, signal: o.signal });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const st: Buffer[] = [];
    child.stdout!.on('data', (c: Buffer) => out.push(c));
    child.stderr!.on('data', (c: Buffer) => err.push(c));
    const fd3 = child.stdio[3] as NodeJS.ReadableStream;
    fd3.on('data', (c: Buffer) => st.push(c));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') reject(new GpgError(`${GPG} not found: simple signing needs GnuPG (Debian: apt-get install gpg gpg-agent)`, { cause: e }));
      else reject(e);
    });
    child.stdin!.on('error', () => undefined); // gpg may exit before reading everything (bad input): its status says why
    child.on('close', (code) => {
      const status = Buffer.concat(st)
        .toString('utf8')
        .split('\n')
        .filter((l) => l.startsWith('[GNUPG:] '))
        .map((l) => l.slice(9).split(' '));
      resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8'), status });
    });
    child.stdin!.end(input ?? Buffer.alloc(0));
  });
}

/** gpg's own messages, one line, without the "gpg: " prefixes (for errors). */
function gpgMessage(r: GpgRun): string {
  const lines = r.stderr
    .split('\n')
    .map((l) => l.replace(/^gpg: /, '').trim())
    .filter((l) => l && !/^(WARNING: unsafe|Note: |There is no indication|This key is not certified|using .* key|Signature made|no gpg-agent running|WARNING: This key is not certified|Primary key fingerprint|\s+)/.test(l));
  return lines.join('; ') || `exit status ${r.code}`;
}

export interface SignOptions extends GpgOptions {
  /** File whose first line is the key's passphrase (skopeo's --sign-passphrase-file): loopback pinentry. */
  passphraseFile?: string | undefined;
}

/** Sign `payload` with the secret key `keyIdentity` (fingerprint, key ID or user ID): the OpenPGP message bytes. */
export async function gpgSign(payload: Buffer, keyIdentity: string, o: SignOptions = {}): Promise<Buffer> {
  const args = ['--no-armor', '--sign', '--local-user', keyIdentity];
  if (o.passphraseFile) args.unshift('--pinentry-mode', 'loopback', '--passphrase-file', o.passphraseFile);
  const r = await runGpg(args, payload, o);
  const has = (k: string) => r.status.some((s) => s[0] === k);
  if (r.code === 0 && has('SIG_CREATED') && r.stdout.length > 0) return r.stdout;
  const where = o.homedir ?? o.env?.GNUPGHOME ?? process.env.GNUPGHOME ?? '~/.gnupg';
  if (has('INV_SGNR') || /No secret key|not found/i.test(r.stderr))
    throw new GpgError(`creating signature: key ${JSON.stringify(keyIdentity)} not found (no usable secret key in ${where})`);
  if (has('BAD_PASSPHRASE') || /Bad passphrase/i.test(r.stderr)) throw new GpgError(`creating signature with key ${keyIdentity}: bad passphrase`);
  if (has('PINENTRY_LAUNCHED') || /inappropriate ioctl|pinentry|No passphrase given|Operation cancelled/i.test(r.stderr))
    throw new GpgError(`creating signature with key ${keyIdentity}: the key needs a passphrase (use --sign-passphrase-file): ${gpgMessage(r)}`);
  throw new GpgError(`creating signature with key ${keyIdentity}: gpg: ${gpgMessage(r)}`);
}

export interface GpgVerified {
  /** The signed bytes (the payload). */
  payload: Buffer;
  /** Fingerprint of the key that made the signature (VALIDSIG). */
  fingerprint: string;
  /** Fingerprint of its primary key (the same unless a subkey signed). */
  primaryFingerprint: string;
}

/**
 * Verify an OpenPGP signed message and return what it signs; throws GpgError naming why it is not one good
 * signature by a key in the keyring.
 */
export async function gpgVerify(sig: Buffer, o: GpgOptions = {}): Promise<GpgVerified> {
  const r = await runGpg(['--no-auto-key-retrieve', '--decrypt'], sig, { ...o, noAgent: true });
  const get = (k: string) => r.status.find((s) => s[0] === k);
  const count = (k: string) => r.status.filter((s) => s[0] === k).length;
  if (get('BEGIN_DECRYPTION') || get('ENC_TO') || get('DECRYPTION_FAILED')) throw new GpgError('not a signature: the data is encrypted');
  if (get('NODATA') && !get('NEWSIG')) throw new GpgError(`not an OpenPGP signature (gpg: ${gpgMessage(r)})`);
  const n = count('NEWSIG');
  if (n > 1) throw new GpgError(`Unexpected GPG signature count ${n}`);
  const bad = get('BADSIG');
  if (bad) throw new GpgError(`BAD signature by key ${bad[1]}: the signed data or the signature was modified`);
  const err = get('ERRSIG');
  if (err) {
    if (err[6] === '9' || get('NO_PUBKEY')) throw new GpgError(`signed by key ${err[7] && err[7] !== '-' ? err[7] : err[1]}, which is not among the trusted keys (no public key)`);
    throw new GpgError(`signature by key ${err[1]} cannot be checked (gpg: ${gpgMessage(r)})`);
  }
  const exp = get('EXPKEYSIG');
  if (exp) throw new GpgError(`signed by key ${exp[1]}, which has expired`);
  const rev = get('REVKEYSIG');
  if (rev) throw new GpgError(`signed by key ${rev[1]}, which is revoked`);
  const expsig = get('EXPSIG');
  if (expsig) throw new GpgError(`the signature by key ${expsig[1]} has expired`);
  if (get('TRUST_NEVER')) throw new GpgError('signature by a key marked as never trusted');
  const valid = get('VALIDSIG');
  if (!get('GOODSIG') || !valid || n !== 1) {
    if (n === 0 && !valid) throw new GpgError(`not a signature: no OpenPGP signature in the data (gpg: ${gpgMessage(r)})`);
    throw new GpgError(`signature did not verify (gpg: ${gpgMessage(r)})`);
  }
  if (r.code !== 0) throw new GpgError(`signature did not verify (gpg: ${gpgMessage(r)})`);
  const fingerprint = valid[1]!;
  const primaryFingerprint = valid[10] && /^[0-9A-F]+$/i.test(valid[10]) ? valid[10] : fingerprint;
  return { payload: r.stdout, fingerprint, primaryFingerprint };
}

/** A temporary keyring holding only some public keys (policy.json signedBy keys, --public-key-file). */
export interface EphemeralKeyring {
  homedir: string;
  /** Fingerprints of the (primary) keys imported. */
  fingerprints: string[];
  verify(sig: Buffer, signal?: AbortSignal): Promise<GpgVerified>;
}

/** Stop the agent gpg may have started in a homedir (only when its socket is there: no process spawned otherwise). */
async function stopAgent(homedir: string): Promise<void> {
  const sockets = ['S.gpg-agent', 'S.keyboxd', 'S.dirmngr'];
  const present = await Promise.all(sockets.map((s) => stat(join(homedir, s)).then(() => true, () => false)));
  if (!present.some(Boolean)) return;
  await new Promise<void>((resolve) => {
    const c = spawn('gpgconf', ['--homedir', homedir, '--kill', 'all'], { stdio: 'ignore' });
    c.on('error', () => resolve());
    c.on('close', () => resolve());
  });
}

/**
 * Run `fn` with a temporary homedir holding `keys` (binary or armored OpenPGP public keys, each possibly several);
 * the homedir (and any agent in it) is gone when this returns or throws. `what[i]` names key i in errors.
 */
export async function withEphemeralKeyring<T>(keys: readonly Buffer[], what: readonly string[], fn: (k: EphemeralKeyring) => Promise<T>, signal?: AbortSignal): Promise<T> {
  const homedir = await mkdtemp(join(tmpdir(), 'tsimage-gpg-'));
  try {
    const fingerprints: string[] = [];
    for (let i = 0; i < keys.length; i++) {
      const r = await runGpg(['--import'], keys[i], { homedir, signal, noAgent: true });
      const ok = r.status.filter((s) => s[0] === 'IMPORT_OK').map((s) => s[2]!);
      if (r.code !== 0 && ok.length === 0) throw new GpgError(`importing ${what[i] ?? `key ${i + 1}`}: gpg: ${gpgMessage(r)}`);
      for (const f of ok) if (f && !fingerprints.includes(f)) fingerprints.push(f);
    }
    return await fn({ homedir, fingerprints, verify: (sig, s) => gpgVerify(sig, { homedir, signal: s ?? signal }) });
  } finally {
    await stopAgent(homedir).catch(() => undefined);
    await rm(homedir, { recursive: true, force: true });
  }
}
