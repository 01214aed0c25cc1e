/**
 * The local image store: an OCI layout at imageStoreDir() whose index.json names images by
 * their full reference (`localhost/app:latest`, `docker.io/library/busybox:latest`), the
 * unpacked layer cache (src/overlay) beside it, and the working-containers record of
 * `tsbuild from/run/commit`. Image IDs are config digests (as buildah/podman print them).
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  buildBusyboxBase,
  defaultRoot,
  familiarName,
  formatReference,
  imageStoreDir,
  isDigest,
  isIndexType,
  MediaTypes,
  OciError,
  OciLayout,
  parseConfig,
  parseManifest,
  parseReference,
  selectPlatform,
  hostPlatform,
  TsimageError,
  UsageError,
  type Descriptor,
  type Digest,
  type ImageConfig,
  type ImageManifest,
  type ImageIndex,
  type TaggedEntry,
} from '../oci/index.js';
import type { Snapshotter } from '../overlay/index.js';

/** The short names that mean the embedded busybox base when the store has nothing better. */
export const EMBEDDED_BASE_NAME = 'localhost/busybox:latest';
const EMBEDDED_ALIASES = new Set(['busybox', 'busybox:latest', 'localhost/busybox', 'localhost/busybox:latest', 'docker.io/library/busybox:latest', 'docker.io/library/busybox', 'library/busybox', 'library/busybox:latest']);

export interface LoadedImage {
  /** Manifest descriptor (in the store). */
  desc: Descriptor;
  manifest: ImageManifest;
  config: ImageConfig;
  /** Image ID: the config digest. */
  id: Digest;
  /** Names this image carries in the store. */
  names: string[];
}

/** A full store name for a user-given name: `app` -> `localhost/app:latest` (buildah's rule for new names). */
export function storeName(name: string): string {
  const r = parseReference(name, { normalize: false });
  let registry = r.registry;
  let repo = r.repository;
  if (!registry) registry = 'localhost';
  const tag = r.tag ?? (r.digest ? undefined : 'latest');
  return formatReference({ registry, repository: repo, tag, digest: r.digest });
}

/** The store names a lookup of `name` may match, most specific first. */
export function candidateNames(name: string): string[] {
  const out: string[] = [];
  let r;
  try {
    r = parseReference(name, { normalize: false });
  } catch {
    return [name];
  }
  const tag = r.tag ?? (r.digest ? undefined : 'latest');
  if (r.registry) out.push(formatReference({ ...r, tag }));
  else {
    out.push(formatReference({ registry: 'localhost', repository: r.repository, tag, digest: r.digest }));
    const hub = parseReference(name);
    out.push(formatReference(hub));
  }
  out.push(name);
  return [...new Set(out)];
}

export function isEmbeddedBaseName(name: string): boolean {
  return EMBEDDED_ALIASES.has(name);
}

export interface ContainerRecord {
  id: string;
  name: string;
  /** Image the container was created from (store name or id), '' for scratch. */
  image: string;
  imageId: string;
  /** Snapshot key in the snapshotter. */
  snapshot: string;
  /** The working config (what `config` changes and `commit` writes). */
  config: ImageConfig;
  layers: Descriptor[];
  created: string;
  mounted?: string;
}

export class ImageStore {
  private constructor(
    readonly root: string,
    readonly layout: OciLayout,
  ) {}

  static async open(root = defaultRoot()): Promise<ImageStore> {
    await mkdir(root, { recursive: true });
    const layout = await OciLayout.open(imageStoreDir(root), { create: true, sync: false });
    return new ImageStore(root, layout);
  }

  async readManifest(desc: Descriptor): Promise<ImageManifest> {
    const bytes = await this.layout.readBytes(desc.digest);
    const pm = parseManifest(bytes, desc.mediaType);
    if (pm.kind !== 'manifest') throw new TsimageError(`${desc.digest} is an index, not an image manifest`);
    return pm.doc;
  }

  async load(desc: Descriptor, names: string[] = []): Promise<LoadedImage> {
    if (isIndexType(desc.mediaType)) {
      const pm = parseManifest(await this.layout.readBytes(desc.digest), desc.mediaType);
      if (pm.kind !== 'index') throw new TsimageError(`${desc.digest} is not an index`);
      const idx: ImageIndex = pm.doc;
      const child = selectPlatform(idx.manifests, hostPlatform());
      if (!child) throw new TsimageError(`image ${names[0] ?? desc.digest} has no manifest for ${hostPlatform().os}/${hostPlatform().architecture}`);
      return this.load(child, names);
    }
    const manifest = await this.readManifest(desc);
    const config = parseConfig(await this.layout.readBytes(manifest.config.digest));
    return { desc, manifest, config, id: manifest.config.digest, names };
  }

  async list(): Promise<TaggedEntry[]> {
    return this.layout.list();
  }

  /** All images: one row per manifest digest, with its names (unnamed ones too). */
  async images(): Promise<LoadedImage[]> {
    const idx = await this.layout.readIndex();
    const by = new Map<string, { desc: Descriptor; names: string[] }>();
    for (const m of idx.manifests) {
      const name = m.annotations?.['org.opencontainers.image.ref.name'];
      const e = by.get(m.digest) ?? { desc: m, names: [] };
      if (name) e.names.push(name);
      by.set(m.digest, e);
    }
    const out: LoadedImage[] = [];
    for (const { desc, names } of by.values()) {
      try {
        out.push(await this.load(desc, names));
      } catch {
        /* a broken entry: skipped in listings */
      }
    }
    return out;
  }

  /** Find an image by name (short names tried as localhost/ then docker.io), full or short image ID, or manifest digest. */
  async find(name: string): Promise<LoadedImage | undefined> {
    for (const n of candidateNames(name)) {
      let d: Descriptor | undefined;
      try {
        d = await this.layout.find(n);
      } catch {
        d = undefined;
      }
      if (d) {
        const names = (await this.layout.list()).filter((e) => e.descriptor.digest === d!.digest).map((e) => e.name);
        return this.load(d, names);
      }
    }
    const hex = name.replace(/^sha256:/, '');
    if (/^[0-9a-f]{6,64}$/.test(hex)) {
      const matches = (await this.images()).filter((i) => i.id.slice(7).startsWith(hex) || i.desc.digest.slice(7).startsWith(hex));
      const ids = new Set(matches.map((m) => m.id));
      if (ids.size > 1) throw new UsageError(`image ID prefix ${name} is ambiguous (${ids.size} images)`);
      if (matches[0]) return matches[0];
    }
    if (isDigest(name)) {
      const d = await this.layout.find(name);
      if (d) return this.load(d);
    }
    return undefined;
  }

  async resolve(name: string): Promise<LoadedImage> {
    const img = await this.find(name);
    if (!img) throw new OciError('MANIFEST_UNKNOWN', `image ${JSON.stringify(name)} is not in the local store (${this.layout.dir})`);
    return img;
  }

  /** The embedded busybox base (built from /bin/busybox, reproducibly, epoch 0), tagged localhost/busybox:latest. */
  async ensureEmbeddedBase(signal?: AbortSignal): Promise<LoadedImage> {
    const have = await this.find(EMBEDDED_BASE_NAME);
    if (have) return have;
    const desc = await buildBusyboxBase(this.layout, { tag: EMBEDDED_BASE_NAME, epoch: 0, signal });
    return this.load(desc, [EMBEDDED_BASE_NAME]);
  }

  async tag(name: string, desc: Descriptor): Promise<string> {
    const full = storeName(name);
    await this.layout.tag(full, { mediaType: desc.mediaType, digest: desc.digest, size: desc.size });
    return full;
  }

  /** Remove a name; when the image has no other name, its entry goes too. Returns what was removed. */
  async rmi(name: string, force = false): Promise<{ untagged: string[]; deleted?: Digest }> {
    const img = await this.resolve(name);
    const byName = candidateNames(name).find((n) => img.names.includes(n));
    const untagged: string[] = [];
    if (byName && img.names.length > 1 && !force) {
      await this.layout.untag(byName);
      return { untagged: [byName] };
    }
    for (const n of img.names) {
      await this.layout.untag(n);
      untagged.push(n);
    }
    await this.layout.removeManifest(img.desc.digest);
    return { untagged, deleted: img.id };
  }

  /** Unpack the image's layers into the snapshotter's layer cache (each once). */
  async ensureLayers(snap: Snapshotter, layers: Descriptor[], diffIDs: Digest[], signal?: AbortSignal): Promise<void> {
    if (layers.length !== diffIDs.length) throw new TsimageError(`image has ${layers.length} layers but ${diffIDs.length} diff_ids`);
    for (let i = 0; i < layers.length; i++) {
      if (await snap.hasLayer(diffIDs[i]!)) continue;
      await snap.addLayer(diffIDs[i]!, await this.layout.open(layers[i]!.digest, { signal }), { signal });
    }
  }

  // ---- working containers -------------------------------------------------------

  private get containersFile(): string {
    return join(this.root, 'builder', 'containers.json');
  }

  async containers(): Promise<ContainerRecord[]> {
    try {
      return JSON.parse(await readFile(this.containersFile, 'utf8')) as ContainerRecord[];
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }

  async updateContainers<T>(fn: (list: ContainerRecord[]) => T | Promise<T>): Promise<T> {
    await mkdir(join(this.root, 'builder'), { recursive: true });
    return this.layout.withLock(async () => {
      const list = await this.containers();
      const r = await fn(list);
      const tmp = `${this.containersFile}.tmp-${process.pid}`;
      await writeFile(tmp, JSON.stringify(list, null, 1));
      await rename(tmp, this.containersFile);
      return r;
    });
  }

  async container(nameOrId: string): Promise<ContainerRecord> {
    const list = await this.containers();
    const c = list.find((x) => x.name === nameOrId || x.id === nameOrId) ?? list.filter((x) => x.id.startsWith(nameOrId)).at(0);
    if (!c) throw new UsageError(`no working container ${JSON.stringify(nameOrId)} (see tsbuild containers)`);
    return c;
  }
}

export function displayName(full: string): string {
  try {
    return familiarName(parseReference(full, { normalize: false }));
  } catch {
    return full;
  }
}

export const STORE_MEDIA = MediaTypes;
