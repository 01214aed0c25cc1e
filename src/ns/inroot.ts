/**
 * Resolve a path inside a root directory the way the kernel would after chroot: absolute
 * symlinks restart at the root and `..` never climbs above it. For reading image files
 * (/etc/passwd) from the host side without following a hostile symlink out of the rootfs.
 */
import { lstat, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { TsimageError } from '../oci/errors.js';

export async function resolveInRoot(root: string, path: string, maxLinks = 40): Promise<string> {
  const todo = path.split('/').filter((c) => c && c !== '.');
  const done: string[] = [];
  let links = 0;
  while (todo.length) {
    const c = todo.shift()!;
    if (c === '..') {
      done.pop();
      continue;
    }
    const p = join(root, ...done, c);
    let st;
    try {
      st = await lstat(p);
    } catch {
      done.push(c, ...todo);
      return join(root, ...done);
    }
    if (st.isSymbolicLink()) {
      if (++links > maxLinks) throw new TsimageError(`too many levels of symbolic links resolving ${path} in ${root}`);
      const t = await readlink(p);
      if (t.startsWith('/')) done.length = 0;
      todo.unshift(...t.split('/').filter((x) => x && x !== '.'));
    } else done.push(c);
  }
  return join(root, ...done);
}
