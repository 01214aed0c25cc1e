/**
 * overlayfs mount/umount through util-linux (src/overlay may not depend on src/ns's helper):
 * ~2 ms per mount+umount pair. lowerdir entries are short relative names (symlinks under the layer
 * cache, as containers/storage does) and the mount runs with that directory as its cwd, so deep
 * images (100+ layers) stay inside the one page mount(2) takes for options.
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TsimageError } from '../oci/errors.js';

function run(cmd: string, args: string[], cwd?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, encoding: 'utf8' }, (err, _out, stderr) => {
      if (err) reject(new TsimageError(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`, { cause: err }));
      else resolve();
    });
  });
}

const param = (n: string) => {
  try {
    return readFileSync(`/sys/module/overlay/parameters/${n}`, 'utf8').trim();
  } catch {
    return undefined;
  }
};

/**
 * Mount options beyond lower/upper/work: turn off features whose upperdir encoding our diff
 * can't turn into a layer (renamed-dir redirects, metadata-only copy-ups, the inode index),
 * and `volatile` (no syncs: a snapshot that did not finish is thrown away anyway).
 */
function extraOptions(): string[] {
  const o: string[] = [];
  if (param('redirect_dir') && param('redirect_dir') !== 'N') o.push('redirect_dir=off');
  if (param('metacopy') === 'Y') o.push('metacopy=off');
  if (param('index') === 'Y') o.push('index=off');
  o.push('volatile');
  return o;
}

/** `lowers` top-most first, relative to `cwd` (or absolute). */
export async function mountOverlay(target: string, lowers: string[], upper: string, work: string, cwd: string): Promise<void> {
  const opts = [`lowerdir=${lowers.join(':')}`, `upperdir=${upper}`, `workdir=${work}`, ...extraOptions()].join(',');
  if (opts.length > 4000) throw new TsimageError(`overlay mount options too long (${lowers.length} layers, ${opts.length} bytes)`);
  await run('mount', ['-t', 'overlay', 'overlay', '-o', opts, target], cwd);
}

export function isMounted(target: string): boolean {
  const t = target.replace(/\/+$/, '');
  for (const l of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = l.split(' ')[4];
    if (mp && mp.replace(/\\040/g, ' ') === t) return true;
  }
  return false;
}

/** Unmount (lazily if busy); a path that is not mounted is fine. */
export async function unmount(target: string): Promise<void> {
  if (!isMounted(target)) return;
  try {
    await run('umount', [target]);
  } catch (e) {
    if (!isMounted(target)) return;
    await run('umount', ['-l', target]).catch(() => {
      throw e;
    });
  }
}

export function unmountSync(target: string): void {
  if (!isMounted(target)) return;
  const r = spawnSync('umount', [target], { stdio: 'ignore' });
  if (r.status !== 0) spawnSync('umount', ['-l', target], { stdio: 'ignore' });
}

const bootId = () => {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return undefined;
  }
};

let supported: Promise<boolean> | undefined;
/**
 * Can this process mount overlayfs with upper/work dirs under `dir`? Cached per process, and a
 * success is remembered in `dir/../.overlay-ok` for this boot (saves a probe mount per CLI run).
 */
export function overlaySupported(dir: string): Promise<boolean> {
  supported ??= (async () => {
    if (process.getuid?.() !== 0) return false;
    if (!readFileSync('/proc/filesystems', 'utf8').includes('\toverlay\n')) return false;
    const boot = bootId();
    const mark = join(dir, '..', '.overlay-ok'); // beside dir: snapshot dirs stay the only entries of dir
    try {
      if (boot && readFileSync(mark, 'utf8') === boot) return true;
    } catch {}
    if (!existsSync(dir)) await mkdir(dir, { recursive: true });
    const t = await mkdtemp(join(dir, '.probe-'));
    try {
      for (const d of ['l', 'u', 'w', 'm']) await mkdir(join(t, d));
      await mountOverlay(join(t, 'm'), ['l'], join(t, 'u'), join(t, 'w'), t);
      await unmount(join(t, 'm'));
      if (boot) await writeFile(mark, boot).catch(() => {});
      return true;
    } catch {
      return false;
    } finally {
      unmountSync(join(t, 'm'));
      await rm(t, { recursive: true, force: true });
    }
  })();
  return supported;
}
