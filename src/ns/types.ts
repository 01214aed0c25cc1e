/** The build container runtime's public types: one Runner interface, three backends. */
import type { Readable, Writable } from 'node:stream';

/** A mount inside the container. `destination` is resolved inside the rootfs (symlinks can't escape it). */
export type Mount =
  | { type: 'bind'; source: string; destination: string; readonly?: boolean; options?: string[] }
  | { type: 'tmpfs'; source?: string; destination: string; readonly?: boolean; options?: string[] };

/** Resource limits. Memory in bytes; cpus as a fraction of CPUs (1.5 = 150% of one CPU). */
export type Limits = {
  memory?: number;
  /** memory + swap in bytes (-1 = unlimited); default: equal to `memory` (no swap use). */
  memorySwap?: number;
  cpus?: number;
  /** Relative CPU weight (cgroup v1 cpu.shares, 2..262144). */
  cpuShares?: number;
  pids?: number;
  /** rlimits by name (nofile, nproc, core, stack, ...): [soft, hard]; -1 = unlimited. */
  rlimits?: Record<string, [number, number]>;
};

export type StdioIn = 'ignore' | 'inherit' | Readable | number;
export type StdioOut = 'ignore' | 'inherit' | Writable | number;

export type Isolation = 'builtin' | 'chroot' | 'oci';

export type RunOptions = {
  /** The container's root directory (an overlay mount from src/overlay, or any directory). */
  rootfs: string;
  /** KEY=VALUE; PATH and HOME get Docker's defaults when missing. */
  env?: string[];
  /** Working directory inside the container (default /). */
  cwd?: string;
  /** user[:group] by name (from the image's /etc/passwd and /etc/group) or number (default root). */
  user?: string;
  hostname?: string;
  /** none: a new network namespace with only `lo` (default); host: the host's network. */
  network?: 'none' | 'host';
  mounts?: Mount[];
  stdio?: { stdin?: StdioIn; stdout?: StdioOut; stderr?: StdioOut };
  limits?: Limits;
  /** Milliseconds; the whole process tree is killed when it passes. */
  timeout?: number;
  /** Aborting kills the whole process tree. */
  signal?: AbortSignal;
  /** Capability names (CAP_CHOWN or CHOWN); default: Docker's default set. */
  capabilities?: string[];
  /** Default true. */
  noNewPrivileges?: boolean;
  /** Extra /etc/hosts lines ("1.2.3.4 name"). */
  extraHosts?: string[];
};

export type RunResult = {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** The memory cgroup recorded an OOM kill. */
  oomKilled: boolean;
  /** The timeout fired (the tree was killed). */
  timedOut: boolean;
  /** The signal aborted the run (the tree was killed). */
  aborted: boolean;
};

export interface Runner {
  readonly isolation: Isolation;
  run(argv: string[], opts: RunOptions): Promise<RunResult>;
}
