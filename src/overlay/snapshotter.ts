/**
 * The snapshotter: a layer cache (each layer unpacked once, by diffID, with overlay-style
 * whiteouts: 0/0 character devices and trusted.overlay.opaque) and snapshots stacked on it.
 *
 * Layout under the state root:
 *   layers/<hex>/diff      a layer's files (overlay lowerdir format)
 *   layers/l/<short>       -> ../<hex>/diff (short lowerdir names, as containers/storage does)
 *   layers/.tmp-<pid>-*    staging while unpacking or committing (renamed into place)
 *   containers/<key>/      a snapshot: owner (pid + start time), upper/, work/, merged/ (overlay)
 *                          or rootfs/ + lower.json (vfs)
 *   containers/.new-<key>-<pid>_<start>   a snapshot being created (owner written, then renamed to <key>)
 * Snapshots whose owner process is gone (a crash, SIGKILL) are unmounted and removed when the
 * next snapshotter opens the same root; this process's own are removed on exit.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { mkdir, readFile, readdir, readlink, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decompressStream } from '../oci/compress.js';
import { isDigest, type Digest } from '../oci/digest.js';
import { DigestMismatchError, TsimageError, UsageError } from '../oci/errors.js';
import { extractLayer } from '../oci/extract.js';
import type { Io } from '../oci/io.js';
import { HashingStream } from '../oci/layer.js';
import { defaultRoot } from '../oci/paths.js';
import { diffUpper, type DiffOptions } from './diff.js';
import { isMounted, mountOverlay, overlaySupported, unmount, unmountSync } from './mount.js';
import { ownerAlive, ownerStamp } from './owner.js';
import type { Driver, Snapshotter, SnapshotterOptions } from './types.js';

const KEY_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const hexOf = (d: Digest) => d.slice(d.indexOf(':') + 1);

function checkKey(key: string): void {
  if (!KEY_RE.test(key)) throw new UsageError(`invalid snapshot key ${JSON.stringify(key)} (letters, digits, _ . -; up to 128)`);
}

function checkDigest(d: string): asserts d is Digest {
  if (!isDigest(d) || !d.startsWith('sha256:')) throw new UsageError(`invalid layer diffID ${JSON.stringify(d)}`);
}

export abstract class BaseSnapshotter implements Snapshotter {
  abstract readonly driver: Driver;
  readonly layersDir: string;
  readonly containersDir: string;
  protected readonly active = new Set<string>();
  private exitHook?: () => void;

  constructor(readonly root: string) {
    this.layersDir = join(root, 'layers');
    this.containersDir = join(root, 'containers');
  }

  /** Create the dirs and clean what dead processes left behind. */
  async init(): Promise<this> {
    await mkdir(join(this.layersDir, 'l'), { recursive: true });
    await mkdir(this.containersDir, { recursive: true });
    await mkdir(join(this.layersDir, 'empty'), { recursive: true });
    await this.cleanupLeftovers();
    return this;
  }

  async cleanupLeftovers(): Promise<string[]> {
    const removed: string[] = [];
    for (const name of await readdir(this.containersDir).catch(() => [] as string[])) {
      const dir = join(this.containersDir, name);
      // a snapshot being created (newSnapDir) names its owner; else the owner file says
      const creating = /^\.new-.*-(\d+)_(\d+)$/.exec(name);
      const owner = creating ? `${creating[1]} ${creating[2]}` : await readFile(join(dir, 'owner'), 'utf8').catch(() => undefined);
      if (ownerAlive(owner)) continue;
      if (isMounted(join(dir, 'merged'))) await unmount(join(dir, 'merged'));
      await rm(dir, { recursive: true, force: true });
      removed.push(dir);
    }
    for (const name of await readdir(this.layersDir).catch(() => [] as string[])) {
      const m = /^\.tmp-(\d+ \d+)-/.exec(name.replace(/_/, ' '));
      if (!name.startsWith('.tmp-')) continue;
      if (m && ownerAlive(m[1])) continue;
      await rm(join(this.layersDir, name), { recursive: true, force: true });
      removed.push(join(this.layersDir, name));
    }
    return removed;
  }

  layerDir(diffID: Digest): string {
    return join(this.layersDir, hexOf(diffID), 'diff');
  }

  async hasLayer(diffID: Digest): Promise<boolean> {
    checkDigest(diffID);
    return existsSync(this.layerDir(diffID));
  }

  protected async stagingDir(): Promise<string> {
    const d = join(this.layersDir, `.tmp-${ownerStamp().replace(' ', '_')}-${randomBytes(4).toString('hex')}`);
    await mkdir(d);
    return d;
  }

  /** Move a staged layer (dir containing diff/) into place, plus its short link. */
  protected async publishLayer(diffID: Digest, staged: string): Promise<void> {
    const final = join(this.layersDir, hexOf(diffID));
    const short = hexOf(diffID).slice(0, 16);
    await writeFile(join(staged, 'link'), short);
    try {
      await rename(staged, final);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // someone else unpacked the same layer first: theirs is as good as ours
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
      await rm(staged, { recursive: true, force: true });
    }
    const link = join(this.layersDir, 'l', short);
    try {
      await symlink(`../${hexOf(diffID)}/diff`, link);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      if ((await readlink(link)) !== `../${hexOf(diffID)}/diff`) throw new TsimageError(`layer cache: short name ${short} is taken by another layer`);
    }
  }

  async addLayer(diffID: Digest, blob: Readable | AsyncIterable<Uint8Array>, io: Io = {}): Promise<void> {
    checkDigest(diffID);
    if (await this.hasLayer(diffID)) {
      (blob as Readable).destroy?.();
      return;
    }
    const staged = await this.stagingDir();
    try {
      const h = new HashingStream(io.onProgress);
      const tee = new PassThrough({ highWaterMark: 1 << 20 });
      const piping = pipeline(blob, decompressStream('auto'), h, tee, { signal: io.signal });
      const extracting = extractLayer(tee, join(staged, 'diff'), { whiteouts: 'overlay', signal: io.signal });
      const [p, x] = await Promise.allSettled([piping, extracting]);
      if (p.status === 'rejected') throw p.reason;
      if (x.status === 'rejected') throw x.reason;
      const got = h.hasher.digest();
      if (got !== diffID) throw new DigestMismatchError(diffID, got, `layer ${diffID} (uncompressed)`);
      await this.publishLayer(diffID, staged);
    } finally {
      await rm(staged, { recursive: true, force: true });
    }
  }

  protected snapDir(key: string): string {
    checkKey(key);
    return join(this.containersDir, key);
  }

  protected async newSnapDir(key: string, parents: Digest[]): Promise<string> {
    const dir = this.snapDir(key);
    for (const p of parents) {
      checkDigest(p);
      if (!(await this.hasLayer(p))) throw new TsimageError(`layer ${p} is not in the layer cache (${this.layersDir}); add it first`);
    }
    // The dir appears under its name with its owner file already inside (staged, then renamed): another process's
    // or build's cleanupLeftovers() takes a dir without an owner for a dead one, and removed snapshots being created.
    const exists = () => new UsageError(`snapshot ${key} already exists`);
    if (existsSync(dir)) throw exists();
    const staged = join(this.containersDir, `.new-${key}-${ownerStamp().replace(' ', '_')}`);
    await mkdir(staged);
    try {
      await writeFile(join(staged, 'owner'), ownerStamp());
      await writeFile(join(staged, 'parents.json'), JSON.stringify(parents));
      await rename(staged, dir);
    } catch (e) {
      await rm(staged, { recursive: true, force: true });
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' || code === 'ENOTEMPTY') throw exists();
      throw e;
    }
    this.active.add(key);
    this.hookExit();
    return dir;
  }

  protected async requireSnap(key: string): Promise<string> {
    const dir = this.snapDir(key);
    if (!existsSync(join(dir, 'owner'))) throw new UsageError(`no snapshot ${key}`);
    return dir;
  }

  abstract prepare(key: string, parents: Digest[], io?: Io): Promise<{ rootfs: string }>;
  abstract rootfs(key: string): string;
  abstract diff(key: string, opts?: DiffOptions): Readable;
  abstract commit(key: string, diffID: Digest): Promise<void>;

  async remove(key: string): Promise<void> {
    const dir = this.snapDir(key);
    const merged = join(dir, 'merged');
    if (isMounted(merged)) await unmount(merged);
    await rm(dir, { recursive: true, force: true });
    this.active.delete(key);
  }

  async close(): Promise<void> {
    for (const k of [...this.active]) await this.remove(k);
    if (this.exitHook) process.removeListener('exit', this.exitHook);
    this.exitHook = undefined;
  }

  /** Last resort on process.exit(): unmount and delete what is still active (synchronously). */
  private hookExit(): void {
    if (this.exitHook) return;
    this.exitHook = () => {
      for (const k of this.active) {
        const dir = join(this.containersDir, k);
        unmountSync(join(dir, 'merged'));
        rmSync(dir, { recursive: true, force: true });
      }
    };
    process.on('exit', this.exitHook);
  }
}

export class OverlaySnapshotter extends BaseSnapshotter {
  readonly driver = 'overlay' as const;

  rootfs(key: string): string {
    return join(this.snapDir(key), 'merged');
  }

  async prepare(key: string, parents: Digest[]): Promise<{ rootfs: string }> {
    const dir = await this.newSnapDir(key, parents);
    try {
      for (const d of ['upper', 'work', 'merged']) await mkdir(join(dir, d));
      const lowers: string[] = [];
      for (const p of [...parents].reverse()) lowers.push(`l/${(await readFile(join(this.layersDir, hexOf(p), 'link'), 'utf8')).trim()}`);
      if (!lowers.length) lowers.push('empty');
      await mountOverlay(join(dir, 'merged'), lowers, join(dir, 'upper'), join(dir, 'work'), this.layersDir);
      return { rootfs: join(dir, 'merged') };
    } catch (e) {
      await this.remove(key).catch(() => {});
      throw e;
    }
  }

  diff(key: string, opts: DiffOptions = {}): Readable {
    const upper = join(this.snapDir(key), 'upper');
    if (!existsSync(upper)) throw new UsageError(`no snapshot ${key}`);
    return diffUpper(upper, opts);
  }

  async commit(key: string, diffID: Digest): Promise<void> {
    checkDigest(diffID);
    const dir = await this.requireSnap(key);
    if (await this.hasLayer(diffID)) return this.remove(key);
    const merged = join(dir, 'merged');
    if (isMounted(merged)) await unmount(merged);
    const staged = await this.stagingDir();
    try {
      await rename(join(dir, 'upper'), join(staged, 'diff'));
      await this.publishLayer(diffID, staged);
    } finally {
      await rm(staged, { recursive: true, force: true });
      await this.remove(key);
    }
  }
}

/** Open (and clean up) a snapshotter; `driver: 'auto'` picks overlay when it works here, else vfs with a notice. */
export async function openSnapshotter(o: SnapshotterOptions = {}): Promise<Snapshotter> {
  const root = o.root ?? defaultRoot();
  let driver = o.driver ?? (process.env.TSIMAGE_STORAGE_DRIVER as Driver | undefined) ?? 'auto';
  if (driver !== 'auto' && driver !== 'overlay' && driver !== 'vfs') throw new UsageError(`unknown storage driver ${JSON.stringify(driver)} (expected overlay or vfs)`);
  if (driver === 'auto' || driver === 'overlay') {
    const ok = await overlaySupported(join(root, 'containers'));
    if (!ok && driver === 'overlay') throw new TsimageError(`overlayfs is not available here (need root and overlay support on ${root}); use --storage-driver vfs`);
    if (!ok) (o.notice ?? ((m: string) => process.stderr.write(m + '\n')))(`notice: overlayfs is not available under ${root}; using the copy-based vfs storage driver (slower)`);
    driver = ok ? 'overlay' : 'vfs';
  }
  if (driver === 'overlay') return new OverlaySnapshotter(root).init();
  const { VfsSnapshotter } = await import('./vfs.js');
  return new VfsSnapshotter(root).init();
}

