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
import type { Digest, Io } from '../../oci/index.js';
import type { ImageDestination, ImageSource, ManifestBytes } from '../types.js';
import { enforcePolicy, type Policy, type PolicyDecision } from '../policy.js';
import { carryAttachments, signImage, type CarryResult, type SignResult } from './attachments.js';
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
  if (!reader) throw new Error(`${dst.name}: no reader for the destination`);
  return transportRepo(reader, dst);
}

/** The engine's hooks for one copy; `report` collects what they did. */
export function signingHooks(o: SigningCopyOptions): {
  beforeWrite: (ctx: CopyHookContext) => Promise<void>;
  afterManifest: (ctx: CopyHookContext) => Promise<void>;
  report: SigningCopyReport;
} {
  const report: SigningCopyReport = {};
  return {
    report,
    async beforeWrite(ctx) {
      if (o.policy) report.policy = await enforcePolicy(o.policy, ctx.source, ctx.sourceManifest, ctx.io);
    },
    async afterManifest(ctx) {
      const wantCarry = !o.removeSignatures;
      if (!wantCarry && !o.signBy) return;
      if (!ctx.destination.caps.acceptsSignatures) {
        if (o.signBy) throw new Error(`${ctx.destination.name}: this destination cannot store signatures (--sign-by-key needs a registry or an OCI layout)`);
        o.log?.(`Signatures and referrers not copied: ${ctx.destination.name} cannot store them`);
        return;
      }
      const destDigest: Digest = ctx.destManifest?.digest ?? ctx.sourceManifest.digest;
      let reader: ImageSource | undefined;
      try {
        if (!layoutOf(ctx.destination)) reader = await o.openDestinationReader?.(ctx.destination);
        const dst = await destinationRepo(ctx.destination, reader);
        if (wantCarry) {
          if (destDigest !== ctx.sourceManifest.digest)
            o.log?.(`Signatures not copied: the manifest changed (${ctx.sourceManifest.digest} -> ${destDigest}), so they no longer apply`);
          else if (ctx.source.manifestByRef || layoutOf(ctx.source))
            report.carried = await carryAttachments(sourceRepo(ctx.source), dst, destDigest, { log: o.log }, ctx.io);
        }
        if (o.signBy) {
          const m = ctx.destManifest ?? ctx.sourceManifest;
          let identity = o.signIdentity;
          if (!identity) {
            const ref = ctx.destination.name.dockerReference;
            if (!ref) throw new Error(`${ctx.destination.name}: no docker reference to sign for: use --sign-identity`);
            const r = normalizedNamed(ref);
            identity = `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : r.digest ? `@${r.digest}` : ':latest'}`;
          }
          report.signed = await signImage(
            dst,
            {
              key: o.signBy,
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
    },
  };
}
