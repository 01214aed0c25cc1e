/**
 * The small repository view that signing, verification, attachments and carrying need:
 * manifests by tag or digest, blobs, putting both, and the referrers of a digest.
 *
 * Two implementations: over an OCI layout (OciLayout; referrers are the index.json entries
 * whose manifest has that `subject`), and over a transport's ImageSource/ImageDestination
 * (the registry client's manifestByRef/referrers, the destination's putBlob/putManifest).
 */
import type { Readable } from 'node:stream';
import { digestOf, verifying, type Digest } from '../../oci/digest.js';
import { isIndexType, isManifestType, MediaTypes, guessManifestType } from '../../oci/mediatypes.js';
import { readAll, MAX_MANIFEST_SIZE, type Io } from '../../oci/io.js';
import { type Descriptor } from '../../oci/manifest.js';
import { OciLayout } from '../../oci/store.js';
import { UsageError } from '../../oci/errors.js';
import type { ImageDestination, ImageSource, ManifestBytes } from '../types.js';

export interface ArtifactRepo {
  /** For messages (`oci:/path`, `docker://host/repo`). */
  readonly label: string;
  /** A manifest by tag or digest; undefined when there is none. Bytes verbatim. */
  manifest(ref: string, io?: Io): Promise<ManifestBytes | undefined>;
  /** A blob's bytes as a stream (callers verify). */
  blob(d: Descriptor, io?: Io): Promise<Readable>;
  /** Whether writing is possible (a destination was opened). */
  readonly writable: boolean;
  /** Whether the blob is there already (cheap). */
  hasBlob(d: Descriptor, io?: Io): Promise<boolean>;
  putBlob(d: Descriptor, body: Readable | AsyncIterable<Uint8Array>, io?: Io): Promise<void>;
  /** Store a manifest verbatim; `tag` also points the tag at it. */
  putManifest(m: ManifestBytes, tag?: string, io?: Io): Promise<void>;
  /** Referrers of a manifest digest (referrers API, or the `sha256-<hex>` tag fallback). */
  referrers(d: Digest, io?: Io & { artifactType?: string | undefined }): Promise<Descriptor[]>;
}

/** Read a small blob fully, verifying digest and size. */
export async function readBlobBytes(repo: ArtifactRepo, d: Descriptor, io?: Io, limit = MAX_MANIFEST_SIZE): Promise<Buffer> {
  if (d.size > limit) throw new UsageError(`${repo.label}: blob ${d.digest} is ${d.size} bytes, more than the ${limit} allowed here`);
  const s = await repo.blob(d, io);
  return readAll(s.pipe(verifying({ digest: d.digest, size: d.size, what: `blob ${d.digest}` })), limit, `blob ${d.digest}`);
}

/** The media type of manifest bytes (from the JSON, as registries and containers/image guess it). */
export function manifestBytes(bytes: Buffer, mediaType?: string): ManifestBytes {
  let mt = mediaType;
  if (!mt) {
    try {
      mt = guessManifestType(JSON.parse(bytes.toString('utf8')));
    } catch {
      /* not JSON: left undefined */
    }
  }
  return { bytes, digest: digestOf(bytes), mediaType: mt ?? MediaTypes.ociManifest };
}

/** The referrer descriptor of a manifest (image-spec: artifactType, else config.mediaType; annotations). */
export function referrerDescriptor(m: ManifestBytes): Descriptor | undefined {
  let doc: { artifactType?: unknown; config?: { mediaType?: unknown }; annotations?: unknown; subject?: unknown };
  try {
    doc = JSON.parse(m.bytes.toString('utf8')) as typeof doc;
  } catch {
    return undefined;
  }
  const d: Descriptor = { mediaType: m.mediaType, digest: m.digest, size: m.bytes.length };
  const at = typeof doc.artifactType === 'string' ? doc.artifactType : isManifestType(m.mediaType) && typeof doc.config?.mediaType === 'string' ? doc.config.mediaType : undefined;
  if (at) d.artifactType = at;
  if (doc.annotations && typeof doc.annotations === 'object' && !Array.isArray(doc.annotations)) d.annotations = { ...(doc.annotations as Record<string, string>) };
  return d;
}

/** The subject digest of manifest bytes, if any. */
export function subjectOf(bytes: Buffer): Digest | undefined {
  try {
    const doc = JSON.parse(bytes.toString('utf8')) as { subject?: { digest?: unknown } };
    return typeof doc.subject?.digest === 'string' ? (doc.subject.digest as Digest) : undefined;
  } catch {
    return undefined;
  }
}

/** An OCI layout as an ArtifactRepo. Tags are index.json names; referrers are listed entries with a matching subject. */
export function layoutRepo(layout: OciLayout, label = `oci:${layout.dir}`): ArtifactRepo {
  return {
    label,
    writable: true,
    async manifest(ref) {
      const desc = await layout.find(ref);
      if (!desc) return undefined;
      const bytes = await layout.readBytes(desc.digest);
      return { bytes, digest: desc.digest, mediaType: desc.mediaType };
    },
    blob: (d) => layout.open(d.digest),
    hasBlob: async (d) => (await layout.stat(d.digest)) !== undefined,
    async putBlob(d, body) {
      await layout.ingest({ digest: d.digest, size: d.size, mediaType: d.mediaType }, body);
    },
    async putManifest(m, tag) {
      const desc = await layout.putBytes(m.mediaType, m.bytes);
      const entry: Descriptor = { mediaType: m.mediaType, digest: desc.digest, size: desc.size };
      const rd = referrerDescriptor(m);
      if (rd?.artifactType && subjectOf(m.bytes)) entry.artifactType = rd.artifactType;
      if (tag) await layout.tag(tag, entry);
      else await layout.addManifest(entry);
    },
    async referrers(d, io) {
      const index = await layout.readIndex();
      const out: Descriptor[] = [];
      const seen = new Set<string>();
      for (const e of index.manifests) {
        if (seen.has(e.digest) || !(isManifestType(e.mediaType) || isIndexType(e.mediaType)) || e.size > MAX_MANIFEST_SIZE) continue;
        seen.add(e.digest);
        const bytes = await layout.readBytes(e.digest);
        if (subjectOf(bytes) !== d) continue;
        const rd = referrerDescriptor({ bytes, digest: e.digest, mediaType: e.mediaType });
        if (!rd) continue;
        if (io?.artifactType && rd.artifactType !== io.artifactType) continue;
        out.push(rd);
      }
      return out;
    },
  };
}

/**
 * A transport image as an ArtifactRepo: reads through the source (manifestByRef, referrers),
 * writes through the destination when one is given.
 */
export function transportRepo(src: ImageSource, dst?: ImageDestination): ArtifactRepo {
  const label = String(src.name);
  const noWrite = (): never => {
    throw new UsageError(`${label}: opened read-only`);
  };
  return {
    label,
    writable: !!dst,
    async manifest(ref, io) {
      if (!src.manifestByRef) throw new UsageError(`${label}: this transport cannot read manifests by tag or digest (signatures and referrers need it)`);
      return src.manifestByRef(ref, io);
    },
    blob: (d, io) => src.blob(d, io),
    async hasBlob(d, io) {
      if (!dst) return false;
      const r = await dst.tryReuse(d, io);
      return r.kind !== 'absent';
    },
    async putBlob(d, body, io) {
      if (!dst) noWrite();
      await dst!.putBlob(d, body, io);
    },
    async putManifest(m, tag, io) {
      if (!dst) noWrite();
      await dst!.putManifest(m, tag, io);
    },
    async referrers(d, io) {
      if (!src.referrers) return [];
      return src.referrers(d, io);
    },
  };
}

/** The OciLayout behind a transport's source/destination (the oci: transport exposes `.layout`). */
export function layoutOf(x: unknown): OciLayout | undefined {
  const l = (x as { layout?: unknown } | undefined)?.layout;
  return l instanceof OciLayout ? l : undefined;
}

/** A source as an ArtifactRepo: a layout directly (referrers by subject), else the transport. */
export function sourceRepo(src: ImageSource): ArtifactRepo {
  const l = layoutOf(src);
  return l ? layoutRepo(l, String(src.name)) : transportRepo(src);
}
