/**
 * `tsbuild mount`/`umount`: a working container's rootfs as an overlay mount that outlives the
 * command (<root>/builder/wc/<id>/{upper,work,merged}); umount turns the upper dir's changes
 * into a layer of the container and removes the mount. Needs the overlay driver.
 */
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { layerMediaType, TsimageError, writeLayer, type Descriptor } from '../oci/index.js';
import { diffUpper, isMounted, mountOverlay, openSnapshotter, unmount } from '../overlay/index.js';
import { addHistory, addLayer } from './image.js';
import type { ContainerRecord, ImageStore } from './store.js';
import { stateOf } from './working.js';

function wcDir(store: ImageStore, c: ContainerRecord): string {
  return join(store.root, 'builder', 'wc', c.id.slice(0, 32));
}

export async function mountContainer(store: ImageStore, c: ContainerRecord, signal?: AbortSignal): Promise<string> {
  const dir = wcDir(store, c);
  const merged = join(dir, 'merged');
  if (c.mounted && isMounted(merged)) return merged;
  const snap = await openSnapshotter({ root: store.root });
  try {
    if (snap.driver !== 'overlay') throw new TsimageError('tsbuild mount needs the overlay storage driver');
    await store.ensureLayers(snap, c.layers, c.config.rootfs.diff_ids, signal);
  } finally {
    await snap.close();
  }
  const layersDir = join(store.root, 'layers');
  for (const d of ['upper', 'work', 'merged']) await mkdir(join(dir, d), { recursive: true });
  const lowers: string[] = [];
  for (const d of [...c.config.rootfs.diff_ids].reverse()) lowers.push(`l/${(await readFile(join(layersDir, d.slice(7), 'link'), 'utf8')).trim()}`);
  if (!lowers.length) lowers.push('empty');
  await mountOverlay(merged, lowers, join(dir, 'upper'), join(dir, 'work'), layersDir);
  await store.updateContainers((list) => {
    const x = list.find((y) => y.id === c.id);
    if (x) x.mounted = merged;
  });
  return merged;
}

export async function umountContainer(store: ImageStore, c: ContainerRecord, signal?: AbortSignal): Promise<void> {
  const dir = wcDir(store, c);
  const merged = join(dir, 'merged');
  if (isMounted(merged)) await unmount(merged);
  const s = stateOf(c);
  try {
    const mediaType = layerMediaType('oci', 'gzip');
    let blob: Descriptor | undefined;
    const res = await writeLayer(diffUpper(join(dir, 'upper'), { signal }), 'gzip', async (body) => {
      blob = await store.layout.ingest({ mediaType }, body, { signal });
    });
    if (res.uncompressedSize > 1024) {
      addLayer(s, { mediaType, digest: blob!.digest, size: blob!.size }, res.diffID);
      addHistory(s, { created: new Date().toISOString(), created_by: '/bin/sh -c #(nop) tsbuild mount changes' });
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  await rm(dir, { recursive: true, force: true });
  await store.updateContainers((list) => {
    const x = list.find((y) => y.id === c.id);
    if (x) {
      x.config = s.config;
      x.layers = s.layers;
      delete x.mounted;
    }
  });
}
