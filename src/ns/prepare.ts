/** What every backend needs before it starts a process: user, env, /etc files, validated mounts. */
import { rmSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { TsimageError, UsageError } from '../oci/errors.js';
import { resolveUser, type ExecUser } from './user.js';
import type { Mount, RunOptions } from './types.js';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export type Prepared = {
  user: ExecUser;
  env: string[];
  cwd: string;
  hostname: string;
  /** The /etc files (hosts, hostname, resolv.conf) as bind mounts, then the caller's mounts. */
  mounts: Mount[];
  /** Per-run temp dir (the /etc files); removed by cleanup(). */
  tmp: string;
  cleanup(): Promise<void>;
};

async function hostResolvConf(network: 'none' | 'host'): Promise<string> {
  let text = '';
  try {
    text = await readFile('/etc/resolv.conf', 'utf8');
  } catch {}
  // loopback resolvers (systemd-resolved, dnsmasq) can't be reached from a new network namespace
  const lines = text.split('\n').filter((l) => !(network === 'none' && /^\s*nameserver\s+(127\.|::1)/.test(l)));
  return lines.join('\n').trim() + '\n';
}

export function checkArgv(argv: string[]): void {
  if (!Array.isArray(argv) || argv.length === 0 || !argv[0]) throw new UsageError('run: empty command');
  for (const a of argv) if (typeof a !== 'string' || a.includes('\0')) throw new UsageError(`run: invalid argument ${JSON.stringify(a)}`);
}

/** Per-run temp dirs still in use: removed synchronously if the process exits mid-run (a second SIGINT). */
const liveTmps = new Set<string>();
let exitHooked = false;
function track(tmp: string): void {
  liveTmps.add(tmp);
  if (exitHooked) return;
  exitHooked = true;
  process.on('exit', () => {
    for (const d of liveTmps) rmSync(d, { recursive: true, force: true });
  });
}

/**
 * Rootless runs (a user namespace with subordinate ids via newuidmap/newgidmap) are a known gap
 * (src/ns/README.md): say so instead of failing somewhere inside the helper or runc.
 */
export function requireRoot(): void {
  const euid = process.geteuid?.();
  if (euid !== undefined && euid !== 0)
    throw new TsimageError(
      `running build containers needs root (running as uid ${euid}): rootless mode (user namespaces with newuidmap/newgidmap) is not supported yet; run as root (e.g. sudo)`,
    );
}

export async function prepare(argv: string[], o: RunOptions): Promise<Prepared> {
  checkArgv(argv);
  requireRoot();
  const user = await resolveUser(o.rootfs, o.user);
  const env = [...(o.env ?? [])];
  for (const e of env) if (!e.includes('=') || e.includes('\0')) throw new UsageError(`run: invalid environment entry ${JSON.stringify(e)}`);
  if (!env.some((e) => e.startsWith('PATH='))) env.push(`PATH=${DEFAULT_PATH}`);
  if (!env.some((e) => e.startsWith('HOME='))) env.push(`HOME=${user.home}`);
  const cwd = posix.resolve('/', o.cwd || '/');
  const hostname = o.hostname || 'localhost';
  if (!/^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/.test(hostname)) throw new UsageError(`run: invalid hostname ${JSON.stringify(hostname)}`);
  const network = o.network ?? 'none';
  for (const m of o.mounts ?? []) {
    if (!m.destination || !m.destination.startsWith('/')) throw new UsageError(`run: mount destination must be absolute: ${JSON.stringify(m.destination)}`);
    if (m.type === 'bind' && !m.source) throw new UsageError(`run: bind mount to ${m.destination} needs a source`);
    if (m.type !== 'bind' && m.type !== 'tmpfs') throw new UsageError(`run: unsupported mount type ${(m as { type: string }).type}`);
  }
  const tmp = await mkdtemp(join(tmpdir(), 'tsimage-run-'));
  track(tmp);
  try {
    const hosts = ['127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback', ...(o.extraHosts ?? [])];
    if (hostname !== 'localhost') hosts.push(`127.0.1.1\t${hostname}`);
    await Promise.all([
      writeFile(join(tmp, 'hosts'), hosts.join('\n') + '\n'),
      writeFile(join(tmp, 'hostname'), hostname + '\n'),
      writeFile(join(tmp, 'resolv.conf'), await hostResolvConf(network)),
    ]);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    liveTmps.delete(tmp);
    throw e;
  }
  const etc: Mount[] = ['hosts', 'hostname', 'resolv.conf'].map((f) => ({ type: 'bind', source: join(tmp, f), destination: `/etc/${f}` }));
  // user mounts may cover the /etc files (e.g. a bind of the whole /etc), so they come after
  const user_mounts = [...(o.mounts ?? [])];
  return { user, env, cwd, hostname, mounts: [...etc, ...user_mounts], tmp, cleanup: async () => {
      await rm(tmp, { recursive: true, force: true });
      liveTmps.delete(tmp);
    },
  };
}
