/**
 * COPY of the manyfiles context (../shared/peers/gen-context.sh manyfiles: 5,000 small files + a
 * 200 MB file): `COPY files/ /data/files/` and `COPY big.bin /data/big.bin`.
 *  ours: openContext (.dockerignore, stat cache) + planCopy (match + xxh3 hashes = the cache key
 *        inputs) + applyCopy into an empty rootfs dir, cold (empty stat cache, every file read);
 *  peer: `buildah copy` of the same two sources into a working container from scratch (vfs
 *        storage: a plain directory, no mounts; buildah also digests what it adds, for history).
 * Then, informational: our cached-build check of the same step (stat cache warm: no file read).
 *   node dist/bench/buildctx.bench.js      (RUNS=3 WARMUP=1)
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { benchPair, peersDir, summary } from './harness.js';
import { applyCopy, openContext, planCopy } from '../src/builder/index.js';

const PEERS = peersDir();
const runs = Number(process.env.RUNS ?? 3);
const warmup = Number(process.env.WARMUP ?? 1);
const dir = mkdtempSync(join(tmpdir(), 'tsimage-bench-buildctx-'));
const B = ['--root', join(dir, 'storage'), '--runroot', join(dir, 'run'), '--storage-driver', 'vfs'];
const env = { ...process.env, CONTAINERS_CONF: join(PEERS, 'containers.conf') };
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { cwd: dir, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 }).trim();
let ctr = '';

function cleanup(): void {
  try {
    sh('buildah', [...B, 'rm', '--all']);
  } catch (e) {
    console.error(`cleanup: ${(e as Error).message}`);
  }
  rmSync(dir, { recursive: true, force: true });
}

try {
  const ctx = join(dir, 'ctx');
  execFileSync('sh', [join(PEERS, 'gen-context.sh'), 'manyfiles', ctx], { stdio: ['ignore', 'ignore', 'inherit'] });
  let n = 0;
  let rootfs = '';
  const copyOurs = async (cacheDir: string) => {
    const c = await openContext(ctx, { cacheDir });
    for (const [src, dest] of [['files/', '/data/files/'], ['big.bin', '/data/big.bin']] as const) {
      const plan = await planCopy({ kind: 'COPY', srcs: [src], dest }, { context: c });
      await applyCopy(plan, { rootfs, workdir: '/' });
      await plan.dispose();
    }
    await c.save();
  };
  const r = await benchPair({
    name: 'COPY manyfiles (5,000 files + 200 MB), cold',
    runs,
    warmup,
    ours: {
      label: 'tsbuild planCopy+applyCopy',
      before: () => {
        rootfs = join(dir, `ours-${n++}`);
        mkdirSync(rootfs);
      },
      fn: () => copyOurs(join(dir, `cache-${n}`)), // a new stat cache every run: every file is read
      after: () => rmSync(rootfs, { recursive: true, force: true }),
    },
    peer: {
      label: 'buildah copy',
      before: () => {
        ctr = sh('buildah', [...B, 'from', 'scratch']);
      },
      fn: () => {
        sh('buildah', [...B, 'copy', ctr, join(ctx, 'files/'), '/data/files/']);
        sh('buildah', [...B, 'copy', ctr, join(ctx, 'big.bin'), '/data/big.bin']);
      },
      after: () => {
        sh('buildah', [...B, 'rm', ctr]);
        ctr = '';
      },
    },
  });
  summary([r]);
  // informational: the cache check of a rebuild (stat cache warm), what a cached `tsbuild bud` pays for these steps
  const warm = join(dir, 'cache-warm');
  const c0 = await openContext(ctx, { cacheDir: warm });
  await planCopy({ kind: 'COPY', srcs: ['files/'], dest: '/' }, { context: c0 });
  await planCopy({ kind: 'COPY', srcs: ['big.bin'], dest: '/' }, { context: c0 });
  await c0.save();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const c = await openContext(ctx, { cacheDir: warm });
    await planCopy({ kind: 'COPY', srcs: ['files/'], dest: '/' }, { context: c });
    await planCopy({ kind: 'COPY', srcs: ['big.bin'], dest: '/' }, { context: c });
    times.push(performance.now() - t0);
    if (c.counters.filesRead !== 0) throw new Error(`warm plan read ${c.counters.filesRead} files`);
  }
  times.sort((a, b) => a - b);
  console.log(`cache check of both steps with a warm stat cache (no file read): median ${times[Math.floor(times.length / 2)]!.toFixed(0)} ms over ${runs} runs`);
} finally {
  cleanup();
}
