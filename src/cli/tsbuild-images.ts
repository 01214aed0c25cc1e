/** tsbuild images, tag, rmi, inspect, prune, info, pull, push. */
import { rm, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { UsageError } from '../oci/errors.js';
import { rootController } from './common.js';
import { boolOpt } from './tsbuild-bud.js';

function applyGlobals(g: Record<string, unknown>): void {
  if (g.root) process.env.TSIMAGE_ROOT = String(g.root);
  if (g.storageDriver) process.env.TSIMAGE_STORAGE_DRIVER = String(g.storageDriver);
}

async function openStore(g: Record<string, unknown>) {
  applyGlobals(g);
  const { ImageStore } = await import('../builder/store.js');
  return ImageStore.open();
}

function human(n: number): string {
  const u = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) {
    n /= 1000;
    i++;
  }
  return `${i ? n.toFixed(n < 10 ? 2 : 1) : n} ${u[i]}`;
}

function ago(iso: string | undefined): string {
  if (!iso) return '';
  const s = (Date.now() - Date.parse(iso)) / 1000;
  if (!Number.isFinite(s)) return '';
  if (s < 60) return `${Math.floor(s)} seconds ago`;
  if (s < 3600) return `${Math.floor(s / 60)} minutes ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} hours ago`;
  if (s < 86400 * 365) return `${Math.floor(s / 86400)} days ago`;
  return `${Math.floor(s / 86400 / 365)} years ago`;
}

export async function imagesCommand(names: string[], opts: Record<string, unknown>, g: Record<string, unknown>): Promise<void> {
  const store = await openStore(g);
  let imgs = await store.images();
  if (names.length) {
    const want = new Set<string>();
    for (const n of names) {
      const f = await store.find(n);
      if (f) want.add(f.desc.digest);
    }
    imgs = imgs.filter((i) => want.has(i.desc.digest));
  } else if (!opts.all) imgs = imgs.filter((i) => i.names.length > 0 || true);
  const json = opts.json || opts.format === 'json';
  if (json) {
    const rows = imgs.map((i) => ({
      id: i.id.slice(7),
      names: i.names,
      digest: i.desc.digest,
      created: i.config.created,
      size: i.manifest.layers.reduce((a, l) => a + l.size, 0) + i.manifest.config.size,
    }));
    process.stdout.write(JSON.stringify(rows, null, 4) + '\n');
    return;
  }
  const trunc = opts.trunc !== false;
  if (opts.quiet) {
    for (const id of new Set(imgs.map((i) => (trunc ? i.id.slice(7, 19) : i.id.slice(7))))) process.stdout.write(id + '\n');
    return;
  }
  const rows: string[][] = [['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE']];
  for (const i of imgs) {
    const size = human(i.manifest.layers.reduce((a, l) => a + l.size, 0) + i.manifest.config.size);
    const id = trunc ? i.id.slice(7, 19) : i.id.slice(7);
    const names = i.names.length ? i.names : ['<none>:<none>'];
    for (const n of names) {
      const c = n.lastIndexOf(':');
      const slash = n.lastIndexOf('/');
      const [repo, tag] = c > slash ? [n.slice(0, c), n.slice(c + 1)] : [n, '<none>'];
      rows.push([repo, tag, id, ago(i.config.created), size]);
    }
  }
  const w = rows[0]!.map((_, j) => Math.max(...rows.map((r) => r[j]!.length)));
  for (const r of rows) process.stdout.write(r.map((c, j) => (j === r.length - 1 ? c : c.padEnd(w[j]! + 2))).join('') + '\n');
}

export async function tagCommand(image: string, names: string[], g: Record<string, unknown>): Promise<void> {
  const store = await openStore(g);
  const img = await store.resolve(image);
  for (const n of names) await store.tag(n, img.desc);
}

export async function rmiCommand(images: string[], opts: Record<string, unknown>, g: Record<string, unknown>): Promise<void> {
  const store = await openStore(g);
  let targets = images;
  if (opts.all) targets = [...new Set((await store.images()).map((i) => i.desc.digest as string))];
  else if (opts.prune) targets = (await store.images()).filter((i) => i.names.length === 0).map((i) => i.desc.digest);
  if (!targets.length && !opts.prune) throw new UsageError('rmi: name at least one image (or --all)');
  let failed = 0;
  for (const t of targets) {
    try {
      const r = await store.rmi(t, !!opts.force || !!opts.all);
      for (const u of r.untagged) process.stdout.write(`untagged: ${u}\n`);
      if (r.deleted) process.stdout.write(`${r.deleted.slice(7)}\n`);
    } catch (e) {
      failed++;
      process.stderr.write(`tsbuild rmi: ${(e as Error).message}\n`);
    }
  }
  await gcStore(store);
  if (failed) process.exitCode = 1;
}

function fieldPath(obj: unknown, tmpl: string): string {
  const m = /^\{\{\s*(?:json\s+)?\.([\w.]+)\s*\}\}$/.exec(tmpl.trim());
  if (!m) throw new UsageError(`--format ${tmpl}: supported form is {{.Field.Sub}}`);
  let v: unknown = obj;
  for (const k of m[1]!.split('.')) v = v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
  return typeof v === 'string' ? v : JSON.stringify(v);
}

export async function inspectCommand(name: string, opts: Record<string, unknown>, g: Record<string, unknown>): Promise<void> {
  const store = await openStore(g);
  let out: unknown;
  if (opts.type !== 'image') {
    const c = (await store.containers()).find((x) => x.name === name || x.id === name);
    if (c || opts.type === 'container') {
      const rec = c ?? (await store.container(name));
      out = { Type: 'buildah 0.0.1', ContainerName: rec.name, ContainerID: rec.id, FromImage: rec.image, FromImageID: rec.imageId, OCIv1: rec.config, MountPoint: rec.mounted ?? '' };
    }
  }
  if (!out) {
    const img = await store.resolve(name);
    const c = img.config;
    out = {
      Type: 'image',
      FromImage: img.names[0] ?? '',
      FromImageID: img.id.slice(7),
      FromImageDigest: img.desc.digest,
      Names: img.names,
      Manifest: img.manifest,
      ManifestDigest: img.desc.digest,
      OCIv1: c,
      Config: c.config ?? {},
      Docker: { config: c.config ?? {}, architecture: c.architecture, os: c.os, created: c.created },
      History: c.history ?? [],
    };
  }
  if (opts.format) process.stdout.write(fieldPath(out, String(opts.format)) + '\n');
  else process.stdout.write(JSON.stringify(out, null, 4) + '\n');
}

async function dirSize(d: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
    const p = join(d, e.name);
    if (e.isDirectory()) n += await dirSize(p);
    else n += (await stat(p).catch(() => ({ size: 0 }))).size;
  }
  return n;
}

function parseBytes(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i.exec(v.trim());
  if (!m) throw new UsageError(`invalid size ${JSON.stringify(v)} (e.g. 500MB, 2GB)`);
  const mult: Record<string, number> = { '': 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 };
  return Math.round(Number(m[1]) * mult[m[2]!.toLowerCase()]!);
}

/** Store GC that keeps what images and the build cache reference. */
export async function gcStore(store: import('../builder/store.js').ImageStore): Promise<{ removed: number; bytes: number }> {
  const { BuildCache } = await import('../builder/cache.js');
  const cache = await BuildCache.open(join(store.root, 'cache'));
  const keep = await store.layout.reachable();
  for (const d of await cache.referencedDigests()) keep.add(d as never);
  let removed = 0;
  let bytes = 0;
  for await (const d of store.layout.digests()) {
    if (keep.has(d)) continue;
    const st = await store.layout.stat(d);
    if (await store.layout.delete(d)) {
      removed++;
      bytes += st?.size ?? 0;
    }
  }
  return { removed, bytes };
}

export async function pruneCommand(opts: Record<string, unknown>, g: Record<string, unknown>): Promise<void> {
  const store = await openStore(g);
  const { BuildCache } = await import('../builder/cache.js');
  for (const i of await store.images()) if (i.names.length === 0) await store.rmi(i.desc.digest, true).catch(() => {});
  const cache = await BuildCache.open(join(store.root, 'cache'));
  const pr = await cache.prune(
    opts.all ? { all: true } : opts.keepStorage !== undefined ? { maxBytes: parseBytes(String(opts.keepStorage)) } : { maxAgeMs: 7 * 24 * 3600e3 },
  );
  let freed = 0;
  if (opts.all) {
    const mounts = join(store.root, 'build-cache-mounts');
    freed += await dirSize(mounts);
    await rm(mounts, { recursive: true, force: true });
  }
  const r = await gcStore(store);
  freed += r.bytes;
  // unpacked layers not used by any stored image or working container
  const used = new Set<string>();
  for (const i of await store.images()) for (const d of i.config.rootfs.diff_ids) used.add(d.slice(7));
  for (const c of await store.containers()) for (const d of c.config.rootfs.diff_ids) used.add(d.slice(7));
  for await (const e of cache.entries()) if (e.result.layer) used.add(e.result.layer.diffID.slice(7));
  const layers = join(store.root, 'layers');
  for (const n of await readdir(layers).catch(() => [] as string[])) {
    if (!/^[0-9a-f]{64}$/.test(n) || used.has(n)) continue;
    freed += await dirSize(join(layers, n));
    await rm(join(layers, n), { recursive: true, force: true });
    await rm(join(layers, 'l', n.slice(0, 16)), { force: true });
  }
  process.stdout.write(`removed ${pr.removed.length} cache entries and ${r.removed} blobs, freed ${human(freed)}\n`);
}

export async function infoCommand(g: Record<string, unknown>): Promise<void> {
  applyGlobals(g);
  const { defaultRoot, imageStoreDir, hostPlatform } = await import('../oci/index.js');
  const { overlaySupported } = await import('../overlay/index.js');
  const root = defaultRoot();
  const { mkdir } = await import('node:fs/promises');
  await mkdir(join(root, 'containers'), { recursive: true });
  const overlay = await overlaySupported(join(root, 'containers'));
  const p = hostPlatform();
  const info = {
    host: { os: p.os, arch: p.architecture, kernel: (await import('node:os')).release(), cpus: (await import('node:os')).availableParallelism(), node: process.version },
    store: { root, imageStore: imageStoreDir(root), graphDriver: process.env.TSIMAGE_STORAGE_DRIVER ?? (overlay ? 'overlay' : 'vfs') },
    runtime: { defaultIsolation: process.env.TSIMAGE_ISOLATION ?? 'builtin', isolations: ['builtin', 'chroot', 'oci'] },
    version: (await import('./common.js')).VERSION,
  };
  process.stdout.write(JSON.stringify(info, null, 4) + '\n');
}

export async function pullCommand(image: string, opts: Record<string, unknown>, g: Record<string, unknown>): Promise<void> {
  const store = await openStore(g);
  const { isEmbeddedBaseName } = await import('../builder/store.js');
  if (isEmbeddedBaseName(image) && opts.embedded !== false) {
    // the offline base: no registry needed (tsbuild pull docker://busybox pulls the real one)
    const b = await store.ensureEmbeddedBase(rootController.signal);
    process.stdout.write(b.id.slice(7) + '\n');
    return;
  }
  const { pullImage } = await import('../builder/transfer.js');
  const log = opts.quiet ? undefined : (l: string) => process.stderr.write(l + '\n');
  const got = await pullImage(image, store, { tlsVerify: boolOpt(opts.tlsVerify, 'tls-verify'), authfile: opts.authfile as string | undefined, creds: opts.creds as string | undefined, certDir: opts.certDir as string | undefined, signaturePolicy: opts.signaturePolicy as string | undefined, quiet: !!opts.quiet, signal: rootController.signal, log });
  if (!got) throw new UsageError(`pulled ${image}, but it is not in the local store afterwards`);
  process.stdout.write(got.id.slice(7) + '\n');
}

export async function pushCommand(image: string, dest: string | undefined, opts: Record<string, unknown>, g: Record<string, unknown>): Promise<void> {
  const store = await openStore(g);
  const { pushImage } = await import('../builder/transfer.js');
  const digest = await pushImage(store, image, dest, { tlsVerify: boolOpt(opts.tlsVerify, 'tls-verify'), authfile: opts.authfile as string | undefined, creds: opts.creds as string | undefined, certDir: opts.certDir as string | undefined, quiet: !!opts.quiet, format: opts.format as string | undefined, signal: rootController.signal });
  if (opts.digestfile) await (await import('node:fs/promises')).writeFile(String(opts.digestfile), digest);
  if (!opts.quiet) process.stderr.write(`Pushed ${image}${dest ? ` to ${dest}` : ''} (${digest})\n`);
}
