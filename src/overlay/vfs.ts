/**
 * The copy-based storage driver (like buildah's vfs), picked when overlayfs can't be mounted:
 * a snapshot's rootfs is a full copy of its layers (applied bottom-up from the same layer cache,
 * whiteouts and opaque dirs honoured; reflinks where the filesystem has them), and its changes
 * are found by comparing the tree with a record of every entry taken right after the copy
 * (inode + ctime: any write, chmod, chown or replacement changes them).
 */
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  constants as fsc,
  copyFileSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
  type BigIntStats,
} from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import { TsimageError, UsageError } from '../oci/errors.js';
import { extractLayer } from '../oci/extract.js';
import { fileEntry, headerFromStats, packEntries, type TarEntry } from '../oci/tar.js';
import { getXattr, readXattrs, setXattr } from '../oci/xattr.js';
import type { DiffOptions } from './diff.js';
import { BaseSnapshotter } from './snapshotter.js';

const byteCompare = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));
const notOverlay = (n: string) => !n.startsWith('trusted.overlay.');
const isWhiteout = (st: BigIntStats) => st.isCharacterDevice() && st.rdev === 0n;
const sec = (ns: bigint) => Number(ns / 1_000_000_000n);

function lstatB(p: string): BigIntStats | undefined {
  try {
    return lstatSync(p, { bigint: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

function mknod(path: string, st: BigIntStats): void {
  const type = st.isFIFO() ? 'p' : st.isCharacterDevice() ? 'c' : 'b';
  const args = ['-m', (Number(st.mode) & 0o7777).toString(8), path, type];
  if (type !== 'p') {
    const rdev = st.rdev;
    args.push(String(Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn))), String(Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn))));
  }
  const r = spawnSync('mknod', args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new TsimageError(`mknod ${path}: ${r.stderr || r.error?.message}`);
}

function copyMeta(src: string, dst: string, st: BigIntStats): void {
  lchownSync(dst, Number(st.uid), Number(st.gid));
  if (!st.isSymbolicLink()) chmodSync(dst, Number(st.mode) & 0o7777); // after chown, which clears setuid
  for (const [k, v] of readXattrs(src, notOverlay)) {
    try {
      setXattr(dst, k, v);
    } catch {
      /* e.g. user.* on a symlink */
    }
  }
}

/** Apply one cached layer dir (overlay format) onto a full tree. */
export function applyLayerDir(src: string, dst: string): void {
  const links = new Map<string, string>();
  const dirTimes: [string, number, number][] = [];
  const walk = (rel: string) => {
    for (const nm of readdirSync(join(src, rel)).sort(byteCompare)) {
      const r = rel ? `${rel}/${nm}` : nm;
      const s = join(src, r);
      const d = join(dst, r);
      const st = lstatSync(s, { bigint: true });
      let dt = lstatB(d);
      if (isWhiteout(st)) {
        if (dt) rmSync(d, { recursive: true, force: true });
        continue;
      }
      if (st.isDirectory()) {
        if (dt && !dt.isDirectory()) {
          unlinkSync(d);
          dt = undefined;
        }
        if (dt && getXattr(s, 'trusted.overlay.opaque')?.toString() === 'y') {
          rmSync(d, { recursive: true, force: true });
          dt = undefined;
        }
        if (!dt) mkdirSync(d);
        copyMeta(s, d, st);
        walk(r);
        dirTimes.push([d, sec(st.atimeNs), sec(st.mtimeNs)]);
        continue;
      }
      if (dt) rmSync(d, { recursive: true, force: true });
      const key = `${st.dev}:${st.ino}`;
      if (st.nlink > 1n && links.has(key)) {
        linkSync(links.get(key)!, d);
        continue;
      }
      if (st.isFile()) copyFileSync(s, d, fsc.COPYFILE_FICLONE);
      else if (st.isSymbolicLink()) symlinkSync(readlinkSync(s), d);
      else if (st.isFIFO() || st.isCharacterDevice() || st.isBlockDevice()) mknod(d, st);
      else continue;
      copyMeta(s, d, st);
      if (st.isSymbolicLink()) lutimesSync(d, sec(st.atimeNs), sec(st.mtimeNs));
      else utimesSync(d, sec(st.atimeNs), sec(st.mtimeNs));
      if (st.nlink > 1n) links.set(key, d);
    }
  };
  walk('');
  for (const [d, a, m] of dirTimes.reverse()) utimesSync(d, a, m);
}

type Sig = string;
const sigOf = (st: BigIntStats): Sig => `${st.ino}:${st.ctimeNs}:${st.mtimeNs}:${st.mode}:${st.uid}:${st.gid}:${st.size}`;
const inoOf = (sig: Sig) => sig.slice(0, sig.indexOf(':'));

/** Every entry of a tree: rel -> signature (dirs marked with a trailing "/d"). */
function recordTree(root: string): Record<string, Sig> {
  const out: Record<string, Sig> = {};
  const walk = (rel: string) => {
    for (const nm of readdirSync(join(root, rel))) {
      const r = rel ? `${rel}/${nm}` : nm;
      const st = lstatSync(join(root, r), { bigint: true });
      out[r] = sigOf(st) + (st.isDirectory() ? '/d' : '');
      if (st.isDirectory()) walk(r);
    }
  };
  walk('');
  return out;
}

/** The changes of `root` against the recorded lower tree, as tar entries. */
export function* vfsChanges(root: string, lower: Record<string, Sig>): Generator<TarEntry> {
  // pass 1: classify
  const needed = new Set<string>();
  const opaque = new Set<string>();
  const seen = new Set<string>();
  const mark = (r: string) => {
    for (let p = r; p && !needed.has(p); p = p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '') needed.add(p);
  };
  const walk = (rel: string, allNew: boolean) => {
    for (const nm of readdirSync(join(root, rel))) {
      const r = rel ? `${rel}/${nm}` : nm;
      const st = lstatSync(join(root, r), { bigint: true });
      seen.add(r);
      const was = lower[r];
      const isDir = st.isDirectory();
      let sub = allNew;
      if (allNew || was === undefined) mark(r);
      else if (isDir && was.endsWith('/d') && inoOf(was) !== String(st.ino)) {
        // replaced directory: everything below is new, nothing of the old one shows through
        opaque.add(r);
        mark(r);
        sub = true;
      } else if (sigOf(st) + (isDir ? '/d' : '') !== was) mark(r);
      if (isDir) walk(r, sub);
    }
  };
  walk('', false);
  const deleted = new Map<string, string[]>(); // parent rel -> deleted names
  for (const r of Object.keys(lower)) {
    if (seen.has(r)) continue;
    const parent = r.includes('/') ? r.slice(0, r.lastIndexOf('/')) : '';
    if (parent && (!seen.has(parent) || opaque.has(parent) || !lower[parent]?.endsWith('/d'))) continue; // covered above
    if (parent && lower[parent] && inoOf(lower[parent]!) !== String(lstatSync(join(root, parent), { bigint: true }).ino)) continue;
    const list = deleted.get(parent) ?? [];
    list.push(r.slice(parent ? parent.length + 1 : 0));
    deleted.set(parent, list);
    if (parent) mark(parent);
  }
  // pass 2: emit in order
  const links = new Map<string, string>();
  function* emit(rel: string): Generator<TarEntry> {
    const names = new Map<string, 'entry' | 'whiteout'>();
    for (const nm of readdirSync(join(root, rel))) if (needed.has(rel ? `${rel}/${nm}` : nm)) names.set(nm, 'entry');
    for (const nm of deleted.get(rel) ?? []) names.set(nm, 'whiteout');
    for (const nm of [...names.keys()].sort(byteCompare)) {
      const r = rel ? `${rel}/${nm}` : nm;
      if (names.get(nm) === 'whiteout') {
        yield { header: { name: rel ? `${rel}/.wh.${nm}` : `.wh.${nm}`, type: 'file', size: 0, mode: 0 } }; // mode 0 as containers/storage's ExportChanges
        continue;
      }
      const abs = join(root, r);
      const st = lstatSync(abs);
      const h = headerFromStats(r, st, st.isSymbolicLink() ? readlinkSync(abs) : undefined);
      if (!h) continue;
      const x = readXattrs(abs, notOverlay);
      if (x.size) h.xattrs = x;
      if (st.isDirectory()) {
        yield { header: h };
        if (opaque.has(r)) yield { header: { name: `${r}/.wh..wh..opq`, type: 'file', size: 0, mode: st.mode & 0o777, uid: st.uid, gid: st.gid, mtime: h.mtime } };
        yield* emit(r);
        continue;
      }
      yield fileEntry(h, st, abs, links);
    }
  }
  yield* emit('');
}

export class VfsSnapshotter extends BaseSnapshotter {
  readonly driver = 'vfs' as const;

  rootfs(key: string): string {
    return join(this.snapDir(key), 'rootfs');
  }

  async prepare(key: string, parents: Digest[]): Promise<{ rootfs: string }> {
    const dir = await this.newSnapDir(key, parents);
    try {
      const rootfs = join(dir, 'rootfs');
      await mkdir(rootfs);
      for (const p of parents) applyLayerDir(this.layerDir(p), rootfs);
      writeFileSync(join(dir, 'lower.json'), JSON.stringify(recordTree(rootfs)));
      return { rootfs };
    } catch (e) {
      await this.remove(key).catch(() => {});
      throw e;
    }
  }

  diff(key: string, opts: DiffOptions = {}): Readable {
    const dir = this.snapDir(key);
    let lower: Record<string, Sig>;
    try {
      lower = JSON.parse(readFileSync(join(dir, 'lower.json'), 'utf8')) as Record<string, Sig>;
    } catch {
      throw new UsageError(`no snapshot ${key}`);
    }
    return packEntries(vfsChanges(join(dir, 'rootfs'), lower), { mtimeClamp: opts.mtimeClamp, signal: opts.signal });
  }

  async commit(key: string, diffID: Digest): Promise<void> {
    await this.requireSnap(key);
    if (await this.hasLayer(diffID)) return this.remove(key);
    const staged = await this.stagingDir();
    try {
      await extractLayer(this.diff(key), join(staged, 'diff'), { whiteouts: 'overlay' });
      await this.publishLayer(diffID, staged);
    } finally {
      await rm(staged, { recursive: true, force: true });
      await this.remove(key);
    }
  }
}
