/**
 * Safe layer extraction (as containerd's archive.Apply / runc's securejoin):
 *
 * - names are cleaned; a leading "/" is dropped (as GNU tar, moby and containerd do);
 *   a name whose ".." climbs out of the root is refused with TarSecurityError;
 * - parent directories are resolved inside the root without following symlinks out of it:
 *   symlinks met on the way are resolved relative to the root (absolute targets) or to
 *   their directory (relative ones); one that climbs above the root is refused;
 * - the final component is never followed: an existing file, link or symlink there is
 *   replaced, never written through; hardlink targets must resolve inside the root;
 * - symlinks are created verbatim (an absolute target stays a link, never followed);
 * - device nodes need root (allowDevices), otherwise a TarSecurityError names the entry;
 * - xattrs in the trusted.overlay.* namespace are never taken from the archive.
 *
 * Whiteouts: 'apply' deletes `.wh.name` targets and empties a dir for `.wh..wh..opq`
 * (what this layer itself wrote stays); 'overlay' turns them into 0/0 character devices and
 * trusted.overlay.opaque=y (an overlayfs lowerdir); 'keep' writes them as plain files.
 *
 * Any error stops the extraction and names the entry. Directory modes and mtimes are set
 * after their children.
 */
import {
  closeSync,
  fchmodSync,
  fchownSync,
  futimesSync,
  linkSync,
  lchownSync,
  lstatSync,
  lutimesSync,
  chmodSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeSync,
  constants as fsc,
  type Stats,
} from 'node:fs';
import { spawnSync } from 'node:child_process';
import type { Readable } from 'node:stream';
import { TarSecurityError, TsimageError } from './errors.js';
import { CompressionError, decompressStream } from './compress.js';
import { readTar, TarFormatError, type TarReadHeader } from './tar.js';
import { OVERLAY_OPAQUE_XATTR, setXattr } from './xattr.js';

export type WhiteoutMode = 'apply' | 'overlay' | 'keep';

export interface ExtractOptions {
  /** 'apply' (default): onto a merged tree; 'overlay': a standalone overlayfs lowerdir; 'keep': plain files. */
  whiteouts?: WhiteoutMode | undefined;
  /** Create device nodes (default: running as root). */
  allowDevices?: boolean | undefined;
  /** chown entries to their uid/gid (default: running as root). */
  preserveOwners?: boolean | undefined;
  signal?: AbortSignal | undefined;
  /** Called with the number of uncompressed body bytes written so far. */
  onProgress?: ((bytes: number) => void) | undefined;
}

export interface ExtractResult {
  entries: number;
  bytes: number;
}

export const WHITEOUT_PREFIX = '.wh.';
export const WHITEOUT_META_PREFIX = '.wh..wh.';
export const WHITEOUT_OPAQUE = '.wh..wh..opq';

/** An extraction step failed (I/O); the message names the entry. */
export class ExtractError extends TsimageError {
  constructor(
    readonly entry: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

/** Clean an archive name into root-relative components; refuses ".." that climbs out. */
export function safeComponents(name: string, entry: string, what = 'path'): string[] {
  const out: string[] = [];
  if (name.includes('\0')) throw new TarSecurityError(entry, `${what} contains a NUL byte`);
  for (const p of name.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') {
      if (out.length === 0) throw new TarSecurityError(entry, `${what} ${JSON.stringify(name)} escapes the root (..)`);
      out.pop();
      continue;
    }
    out.push(p);
  }
  return out;
}

/**
 * Resolves paths inside a root without leaving it. Caches directories it has verified to be
 * real (not symlinks); the cache is invalidated when the extractor removes a directory.
 */
export class RootResolver {
  private readonly dirs = new Set<string>();
  constructor(readonly root: string) {}

  abs(rel: string): string {
    return rel ? `${this.root}/${rel}` : this.root;
  }

  forget(rel: string): void {
    if (!this.dirs.size) return;
    this.dirs.delete(rel);
    const pre = rel + '/';
    for (const d of this.dirs) if (d.startsWith(pre)) this.dirs.delete(d);
  }

  noteDir(rel: string): void {
    this.dirs.add(rel);
  }

  /**
   * Resolve a parent directory chain (every component is followed and must be a directory
   * or missing) to a real
   * root-relative path. Missing components are kept as they are (they will be created).
   */
  resolve(parts: readonly string[], entry: string): string[] {
    const out: string[] = [];
    const queue = [...parts];
    let hops = 0;
    let missing = false;
    while (queue.length) {
      const c = queue.shift()!;
      if (c === '' || c === '.') continue;
      if (c === '..') {
        if (out.length === 0) throw new TarSecurityError(entry, `path goes through a symlink that escapes the root`);
        out.pop();
        continue;
      }
      const rel = out.length ? `${out.join('/')}/${c}` : c;
      if (missing || this.dirs.has(rel)) {
        out.push(c);
        continue;
      }
      let st: Stats;
      try {
        st = lstatSync(this.abs(rel));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        missing = true;
        out.push(c);
        continue;
      }
      if (st.isSymbolicLink()) {
        if (++hops > 40) throw new TarSecurityError(entry, `too many levels of symbolic links at ${JSON.stringify(rel)}`);
        const target = readlinkSync(this.abs(rel));
        if (target.startsWith('/')) out.length = 0; // absolute: relative to the root
        queue.unshift(...target.split('/'));
        continue;
      }
      if (!st.isDirectory()) throw new ExtractError(entry, `cannot extract ${JSON.stringify(entry)}: ${JSON.stringify(rel)} is not a directory`);
      this.dirs.add(rel);
      out.push(c);
    }
    return out;
  }

  /** Make sure a resolved directory path exists (creating missing parents 0755). */
  ensureDir(parts: readonly string[]): void {
    const rel = parts.join('/');
    if (rel === '' || this.dirs.has(rel)) return;
    mkdirSync(this.abs(rel), { recursive: true, mode: 0o755 });
    for (let i = 1; i <= parts.length; i++) this.dirs.add(parts.slice(0, i).join('/'));
  }
}

function lstatOrUndefined(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function mknod(path: string, type: 'c' | 'b' | 'p', major: number, minor: number, mode: number): void {
  const args = ['-m', (mode & 0o7777).toString(8), path, type];
  if (type !== 'p') args.push(String(major), String(minor));
  const r = spawnSync('mknod', args, { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`mknod failed: ${r.stderr.trim() || `exit code ${r.status}`}`);
}

type DirMeta = { abs: string; mode: number; mtime: number; atime: number };

/**
 * Extract a layer (gzip, zstd or plain tar: detected from its first bytes) into `root`.
 */
export async function extractLayer(src: Readable | AsyncIterable<Uint8Array>, root: string, opts: ExtractOptions = {}): Promise<ExtractResult> {
  const mode: WhiteoutMode = opts.whiteouts ?? 'apply';
  const allowDevices = opts.allowDevices ?? isRoot();
  const preserveOwners = opts.preserveOwners ?? isRoot();
  mkdirSync(root, { recursive: true });
  const rootReal = realpathSync(root);
  const fs = new RootResolver(rootReal);
  fs.noteDir('');
  const writtenSet = new Set<string>(); // root-relative real paths this layer created (and their parents)
  const written = {
    has: (rel: string) => writtenSet.has(rel),
    add: (rel: string) => {
      for (let r = rel; r && !writtenSet.has(r); r = r.slice(0, Math.max(0, r.lastIndexOf('/')))) writtenSet.add(r);
    },
  };
  const dirMeta = new Map<string, DirMeta>();
  let entries = 0;
  let bytes = 0;
  let current = '';

  const dec = decompressStream('auto');
  const input = src as Readable;
  if (typeof input.pipe === 'function') {
    input.on('error', (e) => dec.destroy(e));
    input.pipe(dec);
  } else {
    (async () => {
      try {
        for await (const c of src) if (!dec.write(c)) await new Promise((r) => dec.once('drain', r));
        dec.end();
      } catch (e) {
        dec.destroy(e as Error);
      }
    })();
  }
  const onAbort = () => dec.destroy(opts.signal?.reason as Error);
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  const chown = (p: string, h: TarReadHeader, fd?: number) => {
    if (!preserveOwners) return;
    if (fd !== undefined) fchownSync(fd, h.uid, h.gid);
    else lchownSync(p, h.uid, h.gid);
  };
  const setXattrs = (p: string, h: TarReadHeader, isLink: boolean) => {
    for (const [k, v] of h.xattrs) {
      if (k.startsWith('trusted.overlay.')) continue; // never let an archive steer overlayfs
      try {
        setXattr(p, k, v);
      } catch (err) {
        const m = String((err as Error).message);
        // Not representable here (symlinks take no user.*, no SELinux, unprivileged trusted.*): skip, as tar does.
        if (isLink || /not supported|os error 95|os error 1\b|Operation not permitted/i.test(m) || k.startsWith('security.selinux')) continue;
        throw err;
      }
    }
  };
  /** Remove whatever is at `rel` (no following), forgetting cached dirs below it. */
  const removeAt = (rel: string, st: Stats) => {
    if (st.isDirectory()) {
      rmSync(fs.abs(rel), { recursive: true, force: true });
      fs.forget(rel);
      for (const k of [...dirMeta.keys()]) if (k === rel || k.startsWith(rel + '/')) dirMeta.delete(k);
    } else unlinkSync(fs.abs(rel));
  };
  /** Empty an opaque directory of everything this layer did not write. */
  const makeOpaque = (rel: string) => {
    const walk = (d: string) => {
      let names: string[];
      try {
        names = readdirSync(fs.abs(d));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      for (const n of names) {
        const child = d ? `${d}/${n}` : n;
        const st = lstatSync(fs.abs(child));
        if (!written.has(child)) removeAt(child, st);
        else if (st.isDirectory()) walk(child);
      }
    };
    walk(rel);
  };

  try {
    for await (const { header: h, body } of readTar(dec, { signal: opts.signal })) {
      opts.signal?.throwIfAborted();
      current = h.name;
      entries++;
      const parts = safeComponents(h.name, h.name);
      const base = parts[parts.length - 1];
      const parentParts = base === undefined ? [] : fs.resolve(parts.slice(0, -1), h.name);

      // Whiteouts
      if (base !== undefined && base.startsWith(WHITEOUT_PREFIX) && mode !== 'keep') {
        const parentRel = parentParts.join('/');
        if (base === WHITEOUT_OPAQUE) {
          if (mode === 'apply') makeOpaque(parentRel);
          else {
            fs.ensureDir(parentParts);
            setXattr(fs.abs(parentRel), OVERLAY_OPAQUE_XATTR, 'y');
          }
          continue;
        }
        if (base.startsWith(WHITEOUT_META_PREFIX)) continue; // aufs metadata (.wh..wh.plnk etc.): ignored, as containerd does
        const victim = base.slice(WHITEOUT_PREFIX.length);
        if (victim === '' || victim === '.' || victim === '..')
          throw new TarSecurityError(h.name, `whiteout of ${JSON.stringify(victim)} is not allowed`);
        const rel = parentRel ? `${parentRel}/${victim}` : victim;
        if (mode === 'apply') {
          const st = lstatOrUndefined(fs.abs(rel));
          if (st) removeAt(rel, st);
        } else {
          fs.ensureDir(parentParts);
          const st = lstatOrUndefined(fs.abs(rel));
          if (st) removeAt(rel, st);
          mknod(fs.abs(rel), 'c', 0, 0, 0);
          chown(fs.abs(rel), h);
          lutimesSync(fs.abs(rel), h.atime ?? h.mtime, h.mtime);
          written.add(rel);
        }
        continue;
      }

      const rel = base === undefined ? '' : parentParts.length ? `${parentParts.join('/')}/${base}` : base;
      const abs = fs.abs(rel);
      if (rel === '') {
        // The root itself ("./"): only directory metadata applies.
        if (h.type !== 'directory') throw new TarSecurityError(h.name, `a ${h.type} entry cannot replace the extraction root`);
        chown(abs, h);
        dirMeta.set('', { abs, mode: h.mode, mtime: h.mtime, atime: h.atime ?? h.mtime });
        continue;
      }
      fs.ensureDir(parentParts);
      const existing = lstatOrUndefined(abs);

      switch (h.type) {
        case 'directory': {
          if (existing && !existing.isDirectory()) removeAt(rel, existing);
          if (!existing || !existing.isDirectory()) mkdirSync(abs, { mode: 0o700 });
          fs.noteDir(rel);
          chown(abs, h);
          setXattrs(abs, h, false);
          dirMeta.set(rel, { abs, mode: h.mode, mtime: h.mtime, atime: h.atime ?? h.mtime });
          break;
        }
        case 'file': {
          if (existing) removeAt(rel, existing);
          const fd = openSync(abs, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
          try {
            for await (const chunk of body) {
              let off = 0;
              while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off);
              bytes += chunk.length;
              opts.onProgress?.(bytes);
            }
            chown(abs, h, fd);
            fchmodSync(fd, h.mode);
            setXattrs(abs, h, false);
            futimesSync(fd, h.atime ?? h.mtime, h.mtime);
          } finally {
            closeSync(fd);
          }
          break;
        }
        case 'symlink': {
          if (existing) removeAt(rel, existing);
          symlinkSync(h.linkname, abs);
          chown(abs, h);
          setXattrs(abs, h, true);
          lutimesSync(abs, h.atime ?? h.mtime, h.mtime);
          break;
        }
        case 'link': {
          const tparts = safeComponents(h.linkname, h.name, 'hardlink target');
          const tbase = tparts[tparts.length - 1];
          if (tbase === undefined) throw new TarSecurityError(h.name, `hardlink to the root directory`);
          const tparent = fs.resolve(tparts.slice(0, -1), h.name);
          const trel = tparent.length ? `${tparent.join('/')}/${tbase}` : tbase;
          const tst = lstatOrUndefined(fs.abs(trel));
          if (!tst) throw new ExtractError(h.name, `cannot extract ${JSON.stringify(h.name)}: hardlink target ${JSON.stringify(h.linkname)} does not exist`);
          if (tst.isDirectory()) throw new TarSecurityError(h.name, `hardlink to a directory (${JSON.stringify(h.linkname)})`);
          if (trel === rel) break; // a link to itself: nothing to do
          if (existing) removeAt(rel, existing);
          linkSync(fs.abs(trel), abs);
          break;
        }
        case 'char':
        case 'block':
        case 'fifo': {
          if (h.type !== 'fifo' && !allowDevices)
            throw new TarSecurityError(
              h.name,
              `device node (${h.type} ${h.devmajor}:${h.devminor}) needs root${isRoot() ? ' (devices not allowed)' : ` (running as uid ${process.getuid?.()})`}`,
            );
          if (existing) removeAt(rel, existing);
          mknod(abs, h.type === 'char' ? 'c' : h.type === 'block' ? 'b' : 'p', h.devmajor, h.devminor, h.mode);
          chown(abs, h);
          if (preserveOwners) chmodSync(abs, h.mode); // chown cleared setuid/setgid
          setXattrs(abs, h, false);
          lutimesSync(abs, h.atime ?? h.mtime, h.mtime);
          break;
        }
      }
      written.add(rel);
    }
    // Directory modes and times after their children (deepest first).
    const metas = [...dirMeta.values()].sort((a, b) => b.abs.length - a.abs.length);
    for (const m of metas) {
      current = m.abs;
      chmodSync(m.abs, m.mode);
      lutimesSync(m.abs, m.atime, m.mtime);
    }
    return { entries, bytes };
  } catch (err) {
    input.destroy?.();
    dec.destroy();
    if (opts.signal?.aborted) throw opts.signal.reason ?? err;
    if (err instanceof TarSecurityError || err instanceof ExtractError) throw err;
    if (err instanceof TarFormatError) throw err;
    if (err instanceof CompressionError)
      throw new CompressionError(`${err.message}${current ? ` (in or after entry ${JSON.stringify(current)})` : ''}`, { cause: err });
    const msg = err instanceof Error ? err.message : String(err);
    throw new ExtractError(current, `cannot extract ${JSON.stringify(current)}: ${msg}`, { cause: err });
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}
