/**
 * Start-to-exit latency of `true` in a build container (busybox base image):
 *  1. a step on an existing rootfs: our BuiltinRunner (namespaces, pivot_root, /proc, /dev, caps,
 *     network none) vs `buildah run --isolation oci` (runc, --network none) and
 *     `buildah run --isolation chroot` on a working container;
 *  2. a container made and removed around the command: our overlay snapshot prepare + run +
 *     remove vs `podman run --rm --network none`.
 * Ours runs in-process (a build runs every step from one process); the peers are whole
 * processes, as a user runs them. buildah and podman use their own storage in the bench's temp
 * dir (overlay driver), removed afterwards. Goal (issue 8): ours <= 0.5x.
 *   node dist/bench/ns.bench.js      (RUNS=10 WARMUP=2)
 */
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { benchPair, summary, type PairResult, peerStorageEnv, unmountAndRemove } from './harness.js';
import { OciLayout, buildBusyboxBase, parseManifest, parseConfig, type ImageManifest } from '../src/oci/index.js';
import { openSnapshotter } from '../src/overlay/index.js';
import { BuiltinRunner } from '../src/ns/index.js';

const runs = Number(process.env.RUNS ?? 10);
const warmup = Number(process.env.WARMUP ?? 2);
// lowercase: buildah/podman derive image names from oci: paths
const dir = join(tmpdir(), `tsimage-bench-ns-${process.pid}-${Date.now().toString(36)}`);
mkdirSync(dir);
const sh = (cmd: string, args: string[], env?: NodeJS.ProcessEnv) =>
  execFileSync(cmd, args, { cwd: dir, env: env ?? process.env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();

const env = peerStorageEnv(dir);
let ctr = '';
const snapRoot = join(dir, 'snap');
let snapClose: (() => Promise<void>) | undefined;

function cleanup(): void {
  try {
    if (ctr) sh('buildah', ['rm', ctr], env);
    sh('buildah', ['rm', '--all'], env);
    sh('podman', ['rm', '--all', '--force'], env);
    sh('podman', ['rmi', '--all', '--force'], env);
  } catch (e) {
    console.error(`cleanup: ${(e as Error).message}`);
  }
  unmountAndRemove(dir);
}

try {
  // the base image, written by our store
  const layout = await OciLayout.open(join(dir, 'base'), { create: true });
  const m = await buildBusyboxBase(layout, { tag: 'latest', epoch: 0 });
  const man = parseManifest(await layout.readBytes(m.digest)).doc as ImageManifest;
  const diffID = parseConfig(await layout.readBytes(man.config.digest)).rootfs.diff_ids[0]!;

  // ours: a snapshot of it
  const snap = await openSnapshotter({ root: snapRoot, driver: 'overlay' });
  snapClose = () => snap.close();
  await snap.addLayer(diffID, createReadStream(layout.blobPath(man.layers[0]!.digest)));
  const { rootfs } = await snap.prepare('bench', [diffID]);
  const runner = new BuiltinRunner();
  const runTrue = async (r: string) => {
    const res = await runner.run(['true'], { rootfs: r, network: 'none', stdio: { stdout: 'ignore', stderr: 'inherit' } });
    if (res.exitCode !== 0) throw new Error(`true exited ${res.exitCode ?? res.signal}`);
  };

  // peers: a buildah working container, and the image in podman's storage
  ctr = sh('buildah', ['from', '-q', '--pull-never', 'oci:base:latest'], env);
  const img = sh('podman', ['pull', '-q', 'oci:base:latest'], env);
  const podEnv = env; // same storage.conf: podman and buildah share the temp storage

  const results: PairResult[] = [];
  const ours1 = { label: 'tsimage BuiltinRunner', fn: () => runTrue(rootfs) };
  results.push(await benchPair({ name: 'true on an existing rootfs (vs buildah run, oci/runc)', runs, warmup, ours: ours1, peer: { label: 'buildah run oci', cmd: ['buildah', 'run', '--isolation', 'oci', '--network', 'none', ctr, 'true'], env } }));
  results.push(await benchPair({ name: 'true on an existing rootfs (vs buildah run, chroot)', runs, warmup, ours: ours1, peer: { label: 'buildah run chroot', cmd: ['buildah', 'run', '--isolation', 'chroot', ctr, 'true'], env } }));
  // the same from a fresh node process (what a CLI invocation per step would cost)
  const script = `import { BuiltinRunner } from ${JSON.stringify(new URL('../src/ns/index.js', import.meta.url).pathname)};
    const r = await new BuiltinRunner().run(['true'], { rootfs: ${JSON.stringify(rootfs)}, network: 'none', stdio: { stdout: 'ignore' } });
    process.exit(r.exitCode ?? 1);`;
  results.push(
    await benchPair({
      name: 'true on an existing rootfs, ours as a new node process (vs buildah run, oci/runc)',
      runs,
      warmup,
      ours: { label: 'node + BuiltinRunner', cmd: [process.execPath, '--input-type=module', '-e', script] },
      peer: { label: 'buildah run oci', cmd: ['buildah', 'run', '--isolation', 'oci', '--network', 'none', ctr, 'true'], env },
    }),
  );
  // the CLI path: `tsbuild run` on a working container (as `buildah run`), when the builder CLI is there
  const tsbuild = new URL('../../bin/tsbuild.js', import.meta.url).pathname;
  if (existsSync(tsbuild)) {
    const T = [tsbuild, '--root', join(dir, 'tsbuild')]; // as a program, as `tsbuild` on $PATH runs
    const tctr = sh(T[0]!, [...T.slice(1), 'from', '-q', 'busybox']);
    results.push(
      await benchPair({
        name: 'true in a working container, CLI (tsbuild run vs buildah run, oci/runc)',
        runs,
        warmup,
        ours: { label: 'tsbuild run', cmd: [...T, 'run', '--network', 'none', tctr, 'true'] },
        peer: { label: 'buildah run oci', cmd: ['buildah', 'run', '--isolation', 'oci', '--network', 'none', ctr, 'true'], env },
      }),
    );
    sh(T[0]!, [...T.slice(1), 'rm', tctr]);
  }
  let i = 0;
  results.push(
    await benchPair({
      name: 'create + true + remove (vs podman run --rm)',
      runs,
      warmup,
      ours: {
        label: 'tsimage snapshot+run',
        fn: async () => {
          const key = `r${i++}`;
          const { rootfs: r } = await snap.prepare(key, [diffID]);
          try {
            await runTrue(r);
          } finally {
            await snap.remove(key);
          }
        },
      },
      peer: { label: 'podman run --rm', cmd: ['podman', 'run', '--rm', '--network', 'none', img, 'true'], env: podEnv },
    }),
  );
  summary(results);
} finally {
  await snapClose?.();
  cleanup();
}
