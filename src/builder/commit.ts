/**
 * Committing a built state: --label, --squash (one layer of the whole rootfs), created time
 * (--timestamp / SOURCE_DATE_EPOCH make the digest reproducible), the image in the store under
 * its names, --manifest LIST (an index in the store), --output type=local|oci|docker-archive.
 */
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { promisify } from 'node:util';
import {
  exportDockerArchive,
  exportOciArchive,
  layerMediaType,
  MediaTypes,
  packDirectory,
  parseManifest,
  REF_NAME_ANNOTATION,
  toJsonBytes,
  UsageError,
  writeLayer,
  type Compression,
  type Descriptor,
  type ImageIndex,
} from '../oci/index.js';
import type { Snapshotter } from '../overlay/index.js';
import { cloneState, writeImage, type ImageState } from './image.js';
import { storeName, type ImageStore } from './store.js';
import { uniqueParents } from './executor.js';

const run = promisify(execFile);

export interface OutputSpec {
  type: 'local' | 'oci' | 'docker-archive' | 'tar';
  dest: string;
}

/** Parse `--output type=local,dest=DIR` (or a bare DIR = local). */
export function parseOutput(s: string): OutputSpec {
  if (!s.includes('=')) return { type: 'local', dest: s };
  const kv = new Map(s.split(',').map((p) => {
    const i = p.indexOf('=');
    return [p.slice(0, i).trim(), p.slice(i + 1).trim()] as [string, string];
  }));
  const type = kv.get('type') ?? 'local';
  const dest = kv.get('dest') ?? kv.get('destination');
  if (!['local', 'oci', 'docker-archive', 'tar', 'docker'].includes(type)) throw new UsageError(`--output: unsupported type ${JSON.stringify(type)} (local, tar, oci, docker-archive)`);
  if (!dest) throw new UsageError(`--output ${s}: dest= is required`);
  return { type: (type === 'docker' ? 'docker-archive' : type) as OutputSpec['type'], dest };
}

export interface CommitOptions {
  tags: string[];
  format: 'oci' | 'docker';
  compression: Compression;
  squash: boolean;
  timestamp?: number | undefined;
  labels?: Record<string, string> | undefined;
  annotations?: Record<string, string> | undefined;
  manifest?: string | undefined;
  /** the image's created time (default now, or --timestamp) */
  created?: string | undefined;
  outputs: OutputSpec[];
  log: (line: string) => void;
  signal: AbortSignal;
}

function iso(ts?: number): string {
  return ts !== undefined ? new Date(ts * 1000).toISOString().replace(/\.000Z$/, 'Z') : new Date().toISOString();
}

async function withRootfs<T>(store: ImageStore, snap: Snapshotter, s: ImageState, signal: AbortSignal, fn: (rootfs: string) => Promise<T>): Promise<T> {
  await store.ensureLayers(snap, s.layers, s.config.rootfs.diff_ids, signal);
  const key = `commit-${process.pid}-${randomBytes(6).toString('hex')}`;
  try {
    const { rootfs } = await snap.prepare(key, uniqueParents(s.config.rootfs.diff_ids));
    return await fn(rootfs);
  } finally {
    await snap.remove(key);
  }
}

export async function commitImage(
  store: ImageStore,
  snap: Snapshotter,
  built: ImageState,
  o: CommitOptions,
): Promise<{ imageId: string; manifest: Descriptor; names: string[] }> {
  const s = cloneState(built);
  const cfg = (s.config.config ??= {});
  if (o.labels && Object.keys(o.labels).length) cfg.Labels = { ...(cfg.Labels ?? {}), ...o.labels };
  if (o.squash && s.layers.length > 0) {
    const mediaType = layerMediaType('oci', o.compression);
    let blob: Descriptor | undefined;
    const res = await withRootfs(store, snap, s, o.signal, (rootfs) =>
      writeLayer(
        packDirectory(rootfs, { mtimeClamp: o.timestamp, signal: o.signal }),
        o.compression,
        async (body) => {
          blob = await store.layout.ingest({ mediaType }, body, { signal: o.signal });
        },
        { signal: o.signal },
      ),
    );
    s.layers = [{ mediaType, digest: blob!.digest, size: blob!.size }];
    s.config.rootfs.diff_ids = [res.diffID];
    const hist = s.config.history ?? [];
    for (const h of hist) h.empty_layer = true;
    const last = hist[hist.length - 1];
    if (last) delete last.empty_layer;
    else hist.push({ created: iso(o.timestamp), created_by: '/bin/sh -c #(nop) squashed' });
    s.config.history = hist;
  }
  // created: the last step's time (a fully cached build gives the same image), or --timestamp
  const created = o.timestamp !== undefined || !o.created ? iso(o.timestamp) : o.created;
  const { manifest, configDigest } = await writeImage(store.layout, s, { format: o.format, created, annotations: o.annotations });
  const names: string[] = [];
  if (o.tags.length === 0) await store.layout.addManifest(manifest);
  for (const t of o.tags) names.push(await store.tag(t, manifest));
  o.log(`COMMIT ${names.join(' ')}`.trimEnd());
  if (o.manifest) await addToManifestList(store, o.manifest, manifest, s.config.architecture, s.config.os, s.config.variant as string | undefined);
  for (const out of o.outputs) await writeOutput(store, snap, s, manifest, names, out, o);
  for (const n of names) o.log(`Successfully tagged ${n}`);
  return { imageId: configDigest.slice(7), manifest, names };
}

async function addToManifestList(store: ImageStore, list: string, m: Descriptor, architecture: string, os: string, variant?: string): Promise<void> {
  const name = storeName(list);
  const existing = await store.layout.find(name).catch(() => undefined);
  let index: ImageIndex = { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [] };
  if (existing) {
    const p = parseManifest(await store.layout.readBytes(existing.digest), existing.mediaType);
    if (p.kind !== 'index') throw new UsageError(`${name} exists and is an image, not a manifest list`);
    index = p.doc as ImageIndex;
  }
  const platform = { architecture, os, ...(variant ? { variant } : {}) };
  index.manifests = index.manifests.filter(
    (d) => d.digest !== m.digest && !(d.platform && d.platform.architecture === architecture && d.platform.os === os && (d.platform.variant ?? '') === (variant ?? '')),
  );
  index.manifests.push({ mediaType: m.mediaType, digest: m.digest, size: m.size, platform });
  const d = await store.layout.putBytes(MediaTypes.ociIndex, toJsonBytes(index));
  await store.layout.tag(name, d);
}

async function writeOutput(store: ImageStore, snap: Snapshotter, s: ImageState, m: Descriptor, names: string[], out: OutputSpec, o: CommitOptions): Promise<void> {
  if (out.type === 'local') {
    await mkdir(out.dest, { recursive: true });
    await withRootfs(store, snap, s, o.signal, async (rootfs) => {
      await run('cp', ['-a', `${rootfs}/.`, out.dest]);
    });
    o.log(`Wrote the rootfs to ${out.dest}`);
    return;
  }
  if (out.type === 'tar') {
    const { createWriteStream } = await import('node:fs');
    const { pipeline } = await import('node:stream/promises');
    await withRootfs(store, snap, s, o.signal, (rootfs) => pipeline(packDirectory(rootfs, { signal: o.signal }), createWriteStream(out.dest)));
    return;
  }
  // an OCI or docker archive of just this image, named as podman save names it (its first name; none if untagged)
  const ref = names[0];
  if (out.type === 'oci') {
    const desc: Descriptor = { mediaType: m.mediaType, digest: m.digest, size: m.size, ...(ref ? { annotations: { [REF_NAME_ANNOTATION]: ref } } : {}) };
    await exportOciArchive(store.layout, out.dest, { manifests: [desc], signal: o.signal });
  } else {
    await exportDockerArchive(store.layout, out.dest, [{ ref: m.digest, repoTags: ref ? [ref] : [] }], { signal: o.signal });
  }
  o.log(`Wrote ${out.type} archive ${out.dest}`);
}
