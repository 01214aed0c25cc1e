/**
 * Working containers (buildah from/run/copy/config/commit): a record in the store
 * (<root>/builder/containers.json) with the image config and its layers; every `run`/`copy`
 * applies its change in a snapshot and adds the diff as a layer (as a build step does), so a
 * container survives between commands without a long-lived mount.
 */
import { randomBytes } from 'node:crypto';
import { layerMediaType, writeLayer, type Compression, type Descriptor } from '../oci/index.js';
import type { Snapshotter } from '../overlay/index.js';
import { addHistory, addLayer, emptyState, type ImageState } from './image.js';
import type { ContainerRecord, ImageStore } from './store.js';
import { uniqueParents } from './executor.js';

export function newContainerId(): string {
  return randomBytes(32).toString('hex');
}

export function stateOf(c: ContainerRecord): ImageState {
  return { config: structuredClone(c.config), layers: structuredClone(c.layers) };
}

export function scratchRecord(name: string): ContainerRecord {
  const s = emptyState();
  const id = newContainerId();
  return { id, name, image: '', imageId: '', snapshot: '', config: s.config, layers: s.layers, created: new Date().toISOString() };
}

/** Apply `fn` to the container's rootfs; its changes become a new layer of the container. */
export async function applyChange(
  store: ImageStore,
  snap: Snapshotter,
  c: ContainerRecord,
  createdBy: string,
  fn: (rootfs: string) => Promise<void>,
  o: { compression?: Compression; signal?: AbortSignal | undefined } = {},
): Promise<boolean> {
  const compression = o.compression ?? 'gzip';
  await store.ensureLayers(snap, c.layers, c.config.rootfs.diff_ids, o.signal);
  const key = `wc-${process.pid}-${randomBytes(6).toString('hex')}`;
  let committed = false;
  try {
    const { rootfs } = await snap.prepare(key, uniqueParents(c.config.rootfs.diff_ids));
    await fn(rootfs);
    const mediaType = layerMediaType('oci', compression);
    let blob: Descriptor | undefined;
    const res = await writeLayer(snap.diff(key, { signal: o.signal }), compression, async (body) => {
      blob = await store.layout.ingest({ mediaType }, body, { signal: o.signal });
    });
    const s = stateOf(c);
    const empty = res.uncompressedSize <= 1024;
    if (!empty) {
      addLayer(s, { mediaType, digest: blob!.digest, size: blob!.size }, res.diffID);
      await snap.commit(key, res.diffID);
      committed = true;
    }
    addHistory(s, { created: new Date().toISOString(), created_by: createdBy, ...(empty ? { empty_layer: true } : {}) });
    c.config = s.config;
    c.layers = s.layers;
    return !empty;
  } finally {
    if (!committed) await snap.remove(key).catch(() => {});
  }
}
