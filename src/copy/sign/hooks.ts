/**
 * Signing and policy on copy/sync: what the engine's hooks run.
 *
 *   beforeWrite  -> policy.json for the source image (refuse before anything is written)
 *   afterManifest-> carry the source's `.sig` tag and referrers to the destination (unless
 *                   --remove-signatures), then sign the destination image (--sign-by-key)
 *
 * The hooks take a small structural context so the engine's own context type fits it.
 */
import type { KeyObject } from 'node:crypto';
import { isDigest, type Digest } from '../../oci/digest.js';
import { isIndexType } from '../../oci/mediatypes.js';
import { UsageError } from '../../oci/errors.js';
import { type Io } from '../../oci/io.js';
import type { ImageDestination, ImageSource, ManifestBytes } from '../types.js';
import { enforcePolicy, type Policy, type PolicyDecision } from '../policy.js';
import { carryAttachments, listReferrers, lookupAttachments, signatureTag, signImage, type AttachmentLookup, type CarryResult, type SignResult } from './attachments.js';
import { layoutOf, layoutRepo, sourceRepo, transportRepo, type ArtifactRepo } from './repo.js';
import { normalizedNamed } from './verify.js';

/** What the hooks need to see of a copy. */
export interface CopyHookContext {
  source: ImageSource;
  /** The source's top manifest as read (its digest is what signatures/policy are about). */
  sourceManifest: ManifestBytes;
  destination: ImageDestination;
  /** The top manifest as written at the destination (afterManifest). */
  destManifest?: ManifestBytes | undefined;
  io?: Io | undefined;
}

export interface SigningCopyOptions {
  /** The policy to enforce (loadPolicy() / insecurePolicy()); undefined = no check (library callers only). */
  policy?: Policy | undefined;
  /** Do not carry the source's signatures/referrers (skopeo's --remove-signatures). */
  removeSignatures?: boolean | undefined;
  /** Sign the destination with this key (--sign-by-key). */
  signBy?: KeyObject | undefined;
  /** Identity to sign for (skopeo's --sign-identity); default the destination's docker reference. */
  signIdentity?: string | undefined;
  /** Also store the new signature as a referrer. */
  signReferrer?: boolean | undefined;
  /** Opens a reader on the destination name (docker: a source of the same repository), for merging and fallbacks. */
  openDestinationReader?: ((d: ImageDestination) => Promise<ImageSource | undefined>) | undefined;
  /** Notices for the user (not errors). */
  log?: ((msg: string) => void) | undefined;
}

export interface SigningCopyReport {
  policy?: PolicyDecision | undefined;
  carried?: CarryResult | undefined;
  signed?: SignResult | undefined;
}

/** The destination as a read/write ArtifactRepo. */
export async function destinationRepo(dst: ImageDestination, reader?: ImageSource): Promise<ArtifactRepo> {
  const l = layoutOf(dst);
  if (l) return layoutRepo(l, String(dst.name));
  if (!reader) throw new UsageError(`${dst.name}: no reader for the destination`);
  return transportRepo(reader, dst);
}

/** Digests of an index's instances (empty for an image manifest). */
function childDigests(m: ManifestBytes): Digest[] {
  if (!isIndexType(m.mediaType)) return [];
  try {
    const doc = JSON.parse(m.bytes.toString('utf8')) as { manifests?: { digest?: unknown }[] };
    return (doc.manifests ?? []).map((c) => c.digest).filter((d): d is Digest => isDigest(d));
  } catch {
    return [];
  }
}

/** The engine's hooks for one copy; `report` collects what they did. */
export function signingHooks(o: SigningCopyOptions): {
  beforeWrite: (ctx: CopyHookContext) => Promise<void>;
  afterManifest: (ctx: CopyHookContext) => Promise<void>;
  /**
   * Carrying only (no signing): for an image sync finds up to date, so signatures and referrers added at the
   * source since the last run still travel. ctx.destManifest = the manifest already there.
   */
  carryOnly: (ctx: CopyHookContext) => Promise<void>;
  report: SigningCopyReport;
} {
  const report: SigningCopyReport = {};
  /**
   * The source's signature/referrer lookups of a registry image, started in beforeWrite so they overlap the blob
   * copy, and shared by the copies of one process (a sync's tags with the same digest in one repository).
   */
  const lookups = new Map<string, Promise<AttachmentLookup>>();
  const lookupFor = (ctx: CopyHookContext): Promise<AttachmentLookup> | undefined => {
    if (o.removeSignatures || !ctx.destination.caps.acceptsSignatures || !ctx.source.manifestByRef || layoutOf(ctx.source)) return undefined;
    const ref = ctx.source.name.dockerReference;
    if (!ref) return undefined;
    let key: string;
    try {
      const r = normalizedNamed(ref);
      key = `${ctx.source.name.transport}:${r.registry}/${r.repository}@${ctx.sourceManifest.digest}`;
    } catch {
      return undefined;
    }
    let p = lookups.get(key);
    if (!p) {
      p = lookupAttachments(sourceRepo(ctx.source), ctx.sourceManifest.digest, ctx.io);
      p.catch(() => undefined); // awaited (or retried) in after(); never an unhandled rejection
      lookups.set(key, p);
    }
    return p;
  };
  return {
    report,
    async beforeWrite(ctx) {
      if (o.signBy && !ctx.destination.caps.acceptsSignatures)
        throw new UsageError(`${ctx.destination.name}: this destination cannot store signatures (--sign-by-key needs a registry or an OCI layout)`);
      if (o.policy) report.policy = await enforcePolicy(o.policy, ctx.source, ctx.sourceManifest, ctx.io);
      lookupFor(ctx);
    },
    async carryOnly(ctx) {
      await after(ctx, false);
    },
    async afterManifest(ctx) {
      await after(ctx, true);
    },
  };
  async function after(ctx: CopyHookContext, sign: boolean): Promise<void> {
    const signBy = sign ? o.signBy : undefined;
    const wantCarry = !o.removeSignatures;
    if (!wantCarry && !signBy) return;
    if (!ctx.destination.caps.acceptsSignatures) {
      if (signBy) throw new UsageError(`${ctx.destination.name}: this destination cannot store signatures (--sign-by-key needs a registry or an OCI layout)`);
      // a notice only when there is something to lose
      if (ctx.source.manifestByRef || layoutOf(ctx.source)) {
        const repo = sourceRepo(ctx.source);
        const d = ctx.sourceManifest.digest;
        const [sig, refs] = await Promise.all([repo.manifest(signatureTag(d), ctx.io).catch(() => undefined), listReferrers(repo, d, ctx.io).catch(() => [])]);
        if (sig || refs.length) o.log?.(`Signatures and referrers not copied: ${ctx.destination.name} cannot store them`);
      }
      return;
    }
    const destDigest: Digest = ctx.destManifest?.digest ?? ctx.sourceManifest.digest;
    let reader: ImageSource | undefined;
    try {
      if (!layoutOf(ctx.destination)) reader = await o.openDestinationReader?.(ctx.destination);
      const dst = await destinationRepo(ctx.destination, reader);
      if (wantCarry && (ctx.source.manifestByRef || layoutOf(ctx.source))) {
        const written = ctx.destManifest ?? ctx.sourceManifest;
        const srcChildren = childDigests(ctx.sourceManifest);
        if (destDigest !== ctx.sourceManifest.digest && !srcChildren.includes(destDigest))
          o.log?.(`Signatures not copied: the manifest changed (${ctx.sourceManifest.digest} -> ${destDigest}), so they no longer apply`);
        else {
          // the image's own signatures and referrers, and those of each instance of a copied list
          // (cosign sign --recursive signs every instance)
          const srcRepo = sourceRepo(ctx.source);
          const total: CarryResult = { sigTag: false, referrers: [] };
          for (const d of [destDigest, ...childDigests(written)]) {
            const r = await carryAttachments(srcRepo, dst, d, { log: o.log }, ctx.io, d === ctx.sourceManifest.digest ? lookupFor(ctx) : undefined);
            total.sigTag ||= r.sigTag;
            total.referrers.push(...r.referrers);
          }
          report.carried = total;
        }
      }
      if (signBy) {
        const m = ctx.destManifest ?? ctx.sourceManifest;
        let identity = o.signIdentity;
        if (!identity) {
          const ref = ctx.destination.name.dockerReference;
          if (!ref) throw new UsageError(`${ctx.destination.name}: no docker reference to sign for: use --sign-identity`);
          const r = normalizedNamed(ref);
          identity = `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : r.digest ? `@${r.digest}` : ':latest'}`;
        }
        report.signed = await signImage(
          dst,
          {
            key: signBy,
            manifestDigest: m.digest,
            manifestMediaType: m.mediaType,
            manifestSize: m.bytes.length,
            dockerReference: identity,
            referrer: o.signReferrer,
          },
          ctx.io,
        );
        o.log?.(`Signed ${m.digest} (${identity})`);
      }
    } finally {
      await reader?.close();
    }
  }
}
