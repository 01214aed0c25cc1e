/**
 * Bench harness: runs our command and the peer's on the same work in one run, alternating
 * (so machine noise hits both alike), and prints min/median/max and the median ratio.
 *
 *   await benchPair({ name: 'sha256 1 GiB', runs: 5,
 *     ours: { label: 'tsimage', cmd: ['node', 'x.js', file] },
 *     peer: { label: 'sha256sum', cmd: ['sha256sum', file] },
 *     before: () => {...} });   // before each timed run of either side (not timed)
 *
 * A side may be a command (argv, run with spawnSync) or an async function.
 *
 * CPU: for command sides, the CPU seconds (user+sys) the command used are read from this process's reaped-children
 * times (/proc/self/stat cutime+cstime, 10 ms ticks), and, when the pair names `servers` (PIDs of processes serving
 * the work, e.g. registries), theirs too. The report then shows both medians and the wall time that much CPU needs
 * at the least on this machine's cores: (command + servers) / cores. A case whose floor is near the peer's time
 * cannot be made much faster by the command alone.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';

export type Side = {
  label: string;
  cmd?: string[] | (() => string[]);
  fn?: () => Promise<void> | void;
  /** Untimed preparation before each run of this side. */
  before?: () => Promise<void> | void;
  /** Untimed clean-up after each run of this side. */
  after?: () => Promise<void> | void;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
};

export type PairResult = {
  name: string;
  ours: Stats;
  peer: Stats;
  /** ours.median / peer.median: below 1 means we are faster. */
  ratio: number;
};

export type Stats = {
  label: string;
  min: number;
  median: number;
  max: number;
  runs: number[];
  /** Median CPU seconds of the command itself (command sides only) and of the pair's servers during its runs. */
  cpu?: { own: number; servers?: number | undefined } | undefined;
};

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

type Run = { secs: number; own?: number | undefined; servers?: number | undefined };

function stats(label: string, runs: Run[]): Stats {
  const secs = runs.map((r) => r.secs);
  const own = runs.every((r) => r.own !== undefined) ? median(runs.map((r) => r.own!)) : undefined;
  const servers = runs.every((r) => r.servers !== undefined) ? median(runs.map((r) => r.servers!)) : undefined;
  return { label, min: Math.min(...secs), median: median(secs), max: Math.max(...secs), runs: secs, cpu: own === undefined ? undefined : { own, servers } };
}

const TICK = 0.01; // USER_HZ is 100 on Linux

/** A process's utime+stime, or with `children` its cutime+cstime (its reaped children's), in seconds; undefined if it is gone. */
function cpuOf(pid: number | 'self', children = false): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // fields after the ")" that closes the command name: state is field 3, utime 14, stime 15, cutime 16, cstime 17
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const at = children ? 13 : 11;
  return (Number(f[at]) + Number(f[at + 1])) * TICK;
}

const serversCpu = (pids: number[] | undefined) => {
  if (!pids?.length) return undefined;
  let sum = 0;
  for (const p of pids) {
    const c = cpuOf(p);
    if (c === undefined) return undefined;
    sum += c;
  }
  return sum;
};

async function once(side: Side, servers?: number[]): Promise<Run> {
  await side.before?.();
  const c0 = cpuOf('self', true);
  const s0 = serversCpu(servers);
  const t0 = process.hrtime.bigint();
  if (side.cmd) {
    const argv = typeof side.cmd === 'function' ? side.cmd() : side.cmd;
    const r = spawnSync(argv[0]!, argv.slice(1), {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: side.env ?? process.env,
      cwd: side.cwd,
      maxBuffer: 64 * 1024 * 1024,
    });
    if (r.status !== 0) throw new Error(`${side.label}: ${argv.join(' ')} exited ${r.status ?? r.signal}: ${r.stderr?.toString().slice(-2000)}`);
  } else if (side.fn) {
    await side.fn();
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const s1 = serversCpu(servers);
  const own = side.cmd && c0 !== undefined ? cpuOf('self', true)! - c0 : undefined;
  await side.after?.();
  return { secs, own, servers: s0 !== undefined && s1 !== undefined ? s1 - s0 : undefined };
}

const fmt = (s: number) => (s < 1 ? `${(s * 1000).toFixed(1)} ms` : `${s.toFixed(3)} s`);

export async function benchPair(o: {
  name: string;
  runs?: number;
  warmup?: number;
  ours: Side;
  peer: Side;
  /** PIDs of processes serving both sides' work (registries): their CPU is measured per run too. */
  servers?: number[];
}): Promise<PairResult> {
  const runs = o.runs ?? Number(process.env.RUNS ?? 5);
  const warmup = o.warmup ?? Number(process.env.WARMUP ?? 1);
  for (let i = 0; i < warmup; i++) {
    await once(o.ours);
    await once(o.peer);
  }
  const a: Run[] = [];
  const b: Run[] = [];
  for (let i = 0; i < runs; i++) {
    // alternate which side goes first
    if (i % 2 === 0) {
      a.push(await once(o.ours, o.servers));
      b.push(await once(o.peer, o.servers));
    } else {
      b.push(await once(o.peer, o.servers));
      a.push(await once(o.ours, o.servers));
    }
  }
  const ours = stats(o.ours.label, a);
  const peer = stats(o.peer.label, b);
  const res: PairResult = { name: o.name, ours, peer, ratio: ours.median / peer.median };
  report(res);
  return res;
}

const CORES = availableParallelism();

export function report(r: PairResult): void {
  const line = (s: Stats) => `  ${s.label.padEnd(22)} min ${fmt(s.min).padStart(10)}  median ${fmt(s.median).padStart(10)}  max ${fmt(s.max).padStart(10)}  (n=${s.runs.length})${cpuText(s)}`;
  console.log(`${r.name}\n${line(r.ours)}\n${line(r.peer)}\n  ratio ${r.ours.label}/${r.peer.label} (median): ${r.ratio.toFixed(3)}x`);
}

function cpuText(s: Stats): string {
  if (!s.cpu) return '';
  const { own, servers } = s.cpu;
  if (servers === undefined) return `  cpu ${own.toFixed(2)} s`;
  return `  cpu ${own.toFixed(2)} s + servers ${servers.toFixed(2)} s (floor ${fmt((own + servers) / CORES)} on ${CORES} cores)`;
}

/** Print a one-line summary table of several results (for notes). */
export function summary(results: PairResult[]): void {
  console.log('\nsummary (median ratio, ours/peer; < 1 is faster):');
  for (const r of results) console.log(`  ${r.name.padEnd(50)} ${r.ratio.toFixed(3)}x  (${fmt(r.ours.median)} vs ${fmt(r.peer.median)})`);
}

/** ../shared/peers beside the checkout (or above it, for worktrees nested deeper, e.g. /work/wt/<name>). */
export function peersDir(): string {
  let dir = new URL('../../', import.meta.url).pathname; // dist/bench -> repo root
  for (;;) {
    const parent = new URL('..', `file://${dir.endsWith('/') ? dir : dir + '/'}`).pathname;
    if (existsSync(`${parent}shared/peers`)) return `${parent}shared/peers`;
    if (parent === dir || parent === '/') throw new Error('cannot find ../shared/peers (make-base.sh, gen-context.sh) above the checkout');
    dir = parent;
  }
}

/** A containers-storage.conf in `dir` (overlay driver, graph and run roots under `dir`) and the env that makes buildah/podman use it. */
export function peerStorageEnv(dir: string): NodeJS.ProcessEnv {
  const conf = join(dir, 'storage.conf');
  writeFileSync(conf, `[storage]\ndriver = "overlay"\ngraphroot = "${dir}/graph"\nrunroot = "${dir}/run"\n`);
  return { ...process.env, CONTAINERS_STORAGE_CONF: conf };
}

/** Lazily unmount every mount below `dir` (the last mounted first), then remove `dir`. */
export function unmountAndRemove(dir: string): void {
  const left = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((p) => p.startsWith(dir))
    .reverse();
  for (const p of left) execFileSync('umount', ['-l', p]);
  rmSync(dir, { recursive: true, force: true });
}
