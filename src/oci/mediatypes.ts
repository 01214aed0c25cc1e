/** Media types of the OCI image spec and of Docker's image manifest v2 schema 2. */
export const MediaTypes = {
  // OCI
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  ociLayerNondist: 'application/vnd.oci.image.layer.nondistributable.v1.tar',
  ociLayerNondistGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  ociLayerNondistZstd: 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  ociLayoutHeader: 'application/vnd.oci.layout.header.v1+json',
  // Docker v2 schema 2
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerLayerForeignGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  // Docker v2 schema 1 (rejected)
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  // cosign
  cosignSimpleSigning: 'application/vnd.dev.cosign.simplesigning.v1+json',
} as const;

export type MediaType = string;

export const MANIFEST_TYPES: readonly string[] = [MediaTypes.ociManifest, MediaTypes.dockerManifest];
export const INDEX_TYPES: readonly string[] = [MediaTypes.ociIndex, MediaTypes.dockerManifestList];
/** Everything a registry serves on /manifests/ (the Accept list clients send). */
export const ALL_MANIFEST_TYPES: readonly string[] = [...MANIFEST_TYPES, ...INDEX_TYPES];
export const SCHEMA1_TYPES: readonly string[] = [MediaTypes.dockerSchema1, MediaTypes.dockerSchema1Signed, 'application/json'];

export function isManifestType(mt: string | undefined): boolean {
  return mt !== undefined && MANIFEST_TYPES.includes(mt);
}
export function isIndexType(mt: string | undefined): boolean {
  return mt !== undefined && INDEX_TYPES.includes(mt);
}
export function isSchema1Type(mt: string | undefined): boolean {
  return mt === MediaTypes.dockerSchema1 || mt === MediaTypes.dockerSchema1Signed;
}

export type Compression = 'none' | 'gzip' | 'zstd';

/** The compression a layer media type declares ('none' for plain tar and unknown artifact types). */
export function layerCompression(mt: string): Compression {
  if (mt.endsWith('+gzip') || mt === MediaTypes.dockerLayerGzip || mt === MediaTypes.dockerLayerForeignGzip) return 'gzip';
  if (mt.endsWith('+zstd')) return 'zstd';
  return 'none';
}

export function isLayerType(mt: string): boolean {
  return (
    mt.startsWith('application/vnd.oci.image.layer.') ||
    mt === MediaTypes.dockerLayerGzip ||
    mt === MediaTypes.dockerLayerForeignGzip
  );
}

/** The layer media type for a compression in a given manifest format. */
export function layerMediaType(format: 'oci' | 'docker', compression: Compression): string {
  if (format === 'docker') {
    if (compression !== 'gzip') throw new Error(`Docker schema 2 layers must be gzip-compressed, not ${compression}`);
    return MediaTypes.dockerLayerGzip;
  }
  return compression === 'gzip' ? MediaTypes.ociLayerGzip : compression === 'zstd' ? MediaTypes.ociLayerZstd : MediaTypes.ociLayer;
}

/** Detect a manifest's media type from its JSON when no Content-Type is known (as containers/image's GuessMIMEType). */
export function guessManifestType(doc: unknown): string | undefined {
  if (!doc || typeof doc !== 'object') return undefined;
  const o = doc as Record<string, unknown>;
  if (typeof o.mediaType === 'string') return o.mediaType;
  if (o.schemaVersion === 1) return MediaTypes.dockerSchema1;
  if (Array.isArray(o.manifests)) return MediaTypes.ociIndex;
  if (o.config && Array.isArray(o.layers)) {
    const cfg = o.config as Record<string, unknown>;
    return cfg.mediaType === MediaTypes.dockerConfig ? MediaTypes.dockerManifest : MediaTypes.ociManifest;
  }
  return undefined;
}
