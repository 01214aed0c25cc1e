/**
 * Picking the image for a platform out of an index that may hold other indexes (the OCI image spec allows an
 * index in an index: `manifests[].mediaType` may be an index type).
 *
 * Order (containerd's images.Manifest walk): the entries whose `platform` matches, exact variant first, then the
 * entries without a platform that are indexes, depth first, in document order. An index entry with a matching
 * platform is descended too. skopeo 1.9.3's `inspect` resolves nested indexes the same way (c/image recurses in
 * FromUnparsedImage); its `copy` does not (it fails with "Unexpectedly received a manifest list instead of a
 * manifest for a single image").
 */
import { OciError } from '../oci/errors.js';
import type { Digest } from '../oci/digest.js';
import type { Io } from '../oci/io.js';
import { parseManifest, type Descriptor, type ImageIndex, type Platform } from '../oci/manifest.js';
import { isIndexType, isManifestType } from '../oci/mediatypes.js';
import { formatPlatform, normalizePlatform, platformMatches } from '../oci/platform.js';
import type { ImageSource, ManifestBytes } from './types.js';

/** How deep indexes may nest (a guard against pathological sources: digests rule out cycles). */
export const MAX_INDEX_DEPTH = 16;

/** Parse an index's bytes; throws naming the manifest when they are not an index. */
export function parseIndex(m: ManifestBytes, where: string): ImageIndex {
  const p = parseManifest(m.bytes, m.mediaType);
  if (p.kind !== 'index') throw new OciError('MANIFEST_INVALID', `${where}: ${m.digest} is not an index`);
  return p.doc;
}

/** A child manifest of an index, its digest checked against the index's descriptor. */
export async function childManifest(src: ImageSource, d: Descriptor, io?: Io): Promise<ManifestBytes> {
  const m = await src.manifest(d.digest, io);
  if (m.digest !== d.digest) throw new OciError('DIGEST_INVALID', `${src.name}: child manifest digest ${m.digest}, index says ${d.digest}`);
  return m;
}

/** The entries of one index to try for `want`, in order (see the module comment). */
function candidates(doc: ImageIndex, want: Platform): Descriptor[] {
  const w = normalizePlatform(want);
  const usable = doc.manifests.filter((m) => isManifestType(m.mediaType) || isIndexType(m.mediaType));
  const matching = usable.filter((m) => m.platform && platformMatches(w, m.platform));
  const exact = matching.filter((m) => normalizePlatform(m.platform!).variant === w.variant);
  const rest = matching.filter((m) => !exact.includes(m));
  const unplatformedIndexes = usable.filter((m) => !m.platform && isIndexType(m.mediaType));
  return [...exact, ...rest, ...unplatformedIndexes];
}

/** Every platform an index offers, nested indexes included (for the "no image for platform" message). */
async function offered(src: ImageSource, doc: ImageIndex, io: Io | undefined, depth: number, out: string[]): Promise<void> {
  for (const m of doc.manifests) {
    if (isIndexType(m.mediaType) && depth < MAX_INDEX_DEPTH) {
      try {
        const child = await childManifest(src, m, io);
        await offered(src, parseIndex(child, `${src.name}`), io, depth + 1, out);
        continue;
      } catch {
        /* listed by digest below */
      }
    }
    out.push(m.platform ? formatPlatform(m.platform) : m.digest);
  }
}

/**
 * The image manifest for `want` under the index `top`, descending into nested indexes; undefined when none
 * matches. `path` (optional) receives the digests of the nested indexes walked through to it.
 */
export async function findInstance(src: ImageSource, top: ManifestBytes, want: Platform, io?: Io, path: Digest[] = []): Promise<ManifestBytes | undefined> {
  const walk = async (m: ManifestBytes, depth: number): Promise<ManifestBytes | undefined> => {
    if (depth > MAX_INDEX_DEPTH) throw new OciError('MANIFEST_INVALID', `${src.name}: indexes nested more than ${MAX_INDEX_DEPTH} deep (at ${m.digest})`);
    for (const d of candidates(parseIndex(m, `${src.name}`), want)) {
      const child = await childManifest(src, d, io);
      if (isManifestType(child.mediaType)) return child;
      if (!isIndexType(child.mediaType)) continue;
      path.push(child.digest);
      const hit = await walk(child, depth + 1);
      if (hit) return hit;
      path.pop();
    }
    return undefined;
  };
  return walk(top, 1);
}

/** findInstance, or an error listing what the index (and the indexes in it) offers. */
export async function chooseInstance(src: ImageSource, top: ManifestBytes, want: Platform, io?: Io, hint = '; use --all or --override-os/--override-arch'): Promise<ManifestBytes> {
  const hit = await findInstance(src, top, want, io);
  if (hit) return hit;
  const have: string[] = [];
  await offered(src, parseIndex(top, `${src.name}`), io, 1, have);
  throw new OciError('MANIFEST_UNKNOWN', `${src.name}: no image for platform ${formatPlatform(want)} in the manifest list (it has ${have.join(', ')})${hint}`);
}
