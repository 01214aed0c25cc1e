/**
 * cosign storage of signatures and OCI 1.1 referrers over an ArtifactRepo.
 *
 * Signatures as cosign stores them: an OCI image manifest tagged `sha256-<hex>.sig` in the image's
 * repository, one layer per signature (media type application/vnd.dev.cosign.simplesigning.v1+json,
 * the payload bytes as the blob, the base64 signature in the `dev.cosignproject.cosign/signature`
 * annotation); a config in go-containerregistry's empty-image form listing the layers' diff_ids.
 * A new signature appends a layer (an identical one is not added twice).
 *
 * Referrers: a manifest whose `subject` is the image. On a registry with the referrers API the
 * registry indexes it; otherwise (distribution 2.8) the client maintains the tag schema fallback, an
 * index tagged `sha256-<hex>` listing the referrers (distribution-spec 1.1 "Referrers Tag Schema").
 */
import { Readable } from 'node:stream';
import type { KeyObject } from 'node:crypto';
import { digestOf, isDigest, verifying, type Digest } from '../../oci/digest.js';
import { EMPTY_DESCRIPTOR, type Descriptor } from '../../oci/manifest.js';
import { MediaTypes } from '../../oci/mediatypes.js';
import { TsimageError } from '../../oci/errors.js';
import { type Io } from '../../oci/io.js';
import type { ManifestBytes } from '../types.js';
import { COSIGN_SIG_ARTIFACT_TYPE, makePayload, SIGNATURE_ANNOTATION, signPayload, SIMPLE_SIGNING_MEDIA_TYPE } from './payload.js';
import type { SignatureCandidate } from './verify.js';
import { manifestBytes, readBlobBytes, referrerDescriptor, subjectOf, type ArtifactRepo } from './repo.js';

/** cosign's signature tag for a manifest digest: `sha256-<hex>.sig`. */
export function signatureTag(d: Digest): string {
  return `${d.replace(':', '-')}.sig`;
}

/**
 * Tags that hold attachments of another manifest rather than images of their own: cosign's
 * `sha256-<hex>.sig` / `.att` / `.sbom` and the referrers fallback `sha256-<hex>`. sync carries them with
 * their image (and must neither copy them as images nor prune them).
 */
export function isAttachmentTag(tag: string): boolean {
  return /^sha256-[0-9a-f]{64}(\.(sig|att|sbom))?$/.test(tag) || /^sha512-[0-9a-f]{121,128}(\.(sig|att|sbom))?$/.test(tag);
}

/** The referrers tag schema fallback tag: `sha256-<hex>` (at most 128 characters). */
export function referrersFallbackTag(d: Digest): string {
  return d.replace(':', '-').slice(0, 128);
}

interface ManifestDoc {
  schemaVersion?: number;
  mediaType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
  artifactType?: string;
}

function parseDoc(m: ManifestBytes, what: string): ManifestDoc {
  try {
    const d = JSON.parse(m.bytes.toString('utf8')) as ManifestDoc;
    if (!d || typeof d !== 'object') throw new Error('not an object');
    return d;
  } catch (e) {
    throw new TsimageError(`${what} ${m.digest}: not a JSON manifest (${(e as Error).message})`);
  }
}

/** go-containerregistry's config for an empty image with these layers (what cosign's .sig images carry). */
export function cosignConfig(layers: readonly Descriptor[]): Buffer {
  const diffIds = layers.map((l) => JSON.stringify(l.digest)).join(',');
  const history = layers.map(() => '{"created":"0001-01-01T00:00:00Z"}').join(',');
  return Buffer.from(
    `{"architecture":"","created":"0001-01-01T00:00:00Z","history":[${history}],"os":"","rootfs":{"type":"layers","diff_ids":[${diffIds}]},"config":{}}`,
  );
}

async function putBytesBlob(repo: ArtifactRepo, d: Descriptor, bytes: Buffer, io?: Io): Promise<void> {
  if (await repo.hasBlob(d, io)) return;
  await repo.putBlob({ mediaType: d.mediaType, digest: d.digest, size: d.size }, Readable.from([bytes]), io);
}

export interface SignOptions {
  key: KeyObject;
  /** Digest of the manifest being signed. */
  manifestDigest: Digest;
  /** Its media type and size (for the referrer's subject). */
  manifestMediaType: string;
  manifestSize: number;
  /** The signed identity (critical.identity.docker-reference). */
  dockerReference: string;
  /** `optional` annotations of the payload (cosign -a k=v). */
  optional?: Record<string, string> | undefined;
  /** Store in the `.sig` tag (default true). */
  sigTag?: boolean;
  /** Also store as an OCI 1.1 referrer (subject = the image). */
  referrer?: boolean;
}

export interface SignResult {
  payloadDigest: Digest;
  signature: string;
  /** The .sig manifest written (undefined when not stored there or unchanged). */
  sigManifest?: Digest | undefined;
  /** True when an identical signature layer was already in the .sig manifest. */
  alreadyPresent?: boolean;
  referrer?: Digest | undefined;
}

/** Sign an image and store the signature the way cosign does (and optionally as a referrer). */
export async function signImage(repo: ArtifactRepo, o: SignOptions, io?: Io): Promise<SignResult> {
  const payload = makePayload(o.dockerReference, o.manifestDigest, o.optional);
  const signature = signPayload(o.key, payload);
  const layer: Descriptor = {
    mediaType: SIMPLE_SIGNING_MEDIA_TYPE,
    size: payload.length,
    digest: digestOf(payload),
    annotations: { [SIGNATURE_ANNOTATION]: signature },
  };
  const res: SignResult = { payloadDigest: layer.digest, signature };
  await putBytesBlob(repo, layer, payload, io);
  if (o.sigTag !== false) {
    const tag = signatureTag(o.manifestDigest);
    const existing = await repo.manifest(tag, io);
    let layers: Descriptor[] = [];
    if (existing) {
      const doc = parseDoc(existing, `existing signature manifest ${tag}`);
      layers = Array.isArray(doc.layers) ? doc.layers : [];
    }
    const dup = layers.some((l) => l.digest === layer.digest && l.annotations?.[SIGNATURE_ANNOTATION] === signature);
    if (dup) res.alreadyPresent = true;
    else {
      layers = [...layers, layer];
      const config = cosignConfig(layers);
      const configDesc: Descriptor = { mediaType: MediaTypes.ociConfig, size: config.length, digest: digestOf(config) };
      await putBytesBlob(repo, configDesc, config, io);
      const m = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: configDesc, layers }));
      const mb: ManifestBytes = { bytes: m, mediaType: MediaTypes.ociManifest, digest: digestOf(m) };
      await repo.putManifest(mb, tag, io);
      res.sigManifest = mb.digest;
    }
  }
  if (o.referrer) {
    await putBytesBlob(repo, EMPTY_DESCRIPTOR, Buffer.from('{}'), io);
    const doc = {
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      artifactType: COSIGN_SIG_ARTIFACT_TYPE,
      config: { mediaType: EMPTY_DESCRIPTOR.mediaType, digest: EMPTY_DESCRIPTOR.digest, size: EMPTY_DESCRIPTOR.size },
      layers: [layer],
      subject: { mediaType: o.manifestMediaType, digest: o.manifestDigest, size: o.manifestSize },
    };
    const bytes = Buffer.from(JSON.stringify(doc));
    const mb: ManifestBytes = { bytes, mediaType: MediaTypes.ociManifest, digest: digestOf(bytes) };
    await pushReferrer(repo, mb, o.manifestDigest, io);
    res.referrer = mb.digest;
  }
  return res;
}

/**
 * Store a manifest that has a subject. When the repository does not list it among the subject's
 * referrers afterwards (no referrers API), maintain the `sha256-<hex>` tag fallback index.
 */
export async function pushReferrer(repo: ArtifactRepo, m: ManifestBytes, subject: Digest, io?: Io): Promise<'api' | 'fallback'> {
  await repo.putManifest(m, undefined, io);
  const listed = await repo.referrers(subject, io);
  if (listed.some((d) => d.digest === m.digest)) return 'api';
  const tag = referrersFallbackTag(subject);
  const existing = await repo.manifest(tag, io);
  let manifests: Descriptor[] = [];
  if (existing) {
    const doc = parseDoc(existing, `referrers fallback index ${tag}`);
    manifests = Array.isArray(doc.manifests) ? doc.manifests : [];
  }
  if (!manifests.some((d) => d.digest === m.digest)) {
    const rd = referrerDescriptor(m);
    if (!rd) throw new TsimageError(`referrer ${m.digest} is not a JSON manifest`);
    manifests = [...manifests, rd];
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests }));
    await repo.putManifest({ bytes, mediaType: MediaTypes.ociIndex, digest: digestOf(bytes) }, tag, io);
  }
  return 'fallback';
}

/**
 * Referrers of a digest: the repository's answer (API or the client's fallback) merged with the
 * fallback index when it exists (a registry with the API may still hold an older fallback tag).
 */
export async function listReferrers(repo: ArtifactRepo, d: Digest, io?: Io & { artifactType?: string | undefined }): Promise<Descriptor[]> {
  // the repository's answer: the referrers API, or (registry client, when the registry has no API) the
  // `sha256-<hex>` tag fallback index; layouts scan index.json. Deduplicated by digest.
  const out = new Map<string, Descriptor>();
  for (const r of await repo.referrers(d, io)) if (r && isDigest(r.digest) && !out.has(r.digest)) out.set(r.digest, r);
  return [...out.values()];
}

/** Where a set of signature candidates came from. */
export interface FoundSignatures {
  candidates: SignatureCandidate[];
  /** Problems reading storage (a .sig manifest that is not JSON, a blob that does not match its digest). */
  problems: string[];
}

function candidatesOf(doc: ManifestDoc, where: string): { layer: Descriptor; where: string }[] {
  const out: { layer: Descriptor; where: string }[] = [];
  (Array.isArray(doc.layers) ? doc.layers : []).forEach((l, i) => {
    if (l && l.mediaType === SIMPLE_SIGNING_MEDIA_TYPE) out.push({ layer: l, where: `${where}, layer ${i + 1}` });
  });
  return out;
}

/**
 * All cosign signatures of a manifest digest: layers of the `.sig` manifest and of referrers
 * whose layers are simple-signing payloads. Payload bytes are read verified against their digest.
 */
export async function findSignatures(repo: ArtifactRepo, d: Digest, io?: Io, opts: { referrers?: boolean } = {}): Promise<FoundSignatures> {
  const found: FoundSignatures = { candidates: [], problems: [] };
  const layers: { layer: Descriptor; where: string }[] = [];
  const tag = signatureTag(d);
  const listing = opts.referrers !== false ? listReferrers(repo, d, io).then((r) => ({ r }), (e: unknown) => ({ e })) : undefined;
  const sig = await repo.manifest(tag, io);
  if (sig) {
    try {
      layers.push(...candidatesOf(parseDoc(sig, `signature manifest ${tag}`), `tag ${tag}`));
    } catch (e) {
      found.problems.push((e as Error).message);
    }
  }
  if (listing) {
    let refs: Descriptor[] = [];
    const l = await listing;
    if ('r' in l) refs = l.r;
    else found.problems.push(`listing referrers of ${d}: ${(l.e as Error).message}`);
    for (const r of refs) {
      if (r.artifactType !== COSIGN_SIG_ARTIFACT_TYPE && r.artifactType !== SIMPLE_SIGNING_MEDIA_TYPE) continue;
      try {
        const m = await repo.manifest(r.digest, io);
        if (!m) {
          found.problems.push(`referrer ${r.digest} is listed but its manifest is missing`);
          continue;
        }
        if (m.digest !== r.digest) throw new TsimageError(`referrer manifest digest ${m.digest} is not ${r.digest}`);
        const doc = parseDoc(m, 'referrer');
        if (doc.subject?.digest !== d) {
          found.problems.push(`referrer ${r.digest} has subject ${doc.subject?.digest ?? 'none'}, not ${d}`);
          continue;
        }
        layers.push(...candidatesOf(doc, `referrer ${r.digest}`));
      } catch (e) {
        found.problems.push((e as Error).message);
      }
    }
  }
  found.candidates = await Promise.all(
    layers.map(async ({ layer, where }): Promise<SignatureCandidate> => {
      try {
        const payload = await readBlobBytes(repo, layer, io, 1024 * 1024);
        return { payload, signature: layer.annotations?.[SIGNATURE_ANNOTATION], where };
      } catch (e) {
        return { payload: Buffer.alloc(0), signature: layer.annotations?.[SIGNATURE_ANNOTATION], where, problem: `payload blob unreadable: ${(e as Error).message}` };
      }
    }),
  );
  return found;
}

export interface AttachOptions {
  artifactType: string;
  /** The file's media type (default application/octet-stream... as oras: the artifact type). */
  fileMediaType?: string | undefined;
  /** File name for org.opencontainers.image.title (oras does this). */
  title?: string | undefined;
  annotations?: Record<string, string> | undefined;
  subject: Descriptor;
}

/** Attach a file as an OCI 1.1 artifact manifest (config = empty descriptor, one layer, subject). */
export async function attachArtifact(repo: ArtifactRepo, file: Buffer | { path: string; size: number; digest: Digest; open: () => Readable }, o: AttachOptions, io?: Io): Promise<{ manifest: ManifestBytes; stored: 'api' | 'fallback' }> {
  const layer: Descriptor = Buffer.isBuffer(file)
    ? { mediaType: o.fileMediaType ?? 'application/octet-stream', digest: digestOf(file), size: file.length }
    : { mediaType: o.fileMediaType ?? 'application/octet-stream', digest: file.digest, size: file.size };
  if (o.title) layer.annotations = { 'org.opencontainers.image.title': o.title };
  if (!(await repo.hasBlob(layer, io))) await repo.putBlob(layer, Buffer.isBuffer(file) ? Readable.from([file]) : file.open(), io);
  await putBytesBlob(repo, EMPTY_DESCRIPTOR, Buffer.from('{}'), io);
  const doc: ManifestDoc & { schemaVersion: 2 } = {
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    artifactType: o.artifactType,
    config: { mediaType: EMPTY_DESCRIPTOR.mediaType, digest: EMPTY_DESCRIPTOR.digest, size: EMPTY_DESCRIPTOR.size },
    layers: [layer],
    subject: { mediaType: o.subject.mediaType, digest: o.subject.digest, size: o.subject.size },
  };
  if (o.annotations && Object.keys(o.annotations).length) doc.annotations = o.annotations;
  const mb = manifestBytes(Buffer.from(JSON.stringify(doc)), MediaTypes.ociManifest);
  const stored = await pushReferrer(repo, mb, o.subject.digest, io);
  return { manifest: mb, stored };
}

export interface CarryOptions {
  /** Follow referrers of referrers (signatures of an SBOM) up to this depth (default 2). */
  depth?: number;
  /** Notices ("copied signature tag ...") for the user. */
  log?: ((msg: string) => void) | undefined;
  /**
   * Carry cosign `.sig` tags (default true). false (registries.d use-sigstore-attachments: false): only referrers
   * travel; no `.sig` tag is read or written.
   */
  sigTag?: boolean | undefined;
}

export interface CarryResult {
  sigTag: boolean;
  referrers: Digest[];
}

async function copyManifestTree(src: ArtifactRepo, dst: ArtifactRepo, m: ManifestBytes, io?: Io): Promise<void> {
  const doc = parseDoc(m, 'manifest');
  const blobs: Descriptor[] = [];
  if (doc.config && isDigest(doc.config.digest)) blobs.push(doc.config);
  for (const l of Array.isArray(doc.layers) ? doc.layers : []) if (l && isDigest(l.digest)) blobs.push(l);
  // small blobs (payloads, configs, SBOMs): in parallel; foreign layers are not copied (as containers/image)
  await Promise.all(
    blobs
      .filter((b) => !b.urls?.length)
      .map(async (b) => {
        if (await dst.hasBlob(b, io)) return;
        const s = await src.blob(b, io);
        await dst.putBlob(b, s.pipe(verifying({ digest: b.digest, size: b.size, what: `blob ${b.digest}` })), io);
      }),
  );
  for (const c of Array.isArray(doc.manifests) ? doc.manifests : []) {
    const child = await src.manifest(c.digest, io);
    if (!child) throw new TsimageError(`${src.label}: manifest ${c.digest} listed in ${m.digest} is missing`);
    await copyManifestTree(src, dst, child, io);
    await dst.putManifest(child, undefined, io);
  }
}

/**
 * Carry an image's `.sig` manifest and its referrers (with their blobs) from src to dst, bytes
 * verbatim. An existing `.sig` manifest at the destination is merged with the source's layers
 * (as skopeo/cosign do) when it differs.
 */
/** The source-side reads of a carry: the `.sig` manifest of a digest and its referrers. */
export type AttachmentLookup = [ManifestBytes | undefined, Descriptor[]];

export function lookupAttachments(src: ArtifactRepo, d: Digest, io?: Io, sigTag = true): Promise<AttachmentLookup> {
  return Promise.all([sigTag ? src.manifest(signatureTag(d), io) : undefined, listReferrers(src, d, io)]);
}

/**
 * `pre`: the source's lookups started earlier (e.g. while the blobs were copied, or shared by the images of a sync
 * with the same digest); when it failed, the lookups run again here (and their error is the one reported).
 */
export async function carryAttachments(src: ArtifactRepo, dst: ArtifactRepo, d: Digest, o: CarryOptions = {}, io?: Io, pre?: Promise<AttachmentLookup>): Promise<CarryResult> {
  const res: CarryResult = { sigTag: false, referrers: [] };
  const tag = signatureTag(d);
  // the source's .sig tag and referrers in parallel; the destination is read only when there is something to carry
  const sigTag = o.sigTag !== false;
  const [sig, refs] = (pre ? await pre.catch(() => undefined) : undefined) ?? (await lookupAttachments(src, d, io, sigTag));
  if (sig && sigTag) {
    if (sig.digest !== digestOf(sig.bytes)) throw new TsimageError(`${src.label}: ${tag} does not match its digest`);
    const there = await dst.manifest(tag, io).catch(() => undefined);
    if (there && there.digest !== sig.digest) {
      // merge: the destination's layers, then the source's not already there
      const a = parseDoc(there, `destination ${tag}`);
      const b = parseDoc(sig, `source ${tag}`);
      await copyManifestTree(src, dst, sig, io);
      const layers = [...(a.layers ?? [])];
      for (const l of b.layers ?? []) if (!layers.some((x) => x.digest === l.digest && x.annotations?.[SIGNATURE_ANNOTATION] === l.annotations?.[SIGNATURE_ANNOTATION])) layers.push(l);
      const config = cosignConfig(layers);
      const configDesc: Descriptor = { mediaType: MediaTypes.ociConfig, size: config.length, digest: digestOf(config) };
      await putBytesBlob(dst, configDesc, config, io);
      const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: configDesc, layers }));
      await dst.putManifest({ bytes, mediaType: MediaTypes.ociManifest, digest: digestOf(bytes) }, tag, io);
      o.log?.(`Merged signatures into ${tag} at the destination`);
    } else if (!there) {
      await copyManifestTree(src, dst, sig, io);
      await dst.putManifest(sig, tag, io);
      o.log?.(`Copied signatures ${tag}`);
    }
    res.sigTag = true;
  }
  await carryReferrers(src, dst, d, o.depth ?? 2, res, o, io, refs);
  return res;
}

async function carryReferrers(
  src: ArtifactRepo,
  dst: ArtifactRepo,
  d: Digest,
  depth: number,
  res: CarryResult,
  o: CarryOptions,
  io?: Io,
  known?: Descriptor[],
): Promise<void> {
  if (depth <= 0) return;
  const refs = known ?? (await listReferrers(src, d, io));
  if (!refs.length) return;
  const already = new Set((await listReferrers(dst, d, io).catch(() => [] as Descriptor[])).map((r) => r.digest));
  for (const r of refs) {
    if (res.referrers.includes(r.digest)) continue;
    const m = await src.manifest(r.digest, io);
    if (!m) throw new TsimageError(`${src.label}: referrer ${r.digest} of ${d} is listed but missing`);
    if (m.digest !== r.digest || digestOf(m.bytes) !== r.digest) throw new TsimageError(`${src.label}: referrer ${r.digest} does not match its digest`);
    if (subjectOf(m.bytes) !== d) throw new TsimageError(`${src.label}: referrer ${r.digest} does not have subject ${d}`);
    if (!already.has(r.digest)) {
      await copyManifestTree(src, dst, m, io);
      await pushReferrer(dst, m, d, io);
      o.log?.(`Copied referrer ${r.digest}${r.artifactType ? ` (${r.artifactType})` : ''}`);
    }
    res.referrers.push(r.digest);
    // signatures of the referrer (a signed SBOM) travel too
    const sub = o.sigTag === false ? undefined : await src.manifest(signatureTag(r.digest), io);
    if (sub && !(await dst.manifest(signatureTag(r.digest), io).catch(() => undefined))) {
      await copyManifestTree(src, dst, sub, io);
      await dst.putManifest(sub, signatureTag(r.digest), io);
    }
    await carryReferrers(src, dst, r.digest, depth - 1, res, o, io);
  }
}
