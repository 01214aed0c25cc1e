/**
 * Checking one cosign signature: the cryptographic signature over the stored payload bytes,
 * the manifest digest in the payload against the image, and the signed identity against
 * what the caller expects. Shared by `tscopy verify` and policy.json's sigstoreSigned.
 */
import type { KeyObject } from 'node:crypto';
import { parseReference, type ImageReference } from '../../oci/reference.js';
import { UsageError } from '../../oci/errors.js';
import { type Digest } from '../../oci/digest.js';
import { parsePayload, verifyPayloadSignature, SignatureError, type Payload } from './payload.js';

/** A signature as found in a registry (a layer of a `.sig` manifest or of a referrer). */
export interface SignatureCandidate {
  /** The payload bytes exactly as stored (digest-verified by the fetcher). */
  payload: Buffer;
  /** base64 DER signature from the `dev.cosignproject.cosign/signature` annotation. */
  signature: string | undefined;
  /** Where it came from, for reports ("tag sha256-….sig, layer 1"). */
  where: string;
  /** Set when the payload could not be read (digest mismatch, missing blob): the candidate fails with this. */
  problem?: string | undefined;
}

/** How the signed docker-reference must relate to the image (policy.json's signedIdentity). */
export type SignedIdentity =
  | { type: 'matchExact' }
  | { type: 'matchRepoDigestOrExact' }
  | { type: 'matchRepository' }
  | { type: 'exactReference'; dockerReference: string }
  | { type: 'exactRepository'; dockerRepository: string }
  | { type: 'remapIdentity'; prefix: string; signedPrefix: string };

/** A docker reference as containers/image's reference.ParseNormalizedNamed sees it (no default tag). */
export function normalizedNamed(s: string): ImageReference {
  return parseReference(s, { normalize: true, defaultTag: false });
}

function nameOf(r: ImageReference): string {
  return `${r.registry}/${r.repository}`;
}

function stringOf(r: ImageReference): string {
  let s = nameOf(r);
  if (r.tag) s += `:${r.tag}`;
  if (r.digest) s += `@${r.digest}`;
  return s;
}

function isNameOnly(r: ImageReference): boolean {
  return !r.tag && !r.digest;
}

function matchRepoDigestOrExact(intended: ImageReference, signed: ImageReference): boolean {
  if (isNameOnly(signed)) return false;
  if (intended.tag) return stringOf(signed) === stringOf(intended);
  if (intended.digest) return nameOf(signed) === nameOf(intended);
  return false;
}

function refMatchesPrefix(name: string, prefix: string): boolean {
  if (name.length < prefix.length) return false;
  if (name.length === prefix.length) return name === prefix;
  return name.startsWith(prefix) && name[prefix.length] === '/';
}

/**
 * Does the signed docker-reference satisfy `rule` for the image the user named (`intended`,
 * undefined for transports without a docker identity)? Returns a reason when it does not.
 */
export function checkIdentity(rule: SignedIdentity, intended: ImageReference | undefined, signedRef: string): string | undefined {
  let signed: ImageReference;
  try {
    signed = normalizedNamed(signedRef);
  } catch {
    return `signed docker-reference ${JSON.stringify(signedRef)} is not a valid reference`;
  }
  const needIntended = (): ImageReference | string => intended ?? 'the image has no docker reference identity to match against';
  const mismatch = (want: string): string => `signed identity ${JSON.stringify(signedRef)} does not match ${want} (${rule.type})`;
  switch (rule.type) {
    case 'matchExact': {
      const i = needIntended();
      if (typeof i === 'string') return i;
      if (isNameOnly(i) || isNameOnly(signed) || stringOf(signed) !== stringOf(i)) return mismatch(stringOf(i));
      return undefined;
    }
    case 'matchRepoDigestOrExact': {
      const i = needIntended();
      if (typeof i === 'string') return i;
      return matchRepoDigestOrExact(i, signed) ? undefined : mismatch(i.tag ? stringOf(i) : nameOf(i));
    }
    case 'matchRepository': {
      const i = needIntended();
      if (typeof i === 'string') return i;
      return nameOf(signed) === nameOf(i) ? undefined : mismatch(nameOf(i));
    }
    case 'exactReference': {
      let want: ImageReference;
      try {
        want = normalizedNamed(rule.dockerReference);
      } catch {
        return `invalid dockerReference ${JSON.stringify(rule.dockerReference)}`;
      }
      if (isNameOnly(want) || isNameOnly(signed) || stringOf(signed) !== stringOf(want)) return mismatch(stringOf(want));
      return undefined;
    }
    case 'exactRepository': {
      let want: ImageReference;
      try {
        want = normalizedNamed(rule.dockerRepository);
      } catch {
        return `invalid dockerRepository ${JSON.stringify(rule.dockerRepository)}`;
      }
      return nameOf(signed) === nameOf(want) ? undefined : mismatch(nameOf(want));
    }
    case 'remapIdentity': {
      const i = needIntended();
      if (typeof i === 'string') return i;
      let remapped = i;
      if (refMatchesPrefix(nameOf(i), rule.prefix)) {
        const s = stringOf(i).replace(rule.prefix, rule.signedPrefix);
        try {
          remapped = normalizedNamed(s);
        } catch {
          return `remapping ${stringOf(i)} gives an invalid reference ${JSON.stringify(s)}`;
        }
      }
      return matchRepoDigestOrExact(remapped, signed) ? undefined : mismatch(`${remapped.tag ? stringOf(remapped) : nameOf(remapped)} (remapped from ${stringOf(i)})`);
    }
  }
}

export interface CandidateResult {
  candidate: SignatureCandidate;
  ok: boolean;
  /** Why it failed (undefined when ok). */
  reason?: string;
  payload?: Payload;
  /** Index of the key that verified it. */
  keyIndex?: number;
}

/**
 * Check one candidate against keys (any may verify), the image's manifest digest and the
 * identity rule. Never throws for a bad signature: the result says why.
 */
export function checkCandidate(
  c: SignatureCandidate,
  opts: { keys: KeyObject[]; manifestDigest: Digest; identity: SignedIdentity | undefined; intended: ImageReference | undefined },
): CandidateResult {
  if (c.problem) return { candidate: c, ok: false, reason: c.problem };
  if (!c.signature) return { candidate: c, ok: false, reason: 'no signature annotation on the payload layer' };
  let keyIndex = -1;
  let lastErr = '';
  for (let i = 0; i < opts.keys.length; i++) {
    try {
      verifyPayloadSignature(opts.keys[i]!, c.payload, c.signature);
      keyIndex = i;
      break;
    } catch (e) {
      lastErr = (e as Error).message;
    }
  }
  if (keyIndex < 0) return { candidate: c, ok: false, reason: opts.keys.length > 1 ? `${lastErr} (with any of ${opts.keys.length} keys)` : lastErr };
  let payload: Payload;
  try {
    payload = parsePayload(c.payload);
  } catch (e) {
    return { candidate: c, ok: false, reason: (e as Error).message };
  }
  if (payload.digest !== opts.manifestDigest)
    return {
      candidate: c,
      ok: false,
      payload,
      keyIndex,
      reason: `signature is for manifest ${payload.digest}, not for this image's ${opts.manifestDigest}`,
    };
  if (opts.identity) {
    const why = checkIdentity(opts.identity, opts.intended, payload.dockerReference);
    if (why) return { candidate: c, ok: false, payload, keyIndex, reason: why };
  }
  return { candidate: c, ok: true, payload, keyIndex };
}

export function parseSignedIdentity(v: unknown, path: string): SignedIdentity {
  const o = v as Record<string, unknown>;
  if (!o || typeof o !== 'object' || Array.isArray(o)) throw new UsageError(`${path}: must be an object`);
  const only = (fields: string[]): void => {
    for (const k of Object.keys(o)) if (!fields.includes(k)) throw new UsageError(`${path}: unknown key ${JSON.stringify(k)}`);
  };
  const str = (k: string): string => {
    if (typeof o[k] !== 'string' || o[k] === '') throw new UsageError(`${path}.${k}: must be a non-empty string`);
    return o[k] as string;
  };
  switch (o.type) {
    case 'matchExact':
    case 'matchRepoDigestOrExact':
    case 'matchRepository':
      only(['type']);
      return { type: o.type };
    case 'exactReference': {
      only(['type', 'dockerReference']);
      const r = str('dockerReference');
      let p: ImageReference;
      try {
        p = normalizedNamed(r);
      } catch (e) {
        throw new UsageError(`${path}.dockerReference: ${(e as Error).message}`);
      }
      if (isNameOnly(p)) throw new UsageError(`${path}.dockerReference: ${JSON.stringify(r)} needs a tag or digest`);
      return { type: 'exactReference', dockerReference: r };
    }
    case 'exactRepository': {
      only(['type', 'dockerRepository']);
      const r = str('dockerRepository');
      try {
        normalizedNamed(r);
      } catch (e) {
        throw new UsageError(`${path}.dockerRepository: ${(e as Error).message}`);
      }
      return { type: 'exactRepository', dockerRepository: r };
    }
    case 'remapIdentity': {
      only(['type', 'prefix', 'signedPrefix']);
      return { type: 'remapIdentity', prefix: str('prefix'), signedPrefix: str('signedPrefix') };
    }
    default:
      throw new UsageError(`${path}.type: unknown signedIdentity type ${JSON.stringify(o.type)}`);
  }
}

export { SignatureError };
