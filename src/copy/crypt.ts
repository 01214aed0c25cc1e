/**
 * OCI image layer encryption as containers/ocicrypt does it (skopeo copy --encryption-key / --decryption-key),
 * `jwe` key wrapping only (RSA and EC public keys; the matching private keys to decrypt).
 *
 * Format (byte-compatible with ocicrypt, as vendored by skopeo 1.9.3):
 * - the layer blob is the plaintext blob (compressed as it is) encrypted with AES-256-CTR under a random 32-byte key
 *   and 16-byte nonce (the counter is the whole 128-bit block, big-endian, as Go's cipher.NewCTR), followed by nothing:
 *   the HMAC-SHA256 (keyed with the same symmetric key) of the ciphertext is in the public options;
 * - its media type gets `+encrypted` (application/vnd.oci.image.layer.v1.tar+gzip+encrypted);
 * - annotation `org.opencontainers.image.enc.pubopts`: base64 of `{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"<b64>","cipheroptions":{}}`;
 * - annotation `org.opencontainers.image.enc.keys.jwe`: base64 of a JWE (JSON serialization, A256GCM content
 *   encryption; RSA-OAEP for RSA recipients, ECDH-ES+A256KW for EC ones; one JWE for all recipients, flattened when
 *   there is one) whose plaintext is the private options `{"symkey":"<b64>","digest":"<plain blob digest>","cipheroptions":{"nonce":"<b64>"}}`.
 *   Several base64 JWEs may be comma-separated (ocicrypt appends when recipients are added); each is tried.
 * - the config (diffIDs are of the plain tar) and the other descriptors do not change.
 *
 * Streams only: encryption and decryption are Transforms; the HMAC is computed while streaming and checked at the end
 * (the destination commits nothing when the stream fails). `jose` is loaded only when keys are wrapped or unwrapped.
 */
import { createCipheriv, createDecipheriv, createHmac, createPrivateKey, createPublicKey, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
import { isDigest, type Digest } from '../oci/digest.js';
import { TsimageError, UsageError } from '../oci/errors.js';
import type { Descriptor } from '../oci/manifest.js';

export const ENCRYPTED_SUFFIX = '+encrypted';
export const ENC_ANNOTATION_PREFIX = 'org.opencontainers.image.enc.';
export const JWE_ANNOTATION = 'org.opencontainers.image.enc.keys.jwe';
export const PUBOPTS_ANNOTATION = 'org.opencontainers.image.enc.pubopts';
export const CIPHER = 'AES_256_CTR_HMAC_SHA256';

export function isEncryptedType(mt: string): boolean {
  return mt.endsWith(ENCRYPTED_SUFFIX);
}

export function decryptedType(mt: string): string {
  return isEncryptedType(mt) ? mt.slice(0, -ENCRYPTED_SUFFIX.length) : mt;
}

/** The annotations without ocicrypt's (`org.opencontainers.image.enc.*`), undefined when none are left. */
export function withoutEncAnnotations(a: Record<string, string> | undefined): Record<string, string> | undefined {
  if (!a) return undefined;
  const out = Object.fromEntries(Object.entries(a).filter(([k]) => !k.startsWith(ENC_ANNOTATION_PREFIX)));
  return Object.keys(out).length ? out : undefined;
}

/** Go's encoding/json for these small option objects (no <, >, & can occur in base64 or digests). */
const json = (v: unknown): string => JSON.stringify(v);

// ---------------------------------------------------------------------------------------------
// the engine's side

/** One layer being encrypted: the ciphertext stream, then the annotations once it has ended. */
export interface LayerEncryption {
  stream: Transform;
  /** After the stream ended: the annotations for the encrypted layer (`plainDigest`: the digest of what was encrypted). */
  annotations(plainDigest: Digest): Promise<Record<string, string>>;
}

/** What the copy engine needs to encrypt (CopyOptions.encrypt). */
export interface LayerEncrypter {
  /** --encrypt-layer: indexes (negative: from the end); undefined or empty = every layer. */
  readonly layers?: readonly number[] | undefined;
  encryptor(): LayerEncryption;
}

/** A layer whose key was unwrapped (before anything is written): the plain blob's digest and a decrypting stream. */
export interface UnwrappedLayer {
  /** The digest of the decrypted blob (ocicrypt's private options `digest`). */
  digest: Digest;
  stream(): CtrHmacStream;
}

/** What the copy engine needs to decrypt (CopyOptions.decrypt). */
export interface LayerDecrypter {
  /** Unwrap the layer's key with one of the private keys; throws naming the layer when none fits. */
  unwrap(desc: Descriptor): Promise<UnwrappedLayer>;
}

export class CtrHmacStream extends Transform {
  private readonly cipher;
  private readonly hmac;
  /** The end was reached and the HMAC computed (and, decrypting, checked). */
  finished = false;
  constructor(
    private readonly encrypt: boolean,
    key: Buffer,
    nonce: Buffer,
    private readonly onEnd: (mac: Buffer) => Error | undefined,
  ) {
    super({ highWaterMark: 1024 * 1024 });
    this.cipher = encrypt ? createCipheriv('aes-256-ctr', key, nonce) : createDecipheriv('aes-256-ctr', key, nonce);
    this.hmac = createHmac('sha256', key);
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    if (!this.encrypt) this.hmac.update(chunk);
    const out = this.cipher.update(chunk);
    if (this.encrypt) this.hmac.update(out);
    cb(null, out);
  }
  override _flush(cb: TransformCallback): void {
    const last = this.cipher.final(); // CTR: nothing left
    if (last.length) {
      if (this.encrypt) this.hmac.update(last);
      this.push(last);
    }
    this.finished = true;
    cb(this.onEnd(this.hmac.digest()));
  }
}

// ---------------------------------------------------------------------------------------------
// keys

export interface PublicRecipient {
  key: KeyObject;
  /** The JWE key management algorithm for it. */
  alg: 'RSA-OAEP' | 'ECDH-ES+A256KW';
  file: string;
}

export interface PrivateKey {
  key: KeyObject;
  file: string;
}

function keyAlg(key: KeyObject, file: string): PublicRecipient['alg'] {
  if (key.asymmetricKeyType === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < 2048) throw new UsageError(`${file}: RSA key of ${bits} bits: JWE (RSA-OAEP) needs 2048 bits or more`);
    return 'RSA-OAEP';
  }
  if (key.asymmetricKeyType === 'ec') {
    const crv = key.asymmetricKeyDetails?.namedCurve;
    if (crv !== 'prime256v1' && crv !== 'secp384r1' && crv !== 'secp521r1') throw new UsageError(`${file}: EC curve ${crv}: JWE (ECDH-ES+A256KW) takes P-256, P-384 or P-521`);
    return 'ECDH-ES+A256KW';
  }
  throw new UsageError(`${file}: a ${key.asymmetricKeyType} key: the jwe protocol takes RSA or EC keys`);
}

/** A key file's contents as PEM, JWK (JSON) or DER; `priv`: as a private key (with an optional passphrase). */
function parseKey(data: Buffer, file: string, priv: boolean, passphrase?: Buffer): KeyObject {
  const text = data.toString('latin1');
  const attempts: (() => KeyObject)[] = [];
  if (text.includes('-----BEGIN ')) {
    // createPublicKey would derive the public key from a private one: ocicrypt says "not a public key"
    if (!priv && /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) throw new UsageError(`${file}: not a public key (the jwe protocol encrypts for a public key: give the .pub, e.g. openssl pkey -pubout)`);
    if (priv && !passphrase && /-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(text))
      throw new UsageError(`${file}: the private key is encrypted: give its passphrase (--decryption-key ${file}:PASSPHRASE)`);
    if (priv) attempts.push(() => createPrivateKey({ key: data, format: 'pem', ...(passphrase ? { passphrase } : {}) }));
    else attempts.push(() => createPublicKey({ key: data, format: 'pem' }));
  } else if (text.trimStart().startsWith('{')) {
    attempts.push(() => {
      const jwk = JSON.parse(text) as import('node:crypto').JsonWebKey;
      return priv ? createPrivateKey({ key: jwk, format: 'jwk' }) : createPublicKey({ key: jwk, format: 'jwk' });
    });
  } else if (priv) {
    for (const type of ['pkcs8', 'pkcs1', 'sec1'] as const) attempts.push(() => createPrivateKey({ key: data, format: 'der', type, ...(passphrase ? { passphrase } : {}) }));
  } else {
    for (const type of ['spki', 'pkcs1'] as const) attempts.push(() => createPublicKey({ key: data, format: 'der', type }));
  }
  let first: unknown;
  for (const a of attempts) {
    try {
      const k = a();
      if (!priv && k.type !== 'public') throw new UsageError(`${file}: not a public key (the jwe protocol encrypts for a public key)`);
      return k;
    } catch (e) {
      if (e instanceof UsageError) throw e;
      first ??= e;
    }
  }
  const code = (first as { code?: string })?.code;
  if (priv && code === 'ERR_MISSING_PASSPHRASE') throw new UsageError(`${file}: the private key is encrypted: give its passphrase (--decryption-key ${file}:PASSPHRASE)`);
  if (priv && passphrase && /bad decrypt|BAD_DECRYPT/i.test(String((first as Error)?.message))) throw new UsageError(`${file}: wrong passphrase for the private key`);
  throw new UsageError(`${file}: not a ${priv ? 'private' : 'public'} key in PEM, DER or JWK (${(first as Error)?.message ?? 'unreadable'})`);
}

/** --encryption-key PROTOCOL:KEYFILE (repeatable); only the jwe protocol. */
export function loadEncryptionKeys(specs: readonly string[]): PublicRecipient[] {
  return specs.map((spec) => {
    const i = spec.indexOf(':');
    const proto = i < 0 ? '' : spec.slice(0, i);
    const file = spec.slice(i + 1);
    if (i < 0 || file === '') throw new UsageError(`--encryption-key ${JSON.stringify(spec)}: want PROTOCOL:KEYFILE (e.g. jwe:/path/to/key.pem)`);
    if (proto !== 'jwe') {
      const known = ['pgp', 'pkcs7', 'pkcs11', 'provider'].includes(proto.split('.')[0]!);
      throw new UsageError(`--encryption-key ${JSON.stringify(spec)}: ${known ? `the ${proto} protocol is not supported by tscopy` : `unknown protocol ${JSON.stringify(proto)}`} (supported: jwe)`);
    }
    let data: Buffer;
    try {
      data = readFileSync(file);
    } catch (e) {
      throw new UsageError(`--encryption-key ${file}: ${(e as Error).message}`);
    }
    const key = parseKey(data, file, false);
    return { key, alg: keyAlg(key, file), file };
  });
}

/** ocicrypt's passphrase forms: `pass=SECRET`, `file=PATH` (its whole contents), `fd=N`, or the passphrase itself. */
async function passphraseOf(s: string, spec: string): Promise<Buffer> {
  try {
    if (s.startsWith('pass=')) return Buffer.from(s.slice(5));
    if (s.startsWith('file=')) return await readFile(s.slice(5));
    if (s.startsWith('fd=')) {
      const fd = Number(s.slice(3));
      if (!Number.isInteger(fd) || fd < 0) throw new Error(`bad file descriptor ${JSON.stringify(s.slice(3))}`);
      return readFileSync(fd);
    }
  } catch (e) {
    throw new UsageError(`--decryption-key ${JSON.stringify(spec)}: reading the passphrase: ${(e as Error).message}`);
  }
  return Buffer.from(s);
}

/** --decryption-key KEYFILE[:PASSPHRASE] (repeatable). */
export async function loadDecryptionKeys(specs: readonly string[]): Promise<PrivateKey[]> {
  const out: PrivateKey[] = [];
  for (const spec of specs) {
    const parts = spec.split(':');
    if (parts.length > 2 || parts[0] === '') throw new UsageError(`--decryption-key ${JSON.stringify(spec)}: want KEYFILE[:PASSPHRASE]`);
    const file = parts[0]!;
    const pass = parts.length === 2 ? await passphraseOf(parts[1]!, spec) : undefined;
    let data: Buffer;
    try {
      data = await readFile(file);
    } catch (e) {
      throw new UsageError(`--decryption-key ${file}: ${(e as Error).message}`);
    }
    const key = parseKey(data, file, true, pass);
    if (key.asymmetricKeyType !== 'rsa' && key.asymmetricKeyType !== 'ec') throw new UsageError(`${file}: a ${key.asymmetricKeyType} key: the jwe protocol takes RSA or EC keys`);
    out.push({ key, file });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// encryption

type Jose = typeof import('jose');
let josePromise: Promise<Jose> | undefined;
const jose = (): Promise<Jose> => (josePromise ??= import('jose'));

export class JweEncrypter implements LayerEncrypter {
  constructor(
    private readonly recipients: readonly PublicRecipient[],
    readonly layers?: readonly number[] | undefined,
  ) {
    if (recipients.length === 0) throw new UsageError('encryption needs at least one --encryption-key');
    void jose(); // loaded while the first layer streams
  }

  encryptor(): LayerEncryption {
    const key = randomBytes(32);
    const nonce = randomBytes(16);
    let mac: Buffer | undefined;
    const stream = new CtrHmacStream(true, key, nonce, (m) => {
      mac = m;
      return undefined;
    });
    return {
      stream,
      annotations: async (plainDigest) => {
        if (!mac) throw new TsimageError('internal: layer encryption not finished');
        const priv = json({ symkey: key.toString('base64'), digest: plainDigest, cipheroptions: { nonce: nonce.toString('base64') } });
        const pub = json({ cipher: CIPHER, hmac: mac.toString('base64'), cipheroptions: {} });
        const jwe = await this.wrap(Buffer.from(priv));
        return { [JWE_ANNOTATION]: Buffer.from(jwe).toString('base64'), [PUBOPTS_ANNOTATION]: Buffer.from(pub).toString('base64') };
      },
    };
  }

  /** One JWE for every recipient (go-jose's multi-recipient encrypter; flattened JSON when there is one). */
  private async wrap(plaintext: Uint8Array): Promise<string> {
    const j = await jose();
    const [first] = this.recipients;
    if (this.recipients.length === 1) {
      const out = await new j.FlattenedEncrypt(plaintext).setProtectedHeader({ alg: first!.alg, enc: 'A256GCM' }).encrypt(first!.key);
      return JSON.stringify(out);
    }
    const g = new j.GeneralEncrypt(plaintext).setProtectedHeader({ enc: 'A256GCM' });
    for (const r of this.recipients) g.addRecipient(r.key).setUnprotectedHeader({ alg: r.alg });
    return JSON.stringify(await g.encrypt());
  }
}

// ---------------------------------------------------------------------------------------------
// decryption

function b64Field(o: Record<string, unknown> | undefined, k: string): Buffer | undefined {
  const v = o?.[k];
  return typeof v === 'string' ? Buffer.from(v, 'base64') : undefined;
}

export class JweDecrypter implements LayerDecrypter {
  constructor(private readonly keys: readonly PrivateKey[]) {
    if (keys.length === 0) throw new UsageError('decryption needs at least one --decryption-key');
  }

  async unwrap(desc: Descriptor): Promise<UnwrappedLayer> {
    const what = `layer ${desc.digest}`;
    const ann = desc.annotations ?? {};
    const wrapped = ann[JWE_ANNOTATION];
    if (!wrapped) {
      const schemes = Object.keys(ann)
        .filter((k) => k.startsWith(`${ENC_ANNOTATION_PREFIX}keys.`))
        .map((k) => k.slice(`${ENC_ANNOTATION_PREFIX}keys.`.length));
      throw new TsimageError(
        schemes.length
          ? `decrypting ${what}: it is encrypted for ${schemes.join(', ')} recipients only; tscopy decrypts jwe (${JWE_ANNOTATION})`
          : `decrypting ${what}: no wrapped keys (annotation ${JWE_ANNOTATION} missing)`,
      );
    }
    const j = await jose();
    let privBytes: Uint8Array | undefined;
    const errors: string[] = [];
    for (const part of wrapped.split(',')) {
      let jwe: Record<string, unknown>;
      try {
        jwe = JSON.parse(Buffer.from(part, 'base64').toString('utf8')) as Record<string, unknown>;
        if (!jwe || typeof jwe !== 'object') throw new Error('not a JSON object');
      } catch (e) {
        throw new TsimageError(`decrypting ${what}: annotation ${JWE_ANNOTATION} is not base64 JWE JSON (${(e as Error).message})`);
      }
      for (const k of this.keys) {
        try {
          const r = Array.isArray(jwe.recipients)
            ? await j.generalDecrypt(jwe as unknown as import('jose').GeneralJWE, k.key)
            : await j.flattenedDecrypt(jwe as unknown as import('jose').FlattenedJWE, k.key);
          privBytes = r.plaintext;
          break;
        } catch (e) {
          errors.push(`${k.file}: ${(e as Error).message}`);
        }
      }
      if (privBytes) break;
    }
    if (!privBytes) {
      throw new TsimageError(
        `decrypting ${what}: none of the decryption keys (${this.keys.map((k) => k.file).join(', ')}) is a recipient of this layer (${[...new Set(errors)].join('; ')})`,
      );
    }
    let priv: Record<string, unknown>;
    let pub: Record<string, unknown>;
    try {
      priv = JSON.parse(Buffer.from(privBytes).toString('utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new TsimageError(`decrypting ${what}: the unwrapped options are not JSON (${(e as Error).message})`);
    }
    try {
      const p = ann[PUBOPTS_ANNOTATION];
      pub = p ? (JSON.parse(Buffer.from(p, 'base64').toString('utf8')) as Record<string, unknown>) : {};
    } catch (e) {
      throw new TsimageError(`decrypting ${what}: annotation ${PUBOPTS_ANNOTATION} is not base64 JSON (${(e as Error).message})`);
    }
    if (pub.cipher !== CIPHER) throw new TsimageError(`decrypting ${what}: cipher ${JSON.stringify(pub.cipher ?? '')} is not supported (${CIPHER} is)`);
    const privOpts = priv.cipheroptions as Record<string, unknown> | undefined;
    const pubOpts = pub.cipheroptions as Record<string, unknown> | undefined;
    const key = b64Field(priv, 'symkey');
    // the nonce is private; the HMAC public (newer ocicrypt may put it under cipheroptions): ocicrypt's GetOpt looks in both
    const nonce = b64Field(pubOpts, 'nonce') ?? b64Field(privOpts, 'nonce');
    const expected = b64Field(pubOpts, 'hmac') ?? b64Field(privOpts, 'hmac') ?? b64Field(pub, 'hmac');
    const digest = priv.digest;
    if (!key || key.length !== 32) throw new TsimageError(`decrypting ${what}: symmetric key of ${key?.length ?? 0} bytes, want 32`);
    if (!nonce || nonce.length !== 16) throw new TsimageError(`decrypting ${what}: nonce of ${nonce?.length ?? 0} bytes, want 16`);
    if (!expected || expected.length !== 32) throw new TsimageError(`decrypting ${what}: no HMAC-SHA256 in ${PUBOPTS_ANNOTATION}`);
    if (!isDigest(digest)) throw new TsimageError(`decrypting ${what}: the unwrapped options have no valid digest of the plain layer (${JSON.stringify(digest)})`);
    return {
      digest,
      stream: () =>
        new CtrHmacStream(false, key, nonce, (mac) =>
          timingSafeEqual(mac, expected)
            ? undefined
            : new TsimageError(`decrypting ${what}: HMAC mismatch: the encrypted layer was modified or is corrupt (expected ${expected.toString('hex')}, got ${mac.toString('hex')})`),
        ),
    };
  }
}
