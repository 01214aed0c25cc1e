/**
 * The changes in an overlayfs upperdir as an OCI layer (buildkit's util/overlay Changes,
 * containers/storage's overlay whiteout converter): new and changed files as they are, a 0/0
 * character device as a `.wh.<name>` whiteout, a directory with trusted.overlay.opaque=y as the
 * directory plus `.wh..wh..opq`; modes, owners, xattrs (not overlay's own), hardlinks within the
 * layer as link entries; depth-first, names in byte order, so the same tree gives the same tar.
 */
import { lstatSync, readdirSync, readlinkSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
// specific modules, not the barrel: keeps the CLIs' start lean (no archive/store/manifest code)
import { TsimageError } from '../oci/errors.js';
import { fileEntry, headerFromStats, packEntries, type TarEntry } from '../oci/tar.js';
import { getXattr, readXattrs } from '../oci/xattr.js';

export type DiffOptions = {
  /** Clamp mtimes to at most this (epoch seconds, SOURCE_DATE_EPOCH). */
  mtimeClamp?: number | undefined;
  signal?: AbortSignal | undefined;
};

const notOverlay = (n: string) => !n.startsWith('trusted.overlay.');
const byteCompare = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));
const mtimeOf = (st: Stats) => Math.floor(st.mtimeMs / 1000);

/** An overlay whiteout: a character device 0/0. */
export const isWhiteout = (st: Stats) => st.isCharacterDevice() && st.rdev === 0;

/** The upperdir's changes as tar entries (for packEntries). */
export function* overlayChanges(upper: string, o: DiffOptions = {}): Generator<TarEntry> {
  const links = new Map<string, string>();
  type Frame = { rel: string; names: string[]; i: number };
  const frames: Frame[] = [{ rel: '', names: readdirSync(upper).sort(byteCompare), i: 0 }];
  while (frames.length) {
    const f = frames[frames.length - 1]!;
    if (f.i >= f.names.length) {
      frames.pop();
      continue;
    }
    o.signal?.throwIfAborted();
    const nm = f.names[f.i++]!;
    const rel = f.rel ? `${f.rel}/${nm}` : nm;
    const abs = join(upper, rel);
    let st: Stats;
    try {
      st = lstatSync(abs);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    if (isWhiteout(st)) {
      const name = f.rel ? `${f.rel}/.wh.${nm}` : `.wh.${nm}`;
      // mode: the device's permission bits (0 for overlay's own whiteouts), as containers/storage and moby write them
      yield { header: { name, type: 'file', size: 0, mode: st.mode & 0o777, uid: st.uid, gid: st.gid, mtime: mtimeOf(st) } };
      continue;
    }
    const h = headerFromStats(rel, st, st.isSymbolicLink() ? readlinkSync(abs) : undefined);
    if (!h) continue; // sockets
    const x = readXattrs(abs, notOverlay);
    if (x.size) h.xattrs = x;
    if (st.isDirectory()) {
      if (getXattr(abs, 'trusted.overlay.redirect'))
        throw new TsimageError(`${rel}: renamed directory (overlay redirect_dir) cannot be diffed; mount with redirect_dir=off`);
      yield { header: h };
      const opaque = getXattr(abs, 'trusted.overlay.opaque');
      if (opaque?.toString() === 'y')
        yield { header: { name: `${rel}/.wh..wh..opq`, type: 'file', size: 0, mode: st.mode & 0o777, uid: st.uid, gid: st.gid, mtime: mtimeOf(st) } };
      frames.push({ rel, names: readdirSync(abs).sort(byteCompare), i: 0 });
      continue;
    }
    if (st.isFile() && getXattr(abs, 'trusted.overlay.metacopy') !== undefined)
      throw new TsimageError(`${rel}: metadata-only copy-up (overlay metacopy) cannot be diffed; mount with metacopy=off`);
    yield fileEntry(h, st, abs, links);
  }
}

/** The upperdir's changes as an uncompressed layer tar stream. */
export function diffUpper(upper: string, o: DiffOptions = {}): Readable {
  return packEntries(overlayChanges(upper, o), { mtimeClamp: o.mtimeClamp, signal: o.signal });
}
