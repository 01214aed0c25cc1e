/**
 * cosign-compatible key pairs.
 *
 * Private key: PKCS#8 DER of an ECDSA P-256 key, encrypted with the envelope of
 * secure-systems-lab's `encrypted` package (what cosign uses): JSON
 *   {"kdf":{"name":"scrypt","params":{"N":..,"r":8,"p":1},"salt":"<b64 32 bytes>"},
 *    "cipher":{"name":"nacl/secretbox","nonce":"<b64 24 bytes>"},
 *    "ciphertext":"<b64 secretbox(pkcs8)>"}
 * where the secretbox key is scrypt(password, salt, N, r, p, 32). The JSON bytes are the
 * body of a PEM block `ENCRYPTED SIGSTORE PRIVATE KEY` (cosign >= 2.0) or
 * `ENCRYPTED COSIGN PRIVATE KEY` (older cosign; both are read). Only the three scrypt
 * parameter sets that package accepts are accepted when decrypting (a tampered N would
 * otherwise be a denial of service). New keys use its default (N=65536, r=8, p=1).
 *
 * Public key: PKIX `PUBLIC KEY` PEM. Plain `PRIVATE KEY` (PKCS#8) and `EC PRIVATE KEY`
 * (SEC1) PEM files, as openssl writes them, are accepted for signing as well.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, scryptSync, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import type naclType from 'tweetnacl';

/**
 * tweetnacl only when a key is encrypted or decrypted (required, not imported: every tscopy copy loads this module
 * through the policy code, and an ESM import of this CJS file cost ~18 ms of start-up per command).
 */
let naclMod: typeof naclType | undefined;
const nacl = (): typeof naclType => (naclMod ??= createRequire(import.meta.url)('tweetnacl') as typeof naclType);
import { TsimageError, UsageError } from '../../oci/errors.js';

export const SIGSTORE_PRIVATE_KEY_PEM = 'ENCRYPTED SIGSTORE PRIVATE KEY';
export const COSIGN_PRIVATE_KEY_PEM = 'ENCRYPTED COSIGN PRIVATE KEY';

export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

/** The parameter sets go-securesystemslib's `encrypted` package accepts (legacy, standard, OWASP). */
export const SCRYPT_PARAMS = {
  legacy: { N: 32768, r: 8, p: 1 },
  standard: { N: 65536, r: 8, p: 1 },
  owasp: { N: 131072, r: 8, p: 1 },
} as const satisfies Record<string, ScryptParams>;

const SALT_SIZE = 32;
const KEY_SIZE = 32;
const NONCE_SIZE = 24;

/** A wrong password or a corrupted key file. */
export class KeyDecryptError extends TsimageError {}

function scryptKey(password: Buffer, salt: Buffer, p: ScryptParams): Buffer {
  // Node's default maxmem (32 MiB) is below what N=65536,r=8 needs (128*N*r = 64 MiB).
  return scryptSync(password, salt, KEY_SIZE, { N: p.N, r: p.r, p: p.p, maxmem: 256 * p.N * p.r + 1024 * 1024 });
}

export interface EncryptOptions {
  params?: ScryptParams;
  /** Fixed salt/nonce (tests only: for reproducible vectors). */
  salt?: Buffer;
  nonce?: Buffer;
}

/** Encrypt bytes into the JSON envelope (the bytes that go inside the PEM block). */
export function encryptEnvelope(plaintext: Uint8Array, password: Uint8Array | string, opts: EncryptOptions = {}): Buffer {
  const params = opts.params ?? SCRYPT_PARAMS.standard;
  const salt = opts.salt ?? randomBytes(SALT_SIZE);
  const nonce = opts.nonce ?? randomBytes(NONCE_SIZE);
  if (salt.length !== SALT_SIZE) throw new TsimageError(`scrypt salt must be ${SALT_SIZE} bytes`);
  if (nonce.length !== NONCE_SIZE) throw new TsimageError(`secretbox nonce must be ${NONCE_SIZE} bytes`);
  const key = scryptKey(Buffer.from(password), salt, params);
  const box = nacl().secretbox(plaintext, nonce, key);
  key.fill(0);
  // Field order as Go's encoding/json writes the structs (kdf, cipher, ciphertext; N, r, p).
  const env = {
    kdf: { name: 'scrypt', params: { N: params.N, r: params.r, p: params.p }, salt: salt.toString('base64') },
    cipher: { name: 'nacl/secretbox', nonce: nonce.toString('base64') },
    ciphertext: Buffer.from(box).toString('base64'),
  };
  return Buffer.from(JSON.stringify(env));
}

/** Decrypt a JSON envelope; KeyDecryptError names what is wrong (format, parameters, password). */
export function decryptEnvelope(envelope: Uint8Array | string, password: Uint8Array | string): Buffer {
  let env: unknown;
  try {
    env = JSON.parse(Buffer.from(envelope).toString('utf8'));
  } catch (e) {
    throw new KeyDecryptError(`encrypted key: not a JSON envelope (${(e as Error).message})`);
  }
  const o = env as {
    kdf?: { name?: unknown; params?: { N?: unknown; r?: unknown; p?: unknown }; salt?: unknown };
    cipher?: { name?: unknown; nonce?: unknown };
    ciphertext?: unknown;
  };
  if (!o || typeof o !== 'object') throw new KeyDecryptError('encrypted key: envelope is not an object');
  if (o.kdf?.name !== 'scrypt') throw new KeyDecryptError(`encrypted key: unknown kdf name ${JSON.stringify(o.kdf?.name)}`);
  if (o.cipher?.name !== 'nacl/secretbox')
    throw new KeyDecryptError(`encrypted key: unknown cipher name ${JSON.stringify(o.cipher?.name)}`);
  const p = o.kdf.params;
  const params = Object.values(SCRYPT_PARAMS).find((s) => p && s.N === p.N && s.r === p.r && s.p === p.p);
  if (!params) throw new KeyDecryptError(`encrypted key: unsupported scrypt parameters ${JSON.stringify(p)}`);
  if (typeof o.kdf.salt !== 'string' || typeof o.cipher.nonce !== 'string' || typeof o.ciphertext !== 'string')
    throw new KeyDecryptError('encrypted key: salt, nonce and ciphertext must be base64 strings');
  const salt = Buffer.from(o.kdf.salt, 'base64');
  const nonce = Buffer.from(o.cipher.nonce, 'base64');
  if (nonce.length !== NONCE_SIZE) throw new KeyDecryptError('encrypted key: incorrect nonce size');
  const key = scryptKey(Buffer.from(password), salt, params);
  const out = nacl().secretbox.open(Buffer.from(o.ciphertext, 'base64'), nonce, key);
  key.fill(0);
  if (!out) throw new KeyDecryptError('decrypting the private key failed: wrong password?');
  return Buffer.from(out);
}

export interface PemBlock {
  type: string;
  bytes: Buffer;
}

/** The first PEM block in text (headers such as Proc-Type are not supported and rejected). */
export function decodePem(text: string, what = 'PEM file'): PemBlock {
  const m = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/.exec(text);
  if (!m) throw new UsageError(`${what}: no PEM block found`);
  const body = m[2]!;
  if (body.includes(':')) throw new UsageError(`${what}: PEM headers (${m[1]}) are not supported`);
  const b64 = body.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) throw new UsageError(`${what}: invalid base64 in PEM block ${m[1]}`);
  return { type: m[1]!, bytes: Buffer.from(b64, 'base64') };
}

/** PEM encoding with 64-character lines, as Go's encoding/pem writes it. */
export function encodePem(type: string, bytes: Uint8Array): string {
  const b64 = Buffer.from(bytes).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${type}-----\n${lines.join('\n')}${lines.length ? '\n' : ''}-----END ${type}-----\n`;
}

export interface KeyPairPem {
  privateKey: string;
  publicKey: string;
}

function checkP256(k: KeyObject, what: string): void {
  if (k.asymmetricKeyType !== 'ec' || k.asymmetricKeyDetails?.namedCurve !== 'prime256v1')
    throw new UsageError(
      `${what}: only ECDSA P-256 keys are supported (got ${k.asymmetricKeyType}${k.asymmetricKeyDetails?.namedCurve ? ' ' + k.asymmetricKeyDetails.namedCurve : ''})`,
    );
}

/** Encrypt an existing private key into cosign's format. */
export function exportKeyPair(key: KeyObject, password: string | Uint8Array, opts: EncryptOptions = {}): KeyPairPem {
  checkP256(key, 'private key');
  const pkcs8 = key.export({ format: 'der', type: 'pkcs8' });
  const env = encryptEnvelope(pkcs8, password, opts);
  pkcs8.fill(0);
  const pub = createPublicKey(key).export({ format: 'pem', type: 'spki' }).toString();
  return { privateKey: encodePem(SIGSTORE_PRIVATE_KEY_PEM, env), publicKey: pub };
}

/** A new ECDSA P-256 key pair in cosign's format. */
export function generateKeyPair(password: string | Uint8Array, opts: EncryptOptions = {}): KeyPairPem {
  // Ask for the encoded key and re-import it: a KeyObject handed out by key generation shares its lock with the
  // generation job, and Node 20 can deadlock when that job is collected while asymmetricKeyDetails holds the lock
  // (seen as a hung test: GetEcKeyDetail -> GC -> ~KeyGenJob -> the same mutex).
  const { privateKey } = generateKeyPairSync('ec', {
    namedCurve: 'prime256v1',
    publicKeyEncoding: { type: 'spki', format: 'der' },
    privateKeyEncoding: { type: 'pkcs8', format: 'der' },
  });
  const key = createPrivateKey({ key: privateKey, format: 'der', type: 'pkcs8' });
  privateKey.fill(0);
  return exportKeyPair(key, password, opts);
}

/** Whether a private key file needs a password (cosign's encrypted formats do). */
export function isEncryptedKey(pemText: string): boolean {
  const t = decodePem(pemText, 'private key').type;
  return t === SIGSTORE_PRIVATE_KEY_PEM || t === COSIGN_PRIVATE_KEY_PEM;
}

/**
 * Load a private key: cosign's encrypted formats (with the password), or an unencrypted
 * PKCS#8 / SEC1 PEM as openssl writes it.
 */
export function loadPrivateKey(pemText: string, password?: string | Uint8Array, what = 'private key'): KeyObject {
  const block = decodePem(pemText, what);
  let key: KeyObject;
  if (block.type === SIGSTORE_PRIVATE_KEY_PEM || block.type === COSIGN_PRIVATE_KEY_PEM) {
    if (password === undefined) throw new UsageError(`${what} is encrypted: a password is needed`);
    const der = decryptEnvelope(block.bytes, password);
    try {
      key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    } catch (e) {
      throw new KeyDecryptError(`${what}: decrypted data is not a PKCS#8 private key: ${(e as Error).message}`);
    } finally {
      der.fill(0);
    }
  } else if (block.type === 'PRIVATE KEY' || block.type === 'EC PRIVATE KEY') {
    try {
      key = createPrivateKey({ key: pemText, format: 'pem' });
    } catch (e) {
      throw new UsageError(`${what}: ${(e as Error).message}`);
    }
  } else if (block.type === 'ENCRYPTED PRIVATE KEY') {
    if (password === undefined) throw new UsageError(`${what} is encrypted: a password is needed`);
    try {
      key = createPrivateKey({ key: pemText, format: 'pem', passphrase: Buffer.from(password) });
    } catch (e) {
      throw new KeyDecryptError(`${what}: ${(e as Error).message}`);
    }
  } else throw new UsageError(`${what}: unsupported PEM type ${JSON.stringify(block.type)}`);
  checkP256(key, what);
  return key;
}

/** Load a public key (PKIX `PUBLIC KEY` PEM; a private key file also yields its public key). */
export function loadPublicKey(pemText: string, what = 'public key'): KeyObject {
  const block = decodePem(pemText, what);
  if (block.type !== 'PUBLIC KEY' && block.type !== 'EC PUBLIC KEY' && block.type !== 'CERTIFICATE')
    throw new UsageError(`${what}: expected a PEM "PUBLIC KEY", got ${JSON.stringify(block.type)}`);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pemText, format: 'pem' });
  } catch (e) {
    throw new UsageError(`${what}: ${(e as Error).message}`);
  }
  checkP256(key, what);
  return key;
}
