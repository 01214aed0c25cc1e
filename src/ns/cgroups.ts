/**
 * Memory, CPU and pids limits through cgroups, v2 (unified) or v1 (per-controller hierarchies;
 * this machine is hybrid: v1 controllers plus an empty cgroup2 `unified` mount).
 * A run's cgroup is created under the caller's own cgroup (so outer limits and accounting still
 * apply), the helper moves the container's init into it before exec, and it is removed after the
 * run; OOM kills are read from the cgroup before removal.
 */
import { existsSync, readFileSync, rmdirSync } from 'node:fs';
import { mkdir, readFile, readdir, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TsimageError } from '../oci/errors.js';
import type { Limits } from './types.js';

const CG = '/sys/fs/cgroup';

type Layout = { version: 2; root: string; self: string } | { version: 1; mounts: Map<string, string>; self: Map<string, string> };

let layout: Layout | undefined;

function detect(): Layout {
  if (layout) return layout;
  const procSelf = readFileSync('/proc/self/cgroup', 'utf8').split('\n').filter(Boolean);
  if (existsSync(join(CG, 'cgroup.controllers'))) {
    const self = procSelf.find((l) => l.startsWith('0::'))?.slice(3) ?? '/';
    return (layout = { version: 2, root: CG, self });
  }
  const mounts = new Map<string, string>();
  const self = new Map<string, string>();
  for (const l of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const parts = l.split(' ');
    const sep = parts.indexOf('-');
    if (sep < 0 || parts[sep + 1] !== 'cgroup') continue;
    const opts = (parts[sep + 3] ?? '').split(',');
    for (const c of ['memory', 'pids', 'cpu']) if (opts.includes(c) && !mounts.has(c)) mounts.set(c, parts[4]!);
  }
  for (const l of procSelf) {
    const [, ctrls = '', path = '/'] = l.split(':');
    for (const c of ctrls.split(',')) self.set(c, path);
  }
  return (layout = { version: 1, mounts, self });
}

export type CgroupHandle = { procs: string[]; dirs: string[]; memoryEvents?: string; version: 1 | 2 };

const want = (l: Limits) => l.memory !== undefined || l.pids !== undefined || l.cpus !== undefined || l.cpuShares !== undefined;

/** Cgroups of runs in progress: removed (best effort, synchronously) if the process exits mid-run. */
const live = new Set<CgroupHandle>();
let exitHooked = false;
function track(h: CgroupHandle): void {
  live.add(h);
  if (exitHooked) return;
  exitHooked = true;
  process.on('exit', () => {
    for (const x of live) for (const d of [...x.dirs].reverse()) try { rmdirSync(d); } catch {}
  });
}

const pidAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

const swept = new Set<string>();
/** Remove empty run cgroups (`run-<pid>-<hex>`) whose creating process is gone (a crash, an immediate exit). */
async function sweepStale(parent: string): Promise<void> {
  if (swept.has(parent)) return;
  swept.add(parent);
  for (const n of await readdir(parent).catch(() => [] as string[])) {
    const m = /^run-(\d+)-[0-9a-f]+$/.exec(n);
    if (m && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]))) await rmdir(join(parent, n)).catch(() => {});
  }
}

/** Create the run's cgroup(s) with the limits; undefined when no cgroup limit was asked for. */
export async function createCgroup(id: string, limits: Limits | undefined): Promise<CgroupHandle | undefined> {
  if (!limits || !want(limits)) return undefined;
  const lay = detect();
  const h: CgroupHandle = { procs: [], dirs: [], version: lay.version };
  track(h);
  try {
    if (lay.version === 2) {
      // v2: no processes in inner nodes, so a tsimage node beside (not under) our own cgroup's processes
      const parent = join(lay.root, 'tsimage');
      await mkdir(parent, { recursive: true });
      await sweepStale(parent);
      const ctrls = ['+memory', '+pids', '+cpu'];
      for (const c of ctrls) await writeFile(join(lay.root, 'cgroup.subtree_control'), c).catch(() => {});
      for (const c of ctrls) await writeFile(join(parent, 'cgroup.subtree_control'), c).catch(() => {});
      const dir = join(parent, id);
      await mkdir(dir);
      h.dirs.push(dir);
      h.procs.push(join(dir, 'cgroup.procs'));
      h.memoryEvents = join(dir, 'memory.events');
      if (limits.memory !== undefined) {
        await writeFile(join(dir, 'memory.max'), String(limits.memory));
        const swap = limits.memorySwap === undefined ? 0 : limits.memorySwap < 0 ? 'max' : Math.max(0, limits.memorySwap - limits.memory);
        await writeFile(join(dir, 'memory.swap.max'), String(swap)).catch(() => {});
      }
      if (limits.pids !== undefined) await writeFile(join(dir, 'pids.max'), String(limits.pids));
      if (limits.cpus !== undefined) await writeFile(join(dir, 'cpu.max'), `${Math.round(limits.cpus * 100000)} 100000`);
      if (limits.cpuShares !== undefined) await writeFile(join(dir, 'cpu.weight'), String(Math.max(1, Math.min(10000, Math.round(1 + ((limits.cpuShares - 2) * 9999) / 262142)))));
      return h;
    }
    const make = async (ctrl: string): Promise<string> => {
      const mnt = lay.mounts.get(ctrl);
      if (!mnt) throw new TsimageError(`cgroup v1 controller ${ctrl} is not mounted; cannot apply the ${ctrl} limit`);
      const dir = join(mnt, lay.self.get(ctrl) ?? '/', 'tsimage', id);
      await mkdir(dir, { recursive: true });
      await sweepStale(join(dir, '..'));
      h.dirs.push(dir);
      h.procs.push(join(dir, 'cgroup.procs'));
      return dir;
    };
    if (limits.memory !== undefined) {
      const dir = await make('memory');
      await writeFile(join(dir, 'memory.limit_in_bytes'), String(limits.memory));
      const sw = limits.memorySwap ?? limits.memory;
      if (existsSync(join(dir, 'memory.memsw.limit_in_bytes'))) await writeFile(join(dir, 'memory.memsw.limit_in_bytes'), String(sw < 0 ? -1 : sw));
      h.memoryEvents = join(dir, 'memory.oom_control');
    }
    if (limits.pids !== undefined) await writeFile(join(await make('pids'), 'pids.max'), String(limits.pids));
    if (limits.cpus !== undefined || limits.cpuShares !== undefined) {
      const dir = await make('cpu');
      if (limits.cpus !== undefined) {
        await writeFile(join(dir, 'cpu.cfs_period_us'), '100000');
        await writeFile(join(dir, 'cpu.cfs_quota_us'), String(Math.max(1000, Math.round(limits.cpus * 100000))));
      }
      if (limits.cpuShares !== undefined) await writeFile(join(dir, 'cpu.shares'), String(limits.cpuShares));
    }
    return h;
  } catch (e) {
    await removeCgroup(h);
    if (e instanceof TsimageError) throw e;
    throw new TsimageError(`cannot set up cgroup limits: ${(e as Error).message}`, { cause: e });
  }
}

/** Did the kernel OOM-kill something in this cgroup? */
export async function oomKilled(h: CgroupHandle | undefined): Promise<boolean> {
  if (!h?.memoryEvents) return false;
  try {
    const t = await readFile(h.memoryEvents, 'utf8');
    const m = /^oom_kill (\d+)/m.exec(t);
    return !!m && Number(m[1]) > 0;
  } catch {
    return false;
  }
}

/** Remove the cgroup dirs (retrying while killed processes finish exiting). */
export async function removeCgroup(h: CgroupHandle | undefined): Promise<void> {
  if (!h) return;
  live.delete(h);
  for (const dir of h.dirs.reverse()) {
    for (let i = 0; ; i++) {
      try {
        await rmdir(dir);
        break;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        if (i >= 100) throw new TsimageError(`cannot remove cgroup ${dir}: ${(e as Error).message}`, { cause: e });
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  }
}
