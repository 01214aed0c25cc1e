/**
 * `tscopy verify`: every cosign signature of an image (the `.sig` tag and referrers), each checked
 * for the cryptographic signature over the stored payload bytes, the manifest digest in the payload
 * against the image, and the signed identity against the image's reference.
 */
import type { KeyObject } from 'node:crypto';
import type { Digest } from '../../oci/digest.js';
import type { ImageReference } from '../../oci/reference.js';
import type { Io } from '../../oci/io.js';
import { findSignatures } from './attachments.js';
import type { ArtifactRepo } from './repo.js';
import { checkCandidate, normalizedNamed, type CandidateResult } from './verify.js';

export interface VerifyReport {
  image: string;
  manifestDigest: Digest;
  /** One entry per signature found. */
  signatures: CandidateResult[];
  /** Storage problems (unreadable .sig manifest, missing referrer). */
  problems: string[];
  /** At least one signature verified. */
  ok: boolean;
  /** Whether signed identities were checked (false for images without a registry reference). */
  identityChecked: boolean;
}

/**
 * cosign's identity rule for `verify`: the signed docker-reference must name the image's repository;
 * when both the signature and the image name a tag, the tags must agree (cosign itself writes the
 * repository only, skopeo writes repo:tag). A signed digest must be the image's digest.
 */
export function checkVerifyIdentity(intended: ImageReference | undefined, signedRef: string, manifestDigest: Digest): string | undefined {
  if (!intended) return undefined;
  let s: ImageReference;
  try {
    s = normalizedNamed(signedRef);
  } catch {
    return `signed docker-reference ${JSON.stringify(signedRef)} is not a valid reference`;
  }
  const want = `${intended.registry}/${intended.repository}`;
  const got = `${s.registry}/${s.repository}`;
  if (got !== want) return `signed identity ${JSON.stringify(signedRef)} is for repository ${got}, not ${want}`;
  if (s.tag && intended.tag && s.tag !== intended.tag) return `signed identity ${JSON.stringify(signedRef)} is for tag ${s.tag}, not ${intended.tag}`;
  if (s.digest && s.digest !== manifestDigest) return `signed identity ${JSON.stringify(signedRef)} names digest ${s.digest}, not ${manifestDigest}`;
  return undefined;
}

export async function verifyImage(
  repo: ArtifactRepo,
  o: { keys: KeyObject[]; manifestDigest: Digest; intended: ImageReference | undefined; image: string },
  io?: Io,
): Promise<VerifyReport> {
  const found = await findSignatures(repo, o.manifestDigest, io);
  const signatures = found.candidates.map((c) => {
    const r = checkCandidate(c, { keys: o.keys, manifestDigest: o.manifestDigest, identity: undefined, intended: o.intended });
    if (r.ok && r.payload) {
      const why = checkVerifyIdentity(o.intended, r.payload.dockerReference, o.manifestDigest);
      if (why) return { ...r, ok: false, reason: why };
    }
    return r;
  });
  return { image: o.image, manifestDigest: o.manifestDigest, signatures, problems: found.problems, ok: signatures.some((s) => s.ok), identityChecked: !!o.intended };
}
