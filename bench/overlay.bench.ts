/**
 * Committing a step's changes: 5,000 small files plus a 200 MB file (../shared/peers/gen-context.sh
 * manyfiles) written into a container on the busybox base.
 *  ours: overlay snapshot diff -> layer tar streamed into the OCI layout store (sha256 = diffID,
 *        uncompressed) + snapshot commit into the layer cache (what a build step does);
 *  peer: `buildah commit` of a working container with the same files into its own storage
 *        (overlay driver, uncompressed layer, as buildah stores it).
 * The files are copied in before each timed run (untimed), both sides from the page cache.
 *   node dist/bench/overlay.bench.js      (RUNS=3 WARMUP=1)
 */
import { mkdirSync, rmSync, createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { benchPair, peersDir, summary, peerStorageEnv, unmountAndRemove } from './harness.js';
import { MediaTypes, OciLayout, buildBusyboxBase, parseConfig, parseManifest, type ImageManifest, type Digest } from '../src/oci/index.js';
import { openSnapshotter, type Snapshotter } from '../src/overlay/index.js';

const PEERS = peersDir();
const runs = Number(process.env.RUNS ?? 3);
const warmup = Number(process.env.WARMUP ?? 1);
// lowercase: buildah derives image names from oci: paths
const dir = join(tmpdir(), `tsimage-bench-ovl-${process.pid}-${Date.now().toString(36)}`);
mkdirSync(dir);
const sh = (cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env) =>
  execFileSync(cmd, args, { cwd: dir, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 }).trim();
const env = peerStorageEnv(dir);
let snap: Snapshotter | undefined;
let ctr = '';

function cleanup(): void {
  try {
    if (ctr) sh('buildah', ['rm', ctr], env);
    sh('buildah', ['rm', '--all'], env);
    sh('buildah', ['rmi', '--all', '--force'], env);
  } catch (e) {
    console.error(`cleanup: ${(e as Error).message}`);
  }
  unmountAndRemove(dir);
}

try {
  const ctx = join(dir, 'ctx');
  execFileSync('sh', [join(PEERS, 'gen-context.sh'), 'manyfiles', ctx], { stdio: ['ignore', 'ignore', 'inherit'] });
  const layout = await OciLayout.open(join(dir, 'base'), { create: true, sync: false });
  const m = await buildBusyboxBase(layout, { tag: 'latest', epoch: 0 });
  const man = parseManifest(await layout.readBytes(m.digest)).doc as ImageManifest;
  const diffID = parseConfig(await layout.readBytes(man.config.digest)).rootfs.diff_ids[0]!;
  snap = await openSnapshotter({ root: join(dir, 'snap'), driver: 'overlay' });
  await snap.addLayer(diffID, createReadStream(layout.blobPath(man.layers[0]!.digest)));
  const out = await OciLayout.open(join(dir, 'out'), { create: true });
  const copyIn = (root: string) => {
    mkdirSync(join(root, 'data'), { recursive: true });
    sh('cp', ['-a', join(ctx, 'files'), join(ctx, 'big.bin'), join(root, 'data/')]);
  };
  let key = '';
  let n = 0;
  let lastDiff: Digest | undefined;
  const res = await benchPair({
    name: 'commit 5,000 files + 200 MB (vs buildah commit)',
    runs,
    warmup,
    ours: {
      label: 'tsimage diff+store+commit',
      before: async () => {
        key = `s${n++}`;
        copyIn((await snap!.prepare(key, [diffID])).rootfs);
      },
      fn: async () => {
        const d = await out.ingest({ mediaType: MediaTypes.ociLayer }, snap!.diff(key));
        await snap!.commit(key, d.digest);
        lastDiff = d.digest;
      },
      after: async () => {
        // drop the committed layer again, so every run does the same work
        await out.delete(lastDiff!);
        rmSync(join(dir, 'snap', 'layers', lastDiff!.slice(7)), { recursive: true, force: true });
        rmSync(join(dir, 'snap', 'layers', 'l', lastDiff!.slice(7, 7 + 16)), { force: true });
      },
    },
    peer: {
      label: 'buildah commit',
      before: () => {
        ctr = sh('buildah', ['from', '-q', '--pull-never', 'oci:base:latest'], env);
        const mnt = sh('buildah', ['mount', ctr], env);
        copyIn(mnt);
        sh('buildah', ['umount', ctr], env);
      },
      cmd: () => ['buildah', 'commit', '--quiet', ctr, 'localhost/bench-commit'],
      env,
      after: () => {
        sh('buildah', ['rm', ctr], env);
        ctr = '';
        sh('buildah', ['rmi', '--force', 'localhost/bench-commit'], env);
      },
    },
  });
  summary([res]);
} finally {
  await snap?.close();
  cleanup();
}
