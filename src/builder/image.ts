/**
 * Image state while a stage builds (config + layers), and writing it out as an image:
 * config (history, created, rootfs.diff_ids), manifest (oci or docker), names in the store.
 */
import {
  hostPlatform,
  layerCompression,
  layerMediaType,
  MediaTypes,
  toJsonBytes,
  TsimageError,
  type Descriptor,
  type Digest,
  type ImageConfig,
  type ImageManifest,
  type HistoryEntry,
  type OciLayout,
} from '../oci/index.js';

export interface ImageState {
  config: ImageConfig;
  layers: Descriptor[];
}

export function emptyState(): ImageState {
  const p = hostPlatform();
  return {
    config: {
      architecture: p.architecture,
      os: p.os,
      ...(p.variant ? { variant: p.variant } : {}),
      config: {},
      rootfs: { type: 'layers', diff_ids: [] },
      history: [],
    },
    layers: [],
  };
}

export function cloneState(s: ImageState): ImageState {
  return { config: structuredClone(s.config), layers: structuredClone(s.layers) };
}

export function addHistory(s: ImageState, h: HistoryEntry): void {
  (s.config.history ??= []).push(h);
}

export function addLayer(s: ImageState, layer: Descriptor, diffID: Digest): void {
  s.layers.push(layer);
  s.config.rootfs.diff_ids.push(diffID);
}

export interface WriteImageOptions {
  format: 'oci' | 'docker';
  created?: string | undefined;
  annotations?: Record<string, string> | undefined;
}

/** The config as committed: field order as buildah writes it; docker-only fields kept (Docker/BuildKit do too). */
export function finalConfig(s: ImageState, o: WriteImageOptions): ImageConfig {
  const c = structuredClone(s.config);
  if (o.created) c.created = o.created;
  const cc = c.config ?? {};
  for (const k of Object.keys(cc) as (keyof typeof cc)[]) {
    const v = cc[k];
    if (v === undefined) delete cc[k];
    if (Array.isArray(v) && v.length === 0 && k !== 'Cmd' && k !== 'Entrypoint') delete cc[k];
    if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0) delete cc[k];
  }
  const ordered: ImageConfig = {
    ...(c.created ? { created: c.created } : {}),
    ...(c.author ? { author: c.author } : {}),
    architecture: c.architecture,
    os: c.os,
    ...(c.variant ? { variant: c.variant } : {}),
    config: cc,
    rootfs: { type: 'layers', diff_ids: c.rootfs.diff_ids },
    history: c.history ?? [],
  };
  return ordered;
}

export async function writeImage(layout: OciLayout, s: ImageState, o: WriteImageOptions): Promise<{ manifest: Descriptor; configDigest: Digest; config: ImageConfig }> {
  const config = finalConfig(s, o);
  const docker = o.format === 'docker';
  const layers = s.layers.map((l) => {
    const comp = layerCompression(l.mediaType);
    if (docker && comp === 'zstd') throw new TsimageError('zstd layers cannot be written in the docker format (use --format oci)');
    const mt = docker && comp === 'none' ? 'application/vnd.docker.image.rootfs.diff.tar' : layerMediaType(o.format, comp);
    return { mediaType: mt, digest: l.digest, size: l.size };
  });
  const configDesc = await layout.putBytes(docker ? MediaTypes.dockerConfig : MediaTypes.ociConfig, toJsonBytes(config));
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: docker ? MediaTypes.dockerManifest : MediaTypes.ociManifest,
    config: { mediaType: configDesc.mediaType, digest: configDesc.digest, size: configDesc.size },
    layers,
    ...(o.annotations && Object.keys(o.annotations).length && !docker ? { annotations: o.annotations } : {}),
  };
  const m = await layout.putBytes(manifest.mediaType!, toJsonBytes(manifest));
  return { manifest: { mediaType: m.mediaType, digest: m.digest, size: m.size }, configDigest: configDesc.digest, config };
}
