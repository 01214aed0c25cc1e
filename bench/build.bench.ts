/**
 * tsbuild bud vs buildah bud --layers on the peers' contexts (hello, multistage, manyfiles = 5,000 files + 200 MB),
 * cold (--no-cache) and cached (unchanged context), same base image bytes (our busybox base: the embedded base for
 * tsbuild; pulled once into buildah's storage as localhost/tsbench-base for buildah, so neither side pulls).
 * buildah: chroot isolation (its fastest); tsbuild: its default (builtin namespaces). Whole processes are timed.
 * Goals: cold <= 0.7x, cached <= 0.3x.   usage: npm run bench -- build   (CASES=hello,multistage RUNS=3)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchPair, peersDir, summary, type PairResult } from './harness.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const PEERS = peersDir();
const TSBUILD = join(ROOT, 'bin', 'tsbuild.js');
const work = `/tmp/tsbench-${randomBytes(4).toString('hex')}`;
const peerRoot = join(work, 'p');
const ourRoot = join(work, 'ours');
const env = { ...process.env, CONTAINERS_CONF: join(PEERS, 'containers.conf'), TSIMAGE_ROOT: ourRoot };
const g = ['--root', join(peerRoot, 'storage'), '--runroot', join(peerRoot, 'run'), '--storage-driver', 'overlay'];

function cleanup(): void {
  spawnSync('buildah', [...g, 'rm', '-a'], { env });
  spawnSync('buildah', [...g, 'rmi', '-a', '-f'], { env });
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(work)).sort().reverse();
  for (const m of mounts) spawnSync('umount', ['-l', m]);
  rmSync(work, { recursive: true, force: true });
}

async function main(): Promise<void> {
  mkdirSync(peerRoot, { recursive: true });
  const results: PairResult[] = [];
  try {
    // the base: tsbuild's embedded base, exported as an OCI layout for buildah (same bytes)
    execFileSync('node', [TSBUILD, 'pull', 'busybox'], { env, stdio: 'ignore' });
    mkdirSync(join(work, 'basectx'));
    writeFileSync(join(work, 'basectx', 'Containerfile'), 'FROM busybox\n');
    execFileSync('node', [TSBUILD, 'bud', '-q', '-t', 'tsbench-base-export', '-o', `type=oci,dest=${join(work, 'base.tar')}`, join(work, 'basectx')], { env, stdio: 'ignore' });
    execFileSync('buildah', [...g, 'pull', '-q', `oci-archive:${join(work, 'base.tar')}`], { env, stdio: 'ignore' });
    const id = execFileSync('buildah', [...g, 'images', '-q', '--noheading'], { env, encoding: 'utf8' }).trim().split('\n')[0]!;
    execFileSync('buildah', [...g, 'tag', id, 'localhost/tsbench-base:latest'], { env });

    const cases = (process.env.CASES ?? 'hello,multistage,manyfiles').split(',');
    for (const name of cases) {
      let ctx = join(PEERS, 'contexts', name);
      if (name === 'manyfiles') {
        ctx = join(work, 'manyfiles');
        execFileSync('sh', [join(PEERS, 'gen-context.sh'), 'manyfiles', ctx], { stdio: 'ignore' });
      }
      const runs = Number(process.env.RUNS ?? (name === 'manyfiles' ? 3 : 5));
      const ours = (extra: string[]) => [TSBUILD, 'bud', '-q', '--layers', ...extra, '--build-arg', 'BASE=busybox', '-t', `localhost/bench-${name}`, ctx];
      const peer = (extra: string[]) => ['buildah', ...g, 'bud', '-q', '--isolation', 'chroot', '--layers', ...extra, '--build-arg', 'BASE=localhost/tsbench-base:latest', '-t', `localhost/bench-${name}`, ctx];
      results.push(
        await benchPair({ name: `${name} cold (--no-cache)`, runs, warmup: 1, ours: { label: 'tsbuild', cmd: ours(['--no-cache']), env }, peer: { label: 'buildah', cmd: peer(['--no-cache']), env } }),
      );
      results.push(await benchPair({ name: `${name} cached`, runs, warmup: 1, ours: { label: 'tsbuild', cmd: ours([]), env }, peer: { label: 'buildah', cmd: peer([]), env } }));
      if (name === 'manyfiles') rmSync(ctx, { recursive: true, force: true });
    }
  } finally {
    cleanup();
  }
  summary(results);
  console.log('(2 shared cores: figures taken while others run are noisy)');
}

main().catch((e) => {
  cleanup();
  console.error(e);
  process.exit(1);
});
