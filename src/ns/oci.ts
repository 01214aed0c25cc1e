/**
 * `--isolation oci`: an OCI runtime-spec bundle (config.json) run with runc (crun fails on this
 * machine's hybrid cgroups). The same namespaces, mounts, masked paths, capabilities, rlimits and
 * cgroup limits as the built-in backend, but expressed as a spec and applied by runc.
 */
import { randomBytes } from 'node:crypto';
import { spawnSync, execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { TsimageError } from '../oci/errors.js';
import { DEFAULT_CAPS, normalizeCap } from './caps.js';
import { prepare } from './prepare.js';
import { spawnRuntime } from './spawn.js';
import type { Isolation, RunOptions, RunResult, Runner } from './types.js';

const MASKED = ['/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list', '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware', '/sys/devices/virtual/powercap'];
const READONLY = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

export class OciRunner implements Runner {
  readonly isolation: Isolation = 'oci';
  readonly runtime: string;
  constructor(opts: { runtime?: string } = {}) {
    this.runtime = opts.runtime ?? process.env.TSIMAGE_OCI_RUNTIME ?? 'runc';
  }

  /** The runtime-spec config for a run (exported for tests and `--isolation oci` debugging). */
  static spec(argv: string[], o: RunOptions, p: Awaited<ReturnType<typeof prepare>>): Record<string, unknown> {
    const caps = (o.capabilities ?? DEFAULT_CAPS).map((c) => 'CAP_' + normalizeCap(c));
    const net = (o.network ?? 'none') === 'none';
    const l = o.limits ?? {};
    const resources: Record<string, unknown> = {};
    if (l.memory !== undefined) resources.memory = { limit: l.memory, swap: l.memorySwap ?? l.memory };
    if (l.pids !== undefined) resources.pids = { limit: l.pids };
    if (l.cpus !== undefined || l.cpuShares !== undefined)
      resources.cpu = { ...(l.cpus !== undefined ? { quota: Math.round(l.cpus * 100000), period: 100000 } : {}), ...(l.cpuShares !== undefined ? { shares: l.cpuShares } : {}) };
    return {
      ociVersion: '1.0.2',
      process: {
        terminal: false,
        user: { uid: p.user.uid, gid: p.user.gid, additionalGids: p.user.groups },
        args: argv,
        env: p.env,
        cwd: p.cwd,
        capabilities: { bounding: caps, effective: caps, permitted: caps },
        rlimits: Object.entries(l.rlimits ?? {}).map(([n, [soft, hard]]) => ({
          type: 'RLIMIT_' + n.toUpperCase().replace(/^RLIMIT_/, ''),
          soft: soft < 0 ? 2 ** 64 - 1 : soft,
          hard: hard < 0 ? 2 ** 64 - 1 : hard,
        })),
        noNewPrivileges: o.noNewPrivileges !== false,
      },
      root: { path: o.rootfs, readonly: false },
      hostname: p.hostname,
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
        { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
        { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
        { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
        { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
        net
          ? { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] }
          : { destination: '/sys', type: 'bind', source: '/sys', options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'] },
        ...p.mounts.map((m) =>
          m.type === 'bind'
            ? { destination: m.destination, type: 'bind', source: m.source, options: ['rbind', ...(m.readonly ? ['ro'] : []), ...(m.options ?? [])] }
            : { destination: m.destination, type: 'tmpfs', source: m.source || 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', ...(m.readonly ? ['ro'] : []), ...(m.options ?? [])] },
        ),
      ],
      linux: {
        namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'cgroup' }, ...(net ? [{ type: 'network' }] : [])],
        resources,
        maskedPaths: MASKED,
        readonlyPaths: READONLY,
      },
    };
  }

  async run(argv: string[], o: RunOptions): Promise<RunResult> {
    const p = await prepare(argv, o);
    const id = `tsimage-${process.pid}-${randomBytes(6).toString('hex')}`;
    const bundle = join(p.tmp, 'bundle');
    const state = join(p.tmp, 'state');
    try {
      await mkdir(bundle);
      await mkdir(state);
      await writeFile(join(bundle, 'config.json'), JSON.stringify(OciRunner.spec(argv, o, p)));
      // runc reports exec failures as exit 1 on its stderr: watch it to give 127/126 as a shell would
      let tail = '';
      const target = o.stdio?.stderr;
      const errTap = new Writable({
        write(c: Buffer, _e, cb) {
          tail = (tail + c.toString('utf8')).slice(-4096);
          if (target instanceof Writable) target.write(c, cb);
          else if (target === undefined || target === 'inherit') process.stderr.write(c, () => cb());
          else cb();
        },
      });
      const r = await spawnRuntime(this.runtime, ['--root', state, 'run', '--bundle', bundle, id], { ...o, stdio: { ...o.stdio, stderr: errTap } }, () => {
        spawnSync(this.runtime, ['--root', state, 'kill', id, 'KILL'], { stdio: 'ignore' });
      }, { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' });
      if (r.aborted || r.timedOut) return { exitCode: null, signal: 'SIGKILL', oomKilled: false, timedOut: r.timedOut, aborted: r.aborted };
      if (r.code === null) throw new TsimageError(`${this.runtime} was killed by ${r.signal}`);
      let code = r.code;
      if (code === 1 && /unable to start container process: exec:/.test(tail)) code = /not found|no such file/i.test(tail) ? 127 : 126;
      // (runc run passes a signal death on as exit 128+N, like a shell; the signal itself is not reported)
      return { exitCode: code, signal: null, oomKilled: false, timedOut: false, aborted: false };
    } finally {
      try {
        execFileSync(this.runtime, ['--root', state, 'delete', '--force', id], { stdio: 'ignore' });
      } catch {}
      await p.cleanup();
    }
  }
}

