/** A busybox rootfs for runtime tests (the same tree as the shared base image), built from /bin/busybox. */
import { chmodSync, copyFileSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { requireTool } from '../helpers.js';

export function makeBusyboxRootfs(r: string, opts: { etcExtra?: boolean } = {}): string {
  const bb = requireTool('busybox');
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'root', 'tmp', 'var/tmp', 'proc', 'sys', 'dev', 'home'])
    mkdirSync(join(r, d), { recursive: true });
  copyFileSync(bb, join(r, 'bin/busybox'));
  chmodSync(join(r, 'bin/busybox'), 0o755);
  const applets = execFileSync(bb, ['--list'], { encoding: 'utf8' }).split('\n').filter((a) => a && a !== 'busybox');
  for (const a of applets) symlinkSync('busybox', join(r, 'bin', a));
  chmodSync(join(r, 'tmp'), 0o1777);
  chmodSync(join(r, 'var/tmp'), 0o1777);
  chmodSync(join(r, 'root'), 0o700);
  writeFileSync(join(r, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' + (opts.etcExtra ? 'app:x:1000:1000:app:/home/app:/bin/sh\n' : ''));
  writeFileSync(join(r, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n' + (opts.etcExtra ? 'app:x:1000:\nextra:x:2000:app\n' : ''));
  return r;
}
