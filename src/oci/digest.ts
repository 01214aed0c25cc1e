/**
 * Digests (`algorithm:hex`, sha256 and sha512) and the verifying stream that every
 * ingest goes through: it counts bytes and hashes as data flows, and fails at the end
 * (or as soon as the declared size is exceeded) on a digest or size mismatch.
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { DigestMismatchError, SizeMismatchError, ValidationError } from './errors.js';

declare const DigestBrand: unique symbol;
/** A validated `algorithm:hex` string. */
export type Digest = string & { readonly [DigestBrand]: true };

export type DigestAlgorithm = 'sha256' | 'sha512';

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };
/** The spec's general grammar: algorithm-component ([+._-] algorithm-component)* ":" encoded. */
const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** Parse and validate a digest; throws ValidationError naming what is wrong. */
export function parseDigest(s: string, what = 'digest'): Digest {
  if (typeof s !== 'string' || s === '') throw new ValidationError(what, 'empty digest');
  if (!DIGEST_GRAMMAR.test(s)) throw new ValidationError(what, `invalid digest ${JSON.stringify(s)}: not algorithm:hex`);
  const i = s.indexOf(':');
  const alg = s.slice(0, i);
  const hex = s.slice(i + 1);
  if (alg !== 'sha256' && alg !== 'sha512')
    throw new ValidationError(what, `unsupported digest algorithm ${JSON.stringify(alg)} in ${s} (sha256 or sha512)`);
  if (hex.length !== HEX_LENGTH[alg] || !/^[a-f0-9]+$/.test(hex))
    throw new ValidationError(what, `invalid ${alg} digest ${JSON.stringify(s)}: want ${HEX_LENGTH[alg]} lowercase hex characters`);
  return s as Digest;
}

export function isDigest(s: unknown): s is Digest {
  if (typeof s !== 'string') return false;
  try {
    parseDigest(s);
    return true;
  } catch {
    return false;
  }
}

export function digestAlgorithm(d: Digest): DigestAlgorithm {
  return d.slice(0, d.indexOf(':')) as DigestAlgorithm;
}

export function digestHex(d: Digest): string {
  return d.slice(d.indexOf(':') + 1);
}

/** Digest of bytes held in memory (manifests, configs; never whole blobs). */
export function digestOf(data: Uint8Array | string, alg: DigestAlgorithm = 'sha256'): Digest {
  return `${alg}:${createHash(alg).update(data).digest('hex')}` as Digest;
}

/** An incremental hasher that also counts bytes. */
export class Hasher {
  private readonly hash: Hash;
  size = 0;
  constructor(readonly algorithm: DigestAlgorithm = 'sha256') {
    this.hash = createHash(algorithm);
  }
  update(chunk: Uint8Array): this {
    this.hash.update(chunk);
    this.size += chunk.length;
    return this;
  }
  digest(): Digest {
    return `${this.algorithm}:${this.hash.digest('hex')}` as Digest;
  }
}

export interface VerifyExpect {
  digest?: Digest | undefined;
  size?: number | undefined;
  /** Fail as soon as more than this many bytes arrive (manifests/configs: 4 MiB). */
  limit?: number | undefined;
  /** Names the content in errors ("blob sha256:...", "layers[2]"). */
  what?: string | undefined;
}

/**
 * A pass-through Transform that hashes and counts. At the end it fails with
 * DigestMismatchError / SizeMismatchError when the content is not what was expected;
 * too many bytes fail as soon as they arrive. `result` holds the digest and size after flush.
 */
export class VerifyingStream extends Transform {
  private readonly hasher: Hasher;
  result: { digest: Digest; size: number } | undefined;

  constructor(private readonly expect: VerifyExpect = {}) {
    super();
    this.hasher = new Hasher(expect.digest ? digestAlgorithm(expect.digest) : 'sha256');
  }

  get bytes(): number {
    return this.hasher.size;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const what = this.expect.what ?? this.expect.digest ?? 'content';
    const next = this.hasher.size + chunk.length;
    if (this.expect.size !== undefined && next > this.expect.size) {
      cb(new SizeMismatchError(this.expect.size, next, what));
      return;
    }
    if (this.expect.limit !== undefined && next > this.expect.limit) {
      cb(new SizeMismatchError(this.expect.limit, next, what, 'limit'));
      return;
    }
    this.hasher.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    const what = this.expect.what ?? this.expect.digest ?? 'content';
    const size = this.hasher.size;
    const digest = this.hasher.digest();
    if (this.expect.size !== undefined && size !== this.expect.size) {
      cb(new SizeMismatchError(this.expect.size, size, what));
      return;
    }
    if (this.expect.digest !== undefined && digest !== this.expect.digest) {
      cb(new DigestMismatchError(this.expect.digest, digest, what));
      return;
    }
    this.result = { digest, size };
    cb();
  }
}

export function verifying(expect: VerifyExpect = {}): VerifyingStream {
  return new VerifyingStream(expect);
}

/** The digest of the empty JSON object `{}` (the OCI empty descriptor). */
export const EMPTY_JSON_DIGEST = digestOf('{}');
