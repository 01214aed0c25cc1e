/**
 * Manifest and config conversion (OCI <-> Docker schema 2) and manifest re-serialisation after layer changes,
 * producing the bytes containers/image produces: Go struct field order, Go's JSON escaping, omitempty.
 * Only used when something changes; a manifest that is only moved is never re-serialised.
 */
import { layerCompression, MediaTypes, type Compression, type MediaType } from '../oci/mediatypes.js';
import { UsageError } from '../oci/errors.js';
import { type Descriptor, type ImageIndex, type ImageManifest, type Platform } from '../oci/manifest.js';

export type ManifestFormat = 'oci' | 'docker';

export const DOCKER_LAYER_UNCOMPRESSED = 'application/vnd.docker.image.rootfs.diff.tar';

/** JSON as Go's encoding/json writes it (<, >, & and U+2028/9 escaped). */
export function goJson(v: unknown, indent?: number): string {
  return JSON.stringify(v, null, indent)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

function sortedMap<T>(m: Record<string, T> | undefined): Record<string, T> | undefined {
  if (!m || Object.keys(m).length === 0) return undefined;
  return Object.fromEntries(Object.keys(m).sort().map((k) => [k, m[k]!]));
}

function platformJson(p: Platform | undefined): unknown {
  if (!p) return undefined;
  return {
    architecture: p.architecture,
    os: p.os,
    'os.version': p['os.version'] || undefined,
    'os.features': p['os.features']?.length ? p['os.features'] : undefined,
    variant: p.variant || undefined,
    features: p.features?.length ? p.features : undefined,
  };
}

/** image-spec's Descriptor field order. */
export function ociDescriptor(d: Descriptor): unknown {
  return {
    mediaType: d.mediaType,
    digest: d.digest,
    size: d.size,
    urls: d.urls?.length ? d.urls : undefined,
    annotations: sortedMap(d.annotations),
    data: d.data || undefined,
    platform: platformJson(d.platform),
    artifactType: d.artifactType || undefined,
  };
}

/** Docker schema 2's descriptor field order (mediaType, size, digest, urls, annotations, platform). */
export function dockerDescriptor(d: Descriptor): unknown {
  return {
    mediaType: d.mediaType,
    size: d.size,
    digest: d.digest,
    urls: d.urls?.length ? d.urls : undefined,
    annotations: sortedMap(d.annotations),
    platform: platformJson(d.platform),
  };
}

/** The layer media type for a compression in a format (nondistributable/foreign kept as such). */
export function layerTypeFor(format: ManifestFormat, srcType: MediaType, compression: Compression): MediaType {
  const foreign = srcType === MediaTypes.dockerLayerForeignGzip || srcType.startsWith('application/vnd.oci.image.layer.nondistributable.');
  if (format === 'docker') {
    if (compression === 'zstd') throw new UsageError('a Docker schema 2 manifest cannot carry zstd layers: use --format oci (or --dest-compress-format gzip)');
    if (foreign) {
      if (compression !== 'gzip') throw new UsageError('a Docker schema 2 foreign layer must be gzip-compressed');
      return MediaTypes.dockerLayerForeignGzip;
    }
    return compression === 'gzip' ? MediaTypes.dockerLayerGzip : DOCKER_LAYER_UNCOMPRESSED;
  }
  const base = foreign ? 'application/vnd.oci.image.layer.nondistributable.v1.tar' : MediaTypes.ociLayer;
  return compression === 'none' ? base : `${base}+${compression}`;
}

/** Is this a layer media type whose compression we understand (image layers, not artifacts)? */
export function isImageLayerType(mt: MediaType): boolean {
  return (
    mt === MediaTypes.dockerLayerGzip ||
    mt === MediaTypes.dockerLayerForeignGzip ||
    mt === DOCKER_LAYER_UNCOMPRESSED ||
    /^application\/vnd\.oci\.image\.layer\.(nondistributable\.)?v1\.tar(\+gzip|\+zstd)?$/.test(mt)
  );
}

export { layerCompression };

/** Serialise an image manifest in `format` with the given config and layers (containers/image field order). */
export function imageManifestBytes(
  format: ManifestFormat,
  config: Descriptor,
  layers: Descriptor[],
  extra: { annotations?: Record<string, string> | undefined; subject?: Descriptor | undefined; artifactType?: string | undefined } = {},
): Buffer {
  if (format === 'docker') {
    return Buffer.from(
      goJson({
        schemaVersion: 2,
        mediaType: MediaTypes.dockerManifest,
        config: dockerDescriptor(config),
        layers: layers.map(dockerDescriptor),
      }),
    );
  }
  return Buffer.from(
    goJson({
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      artifactType: extra.artifactType || undefined,
      config: ociDescriptor(config),
      layers: layers.map(ociDescriptor),
      subject: extra.subject ? ociDescriptor(extra.subject) : undefined,
      annotations: sortedMap(extra.annotations),
    }),
  );
}

/** Serialise an index / manifest list in `format` with the given children. */
export function indexBytes(format: ManifestFormat, manifests: Descriptor[], src: ImageIndex): Buffer {
  if (format === 'docker') {
    return Buffer.from(
      goJson({
        schemaVersion: 2,
        mediaType: MediaTypes.dockerManifestList,
        manifests: manifests.map((m) => ({ ...(dockerDescriptor(m) as object), annotations: undefined, platform: platformJson(m.platform) ?? { architecture: '', os: '' } })),
      }),
    );
  }
  return Buffer.from(
    goJson({
      schemaVersion: 2,
      mediaType: MediaTypes.ociIndex,
      artifactType: src.artifactType || undefined,
      manifests: manifests.map(ociDescriptor),
      subject: src.subject ? ociDescriptor(src.subject) : undefined,
      annotations: sortedMap(src.annotations),
    }),
  );
}

/** RFC 3339 as Go's time.Time marshals it (RFC3339Nano: trailing zeros of the fraction dropped, +00:00 as Z). */
function goTime(s: unknown): string | undefined {
  if (typeof s !== 'string' || s === '') return undefined;
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:\d\d)$/.exec(s);
  if (!m) return s;
  const frac = (m[2] ?? '').slice(0, 9).replace(/0+$/, '');
  const zone = m[3] === 'z' || m[3] === '+00:00' || m[3] === '-00:00' ? 'Z' : m[3]!;
  return `${m[1]}${frac ? `.${frac}` : ''}${zone}`;
}

function strOrUndef(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}
function arrOrUndef(v: unknown): unknown[] | undefined {
  return Array.isArray(v) && v.length > 0 ? v : undefined;
}
function setMap(v: unknown): Record<string, object> | undefined {
  if (!v || typeof v !== 'object') return undefined;
  const keys = Object.keys(v).sort();
  return keys.length ? Object.fromEntries(keys.map((k) => [k, {}])) : undefined;
}

/**
 * A Docker image config as an OCI image config: what containers/image does for schema 2 -> OCI (unmarshal into
 * image-spec's Image, marshal again): Docker-only fields (container_config, docker_version, ...) dropped.
 */
export function dockerConfigToOci(bytes: Buffer): Buffer {
  const c = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  const cc = (c.config && typeof c.config === 'object' ? c.config : {}) as Record<string, unknown>;
  const rootfs = (c.rootfs ?? {}) as Record<string, unknown>;
  const history = Array.isArray(c.history)
    ? (c.history as Record<string, unknown>[]).map((h) => ({
        created: goTime(h.created),
        created_by: strOrUndef(h.created_by),
        author: strOrUndef(h.author),
        comment: strOrUndef(h.comment),
        empty_layer: h.empty_layer === true ? true : undefined,
      }))
    : undefined;
  const labels = cc.Labels && typeof cc.Labels === 'object' ? sortedMap(cc.Labels as Record<string, string>) : undefined;
  const out = {
    created: goTime(c.created),
    author: strOrUndef(c.author),
    architecture: typeof c.architecture === 'string' ? c.architecture : '',
    variant: strOrUndef(c.variant),
    os: typeof c.os === 'string' ? c.os : '',
    'os.version': strOrUndef(c['os.version']),
    'os.features': arrOrUndef(c['os.features']),
    config: {
      User: strOrUndef(cc.User),
      ExposedPorts: setMap(cc.ExposedPorts),
      Env: arrOrUndef(cc.Env),
      Entrypoint: arrOrUndef(cc.Entrypoint),
      Cmd: arrOrUndef(cc.Cmd),
      Volumes: setMap(cc.Volumes),
      WorkingDir: strOrUndef(cc.WorkingDir),
      Labels: labels,
      StopSignal: strOrUndef(cc.StopSignal),
      ArgsEscaped: cc.ArgsEscaped === true ? true : undefined,
    },
    rootfs: { type: typeof rootfs.type === 'string' ? rootfs.type : '', diff_ids: Array.isArray(rootfs.diff_ids) ? rootfs.diff_ids : null },
    history: history?.length ? history : undefined,
  };
  return Buffer.from(goJson(out));
}

export type { ImageManifest };
