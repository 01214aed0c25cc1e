/**
 * Signing and policy on copy/sync: what the engine's hooks run.
 *
 *   beforeWrite  -> policy.json for the source image (refuse before anything is written); the source's simple
 *                   (GPG) signatures read, and a destination that cannot store them refused (as skopeo)
 *   afterManifest-> carry the source's `.sig` tag and referrers to the destination (unless
 *                   --remove-signatures), then sign the destination image (--sign-by-key); simple signatures
 *                   carried (registries.d lookaside, dir: files) and a new one added with --sign-by (gpg)
 *
 * The hooks take a small structural context so the engine's own context type fits it.
 */
import type { KeyObject } from 'node:crypto';
import { isDigest, type Digest } from '../../oci/digest.js';
import { isIndexType } from '../../oci/mediatypes.js';
import { TsimageError, UsageError } from '../../oci/errors.js';
import { type Io } from '../../oci/io.js';
import type { ImageDestination, ImageSource, ManifestBytes } from '../types.js';
import { enforcePolicy, type Policy, type PolicyDecision, type SimpleTarget } from '../policy.js';
import { parseManifest, type Descriptor, type Platform } from '../../oci/manifest.js';
import { isManifestType } from '../../oci/mediatypes.js';
import { hostPlatform, selectPlatform } from '../../oci/platform.js';
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
  /** The copy's options (which instances of a list are copied: what simple signatures and signedBy apply to). */
  options?: { all?: boolean | undefined; indexOnly?: boolean | undefined; platform?: Platform | undefined } | undefined;
  /** A copy from a list without --all: the image the engine took (it looks into nested indexes). */
  selected?: Digest | undefined;
  /** --all: every manifest below the list as the source has it (nested indexes and theirs too), children first. */
  instances?: readonly Descriptor[] | undefined;
  /** afterManifest of --all: the same manifests as written (new digests after a conversion). */
  destInstances?: readonly Descriptor[] | undefined;
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
  /** Add a simple (GPG) signature made with this key (skopeo's --sign-by FINGERPRINT). */
  signByGpg?: string | undefined;
  /** Passphrase file for signByGpg (first line; loopback pinentry). */
  gpgPassphraseFile?: string | undefined;
  /** `optional.creator` of new simple signatures (default "tscopy"). */
  creator?: string | undefined;
  /** Opens a reader on the destination name (docker: a source of the same repository), for merging and fallbacks. */
  openDestinationReader?: ((d: ImageDestination) => Promise<ImageSource | undefined>) | undefined;
  /** Notices for the user (not errors). */
  log?: ((msg: string) => void) | undefined;
}

export interface SigningCopyReport {
  policy?: PolicyDecision | undefined;
  carried?: CarryResult | undefined;
  signed?: SignResult | undefined;
  /** Simple signatures written at the destination, per manifest digest (carried + new). */
  simple?: { digest: Digest; instance: boolean; count: number; added: number }[] | undefined;
}

/** What skopeo says for destinations that cannot store simple signatures (containers/image SupportsSignatures). */
function noSignaturesReason(d: ImageDestination): string {
  switch (d.name.transport) {
    case 'oci':
    case 'oci-archive':
      return 'Pushing signatures for OCI images is not supported';
    case 'docker-archive':
      return 'Storing signatures for docker tar files is not supported';
    default:
      return `${d.name.transport}: destinations cannot store signatures`;
  }
}

/** Which manifests of a copy have simple signatures of their own: the image, or (lists) the list and the instances copied. */
interface SimplePlan {
  /** Targets at the source whose signatures are carried, with where they go at the destination. */
  carry: { src: SimpleTarget; destInstance: boolean }[];
  /** What signedBy checks (containers/image: each image copied, not the list). */
  policy: SimpleTarget[];
  /** The instance copied from a list without --all. */
  selected?: Digest | undefined;
}

function simplePlan(ctx: CopyHookContext): SimplePlan {
  const top = ctx.sourceManifest;
  const self: SimpleTarget = { digest: top.digest, instance: false };
  if (!isIndexType(top.mediaType)) return { carry: [{ src: self, destInstance: false }], policy: [self] };
  let children: Descriptor[] = [];
  try {
    const p = parseManifest(top.bytes, top.mediaType);
    if (p.kind === 'index') children = p.doc.manifests;
  } catch {
    return { carry: [{ src: self, destInstance: false }], policy: [self] };
  }
  const o = ctx.options ?? {};
  // the destination has the list itself (a sync finding it up to date): the list and every instance
  const all = o.all || ctx.destManifest?.digest === top.digest;
  if (o.indexOnly && !all) return { carry: [{ src: self, destInstance: false }], policy: [self] };
  if (all) {
    // every manifest below the list (the engine's walk: nested indexes and their images too); policy: the images
    const below = ctx.instances ?? children;
    const inst = below.map((c): SimpleTarget => ({ digest: c.digest, instance: true }));
    const images = below.filter((c) => !isIndexType(c.mediaType)).map((c): SimpleTarget => ({ digest: c.digest, instance: true }));
    return { carry: [{ src: self, destInstance: false }, ...inst.map((t) => ({ src: t, destInstance: true }))], policy: images.length ? images : [self] };
  }
  // the engine's choice (it looks into nested indexes), else the platform's direct child
  const selected = ctx.selected ?? selectPlatform(children.filter((m) => isManifestType(m.mediaType)), o.platform ?? hostPlatform())?.digest;
  if (!selected) return { carry: [], policy: [self] };
  const t: SimpleTarget = { digest: selected, instance: true };
  return { carry: [{ src: t, destInstance: false }], policy: [t], selected };
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

/**
 * Digests of every manifest below the list written (nested indexes included: the engine says which it wrote), or
 * of its direct children when the engine did not say (a sync finding the list up to date).
 */
function instancesOf(ctx: CopyHookContext, written: ManifestBytes): Digest[] {
  if (ctx.destInstances && written.digest === ctx.destManifest?.digest) return ctx.destInstances.map((d) => d.digest);
  return childDigests(written);
}

/**
 * registries.d `use-sigstore-attachments` where a docker image is read from or written to: true/false as set,
 * undefined when nothing sets it (and for other transports). skopeo carries cosign `.sig` tags only when it is true
 * at both ends; tscopy carries them unless it is false (earlier tscopy always carried them: see README).
 */
function attachmentsSetting(x: ImageSource | ImageDestination): Promise<boolean | undefined> {
  return x.sigstoreAttachments ? x.sigstoreAttachments() : Promise.resolve(undefined);
}

/**
 * Source and destination are one registry repository (a re-tag, or a copy onto itself): its `.sig` tags and
 * referrers are already where carrying would put them, so there is nothing to look up or copy.
 */
function sameRepository(ctx: CopyHookContext): boolean {
  const a = ctx.source.name;
  const b = ctx.destination.name;
  if (a.transport !== 'docker' || b.transport !== 'docker' || !a.dockerReference || !b.dockerReference) return false;
  try {
    const x = normalizedNamed(a.dockerReference);
    const y = normalizedNamed(b.dockerReference);
    return x.registry === y.registry && x.repository === y.repository;
  } catch {
    return false;
  }
}

/** The engine's hooks for one copy; `report` collects what they did. */
export function signingHooks(o: SigningCopyOptions): {
  cannotModify: (ctx: CopyHookContext, digest: Digest) => Promise<string | undefined>;
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
    if (o.removeSignatures || !ctx.destination.caps.acceptsSignatures || !ctx.source.manifestByRef || layoutOf(ctx.source) || sameRepository(ctx)) return undefined;
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
      const src = ctx.source;
      p = attachmentsSetting(src).then((use) => lookupAttachments(sourceRepo(src), ctx.sourceManifest.digest, ctx.io, use !== false));
      p.catch(() => undefined); // awaited (or retried) in after(); never an unhandled rejection
      lookups.set(key, p);
    }
    return p;
  };
  /** Per copy (keyed by its source): the simple-signature plan and the signatures read (shared by policy and carrying). */
  const simple = new WeakMap<ImageSource, { plan: SimplePlan; reads: Map<string, Promise<Buffer[]>> }>();
  const simpleState = (ctx: CopyHookContext) => {
    let st = simple.get(ctx.source);
    if (!st) {
      st = { plan: simplePlan(ctx), reads: new Map() };
      simple.set(ctx.source, st);
    }
    return st;
  };
  const readSimple = (ctx: CopyHookContext, t: SimpleTarget): Promise<Buffer[]> => {
    const st = simpleState(ctx);
    const key = `${t.instance ? 'i' : 't'}:${t.digest}`;
    let p = st.reads.get(key);
    if (!p) {
      p = ctx.source.simpleSignatures ? ctx.source.simpleSignatures(t.digest, { ...ctx.io, instance: t.instance }) : Promise.resolve([]);
      p.catch(() => undefined);
      st.reads.set(key, p);
    }
    return p;
  };
  /** The signatures to carry, per plan entry ([] with --remove-signatures). */
  const carried = async (ctx: CopyHookContext): Promise<{ src: SimpleTarget; destInstance: boolean; sigs: Buffer[] }[]> => {
    if (o.removeSignatures || !ctx.source.simpleSignatures) return [];
    const { plan } = simpleState(ctx);
    return Promise.all(plan.carry.map(async (c) => ({ ...c, sigs: await readSimple(ctx, c.src) })));
  };
  return {
    report,
    /**
     * containers/image's rule: a manifest with signatures is never modified ("Would invalidate signatures"):
     * skopeo then copies an image as it is, ignoring --format/--dest-compress-format, and refuses a list that
     * would have to change. Not with --remove-signatures.
     */
    async cannotModify(ctx, digest) {
      if (o.removeSignatures) return undefined;
      const why = 'Would invalidate signatures';
      if (ctx.source.simpleSignatures && (await readSimple(ctx, { digest, instance: digest !== ctx.sourceManifest.digest })).length) return why;
      // cosign signatures count as signatures where skopeo reads them: use-sigstore-attachments: true at the source
      if (ctx.source.manifestByRef && (await attachmentsSetting(ctx.source)) === true) {
        const top = digest === ctx.sourceManifest.digest ? lookupFor(ctx) : undefined;
        const sig = top ? (await top.catch(() => [undefined] as const))[0] : await sourceRepo(ctx.source).manifest(signatureTag(digest), ctx.io);
        if (sig) return why;
      }
      return undefined;
    },
    async beforeWrite(ctx) {
      if (o.signBy && !ctx.destination.caps.acceptsSignatures)
        throw new UsageError(`${ctx.destination.name}: this destination cannot store signatures (--sign-by-key needs a registry or an OCI layout)`);
      // the new signature is a .sig tag: refused (before anything is written) where registries.d says no attachments
      if (o.signBy && (await attachmentsSetting(ctx.destination)) === false)
        throw new UsageError(`${ctx.destination.name}: --sign-by-key writes a sigstore attachment, and use-sigstore-attachments is false for it in registries.d (writing sigstore attachments is disabled by configuration)`);
      const st = simpleState(ctx);
      if (o.signByGpg) {
        // what skopeo checks before copying: an identity to sign for, a destination that stores signatures
        signIdentityFor(ctx.destination);
        if (!ctx.destination.putSimpleSignatures) throw new UsageError(`Can not sign ${ctx.destination.name}: ${noSignaturesReason(ctx.destination)}`);
      }
      if (o.policy)
        report.policy = await enforcePolicy(o.policy, ctx.source, ctx.sourceManifest, ctx.io, { targets: st.plan.policy, read: (t) => readSimple(ctx, t) });
      const withSigs = (await carried(ctx)).filter((c) => c.sigs.length > 0);
      if (withSigs.length && !ctx.destination.putSimpleSignatures)
        throw new UsageError(
          `Can not copy signatures to ${ctx.destination.name}: ${noSignaturesReason(ctx.destination)} (the source has ${withSigs.reduce((n, c) => n + c.sigs.length, 0)} simple signature(s); use --remove-signatures to copy without them)`,
        );
      if (withSigs.length || o.signByGpg) await ctx.destination.checkSimpleSignatures?.(ctx.io);
      lookupFor(ctx);
    },
    async carryOnly(ctx) {
      await afterSimple(ctx, false);
      await after(ctx, false);
    },
    async afterManifest(ctx) {
      await afterSimple(ctx, true);
      await after(ctx, true);
    },
  };

  /** The identity new signatures are for: --sign-identity (a full reference), else the destination's reference. */
  function signIdentityFor(dst: ImageDestination): string {
    if (o.signIdentity) {
      const r = normalizedNamed(o.signIdentity);
      if (!r.tag && !r.digest) throw new UsageError(`Sign identity must be a fully specified reference ${o.signIdentity}`);
      return `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
    }
    const ref = dst.name.dockerReference;
    if (!ref) throw new UsageError(`Cannot determine canonical Docker reference for destination ${dst.name} (use --sign-identity)`);
    const r = normalizedNamed(ref);
    return `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : r.digest ? `@${r.digest}` : ':latest'}`;
  }

  /** Simple signatures: carried (unless --remove-signatures) and, with --sign-by, one more per manifest written. */
  async function afterSimple(ctx: CopyHookContext, sign: boolean): Promise<void> {
    const signBy = sign ? o.signByGpg : undefined;
    const written = ctx.destManifest ?? ctx.sourceManifest;
    const puts = new Map<string, { digest: Digest; instance: boolean; sigs: Buffer[]; added: number }>();
    const put = (digest: Digest, instance: boolean) => {
      const k = `${instance ? 'i' : 't'}:${digest}`;
      let e = puts.get(k);
      if (!e) puts.set(k, (e = { digest, instance, sigs: [], added: 0 }));
      return e;
    };
    const srcTop = ctx.sourceManifest.digest;
    const { plan } = simpleState(ctx);
    let lost = 0;
    for (const c of await carried(ctx)) {
      if (!c.sigs.length) continue;
      // the manifest each signature is about must be the one written there
      const same = c.destInstance ? written.digest === srcTop : c.src.instance ? written.digest === plan.selected : written.digest === srcTop;
      if (!same) {
        lost += c.sigs.length;
        continue;
      }
      put(c.destInstance ? c.src.digest : written.digest, c.destInstance).sigs.push(...c.sigs);
    }
    if (lost) o.log?.(`Simple signatures not copied: the manifest changed (${srcTop} -> ${written.digest}), so ${lost} signature(s) no longer apply`);
    if (signBy) {
      if (!ctx.destination.putSimpleSignatures) throw new UsageError(`Can not sign ${ctx.destination.name}: ${noSignaturesReason(ctx.destination)}`);
      const identity = signIdentityFor(ctx.destination);
      // skopeo --all signs every instance and the list
      const targets: { digest: Digest; instance: boolean }[] = [
        ...instancesOf(ctx, written).map((d) => ({ digest: d, instance: true })),
        { digest: written.digest, instance: false },
      ];
      const [{ gpgSign }, { makeSimplePayload }] = await Promise.all([import('./gpg.js'), import('./simple.js')]);
      for (const t of targets) {
        const payload = makeSimplePayload(identity, t.digest, { creator: o.creator ?? 'tscopy', timestamp: Math.floor(Date.now() / 1000) });
        const sig = await gpgSign(payload, signBy, { passphraseFile: o.gpgPassphraseFile, signal: ctx.io?.signal });
        const e = put(t.digest, t.instance);
        e.sigs.push(sig);
        e.added++;
      }
      o.log?.(`Signed ${written.digest} with GPG key ${signBy} (${identity})${targets.length > 1 ? ` and its ${targets.length - 1} instance(s)` : ''}`);
    }
    if (!puts.size) return;
    if (!ctx.destination.putSimpleSignatures) throw new UsageError(`Can not copy signatures to ${ctx.destination.name}: ${noSignaturesReason(ctx.destination)}`);
    report.simple = [];
    for (const e of puts.values()) {
      await ctx.destination.putSimpleSignatures(e.digest, e.sigs, { ...ctx.io, instance: e.instance });
      report.simple.push({ digest: e.digest, instance: e.instance, count: e.sigs.length, added: e.added });
    }
  }
  async function after(ctx: CopyHookContext, sign: boolean): Promise<void> {
    const signBy = sign ? o.signBy : undefined;
    const wantCarry = !o.removeSignatures && !sameRepository(ctx);
    if (!wantCarry && !signBy) return;
    if (!ctx.destination.caps.acceptsSignatures) {
      if (signBy) throw new UsageError(`${ctx.destination.name}: this destination cannot store signatures (--sign-by-key needs a registry or an OCI layout)`);
      // a notice only when there is something to lose
      if (ctx.source.manifestByRef || layoutOf(ctx.source)) {
        const repo = sourceRepo(ctx.source);
        const d = ctx.sourceManifest.digest;
        const useSig = (await attachmentsSetting(ctx.source)) !== false;
        const [sig, refs] = await Promise.all([useSig ? repo.manifest(signatureTag(d), ctx.io).catch(() => undefined) : undefined, listReferrers(repo, d, ctx.io).catch(() => [])]);
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
        const [srcUse, dstUse] = await Promise.all([attachmentsSetting(ctx.source), attachmentsSetting(ctx.destination)]);
        const srcRepo = sourceRepo(ctx.source);
        const top = () => lookupFor(ctx) ?? lookupAttachments(srcRepo, ctx.sourceManifest.digest, ctx.io, srcUse !== false);
        if (destDigest !== ctx.sourceManifest.digest && !srcChildren.includes(destDigest) && destDigest !== ctx.selected) {
          // (a notice only when there was something: a .sig tag or referrers)
          const [sig, refs] = await top().catch(() => [undefined, []] as AttachmentLookup);
          if (sig || refs.length) o.log?.(`Signatures not copied: the manifest changed (${ctx.sourceManifest.digest} -> ${destDigest}), so they no longer apply`);
        } else {
          // use-sigstore-attachments: false at the destination: no .sig tag written there (skopeo fails then when the
          // source said true, after the manifest: "writing sigstore attachments is disabled by configuration")
          let sigTag = srcUse !== false;
          if (sigTag && dstUse === false) {
            sigTag = false;
            const [sig] = await top().catch(() => [undefined, []] as AttachmentLookup);
            if (sig && srcUse === true) throw new TsimageError('writing signatures: writing sigstore attachments is disabled by configuration');
            if (sig) o.log?.(`Signatures not copied: ${signatureTag(ctx.sourceManifest.digest)} (use-sigstore-attachments is false for ${ctx.destination.name} in registries.d)`);
          }
          // the image's own signatures and referrers, and those of each instance of a copied list
          // (cosign sign --recursive signs every instance)
          const total: CarryResult = { sigTag: false, referrers: [] };
          for (const d of [destDigest, ...instancesOf(ctx, written)]) {
            const r = await carryAttachments(srcRepo, dst, d, { log: o.log, sigTag }, ctx.io, d === ctx.sourceManifest.digest ? lookupFor(ctx) : undefined);
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
