/**
 * The built-in backend (default) and the chroot backend: the native helper (native/tsimage-run.c)
 * puts the process in new mount, PID, UTS, IPC and cgroup namespaces (plus a network namespace
 * with only `lo` for network none), pivot_root's (or chroot's) into the rootfs with a fresh /proc,
 * a minimal /dev, read-only /sys, runc's masked paths, the /etc files, Docker's default
 * capabilities, no_new_privs, rlimits and cgroup limits, and kills the whole tree on timeout or abort.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:os';
import { TsimageError, UsageError } from '../oci/errors.js';
import { capMask, DEFAULT_CAPS } from './caps.js';
import { createCgroup, oomKilled, removeCgroup } from './cgroups.js';
import { helperPath } from './helper.js';
import { prepare } from './prepare.js';
import { spawnRuntime } from './spawn.js';
import type { Isolation, RunOptions, RunResult, Runner } from './types.js';

const signalName = (n: number): NodeJS.Signals | null =>
  (Object.entries(constants.signals).find(([, v]) => v === n)?.[0] as NodeJS.Signals | undefined) ?? null;

export function rlimitArgs(r: Record<string, [number, number]> | undefined): string[] {
  const out: string[] = [];
  for (const [name, [soft, hard]] of Object.entries(r ?? {})) {
    const n = name.toLowerCase().replace(/^rlimit_/, '');
    if (soft > hard && hard !== -1) throw new UsageError(`rlimit ${name}: soft limit ${soft} is above the hard limit ${hard}`);
    out.push('--rlimit', n, soft < 0 ? 'unlimited' : String(soft), hard < 0 ? 'unlimited' : String(hard));
  }
  return out;
}

export class BuiltinRunner implements Runner {
  readonly isolation: Isolation;
  constructor(opts: { isolation?: 'builtin' | 'chroot' } = {}) {
    this.isolation = opts.isolation ?? 'builtin';
  }

  async run(argv: string[], o: RunOptions): Promise<RunResult> {
    const helper = helperPath();
    const p = await prepare(argv, o);
    let cg: Awaited<ReturnType<typeof createCgroup>>;
    try {
      cg = await createCgroup(`run-${process.pid}-${randomBytes(6).toString('hex')}`, o.limits);
      const args = ['--status-fd', '3', '--rootfs', o.rootfs, '--hostname', p.hostname, '--cwd', p.cwd];
      if (this.isolation === 'chroot') args.push('--mode', 'chroot');
      if ((o.network ?? 'none') === 'none') args.push('--net-none');
      args.push('--user', String(p.user.uid), String(p.user.gid), p.user.groups.join(',') || String(p.user.gid));
      args.push('--caps', capMask(o.capabilities ?? DEFAULT_CAPS));
      if (o.noNewPrivileges !== false) args.push('--no-new-privs');
      for (const e of p.env) args.push('--env', e);
      for (const m of p.mounts) {
        const opts = [...(m.options ?? [])];
        if (m.readonly) opts.push('ro');
        if (m.type === 'tmpfs' && !opts.some((x) => x.startsWith('mode='))) opts.push('mode=1777');
        if (m.type === 'tmpfs') opts.push('nosuid', 'nodev');
        args.push('--mount', m.type, m.type === 'bind' ? m.source : m.source || 'tmpfs', m.destination, opts.join(','));
      }
      args.push(...rlimitArgs(o.limits?.rlimits));
      for (const f of cg?.procs ?? []) args.push('--cgroup-procs', f);
      args.push('--', ...argv);
      const r = await spawnRuntime(helper, args, o, (child) => child.kill('SIGTERM'));
      const line = r.status.trim().split('\n').pop() ?? '';
      const oom = await oomKilled(cg);
      const m = /^(exit|signal|error) (.*)$/s.exec(line);
      if (!m) {
        if (r.aborted || r.timedOut) return { exitCode: null, signal: 'SIGKILL', oomKilled: oom, timedOut: r.timedOut, aborted: r.aborted };
        throw new TsimageError(`container runtime helper ended without a status (exit ${r.code ?? r.signal})`);
      }
      if (m[1] === 'error') throw new TsimageError(`cannot start container: ${m[2]}`);
      if (m[1] === 'exit') return { exitCode: Number(m[2]), signal: null, oomKilled: oom, timedOut: r.timedOut, aborted: r.aborted };
      return { exitCode: null, signal: signalName(Number(m[2])), oomKilled: oom, timedOut: r.timedOut, aborted: r.aborted };
    } finally {
      await removeCgroup(cg!).catch(() => {});
      await p.cleanup();
    }
  }
}
