/**
 * SIGINT during a step: a child process (wired like the CLIs: installSignalHandlers +
 * rootController) prepares an overlay (or vfs) snapshot on the busybox base layer and runs a
 * process tree in it with the builtin runner; the test signals it mid-run and checks that no
 * mount, snapshot dir, temp file or container process is left — after one SIGINT (graceful abort)
 * and after two (immediate exit: the snapshotter's exit hook unmounts synchronously).
 */
import { describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { procsWith, tempDir, ROOT } from '../helpers.js';
import { baseLayer } from '../overlay/util.js';
import { createCgroup, removeCgroup } from '../../src/ns/cgroups.js';

/** The run cgroups (v1 pids/memory hierarchies, or v2) a process created, by its pid. */
function runCgroups(pid: number): string[] {
  const out: string[] = [];
  const self = Object.fromEntries(readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n').map((l) => [l.split(':')[1]!, l.split(':')[2]!]));
  const parents = existsSync('/sys/fs/cgroup/cgroup.controllers')
    ? ['/sys/fs/cgroup/tsimage']
    : ['pids', 'memory'].map((c) => join('/sys/fs/cgroup', c, self[c] ?? '/', 'tsimage'));
  for (const p of parents) for (const n of existsSync(p) ? readdirSync(p) : []) if (n.startsWith(`run-${pid}-`)) out.push(join(p, n));
  return out;
}

function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((p) => p.startsWith(dir));
}

const CHILD = (root: string, driver: string, blob: string, diffID: string, marker: string) => `
  import { openSnapshotter } from ${JSON.stringify(join(ROOT, 'dist/src/overlay/index.js'))};
  import { BuiltinRunner } from ${JSON.stringify(join(ROOT, 'dist/src/ns/index.js'))};
  import { rootController, installSignalHandlers } from ${JSON.stringify(join(ROOT, 'dist/src/cli/common.js'))};
  import { createReadStream } from 'node:fs';
  installSignalHandlers();
  const snap = await openSnapshotter({ root: ${JSON.stringify(root)}, driver: ${JSON.stringify(driver)} });
  let code = 0;
  try {
    await snap.addLayer(${JSON.stringify(diffID)}, createReadStream(${JSON.stringify(blob)}));
    const { rootfs } = await snap.prepare('step', [${JSON.stringify(diffID)}]);
    const run = new BuiltinRunner().run(['/bin/sh', '-c', 'echo started; sleep 60 & sleep 61 & wait; : ${marker}'], {
      rootfs, signal: rootController.signal, stdio: { stdout: 'inherit', stderr: 'inherit' }, limits: { pids: 200, memory: 256 * 1024 * 1024 },
    });
    const res = await run;
    code = res.aborted ? 130 : 1;
  } finally {
    await snap.close();
  }
  process.exit(code);`;

async function signalledRun(t: TestContext, driver: 'overlay' | 'vfs', signals: number): Promise<void> {
  const d = tempDir(t, 'sigint');
  const root = join(d, 'state');
  const childTmp = join(d, 'tmp');
  mkdirSync(childTmp);
  const b = await baseLayer();
  const marker = `tsimage-sigint-${driver}-${signals}-${process.pid}`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD(root, driver, b.layout.blobPath(b.desc.digest), b.diffID, marker)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TMPDIR: childTmp },
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((ok) => child.on('exit', (code, signal) => ok({ code, signal })));
  await new Promise<void>((ok, fail) => {
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('started')) ok();
    });
    void exited.then(() => fail(new Error(`child exited before the step started: ${err}`)));
  });
  // mid-step: the overlay is mounted and the container's processes run
  if (driver === 'overlay') assert.equal(mountsUnder(root).length, 1, 'the snapshot is mounted while the step runs');
  assert.ok(procsWith(marker).length > 0, 'the step runs');
  for (let i = 0; i < signals; i++) child.kill('SIGINT');
  const r = await exited;
  assert.equal(r.code, 130, `exit ${r.code ?? r.signal}: ${err}`);
  await new Promise((ok) => setTimeout(ok, 100));
  assert.deepEqual(mountsUnder(d), [], 'mounts left');
  assert.deepEqual(readdirSync(join(root, 'containers')), [], 'snapshot dirs left');
  assert.deepEqual(readdirSync(join(root, 'layers')).filter((n) => n.startsWith('.tmp-')), [], 'staging dirs left');
  assert.deepEqual(readdirSync(childTmp), [], 'temp files left');
  assert.deepEqual(procsWith(marker), [], 'container processes left');
  assert.deepEqual(procsWith('sleep 6'), [], 'container processes left');
  // cgroups: removed by the child, or (immediate exit while the tree was dying) swept by the next run
  if (signals === 1) assert.deepEqual(runCgroups(child.pid!), [], 'cgroups left');
  const h = await createCgroup(`run-${process.pid}-${Date.now().toString(16)}`, { pids: 10 });
  await removeCgroup(h);
  assert.deepEqual(runCgroups(child.pid!), [], 'stale cgroups not swept');
}

describe('SIGINT during a step', () => {
  it('one SIGINT (overlay): the step is aborted, the tree killed, the snapshot unmounted and removed', (t) => signalledRun(t, 'overlay', 1));
  it('two SIGINTs (overlay): immediate exit, still nothing left', (t) => signalledRun(t, 'overlay', 2));
  it('one SIGINT (vfs): nothing left', (t) => signalledRun(t, 'vfs', 1));
});
