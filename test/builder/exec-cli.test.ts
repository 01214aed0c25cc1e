/** The tsbuild command line: bud output, images/tag/rmi/inspect, working containers (from/run/copy/config/commit/mount), --help, exit codes, SIGINT cleanup. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, tempDir } from '../helpers.js';

const BIN = join(ROOT, 'bin', 'tsbuild.js');

function tsbuild(root: string, args: string[], input?: string): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { env: { ...process.env, TSIMAGE_ROOT: root }, encoding: 'utf8', input });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

function ok(root: string, args: string[]): string {
  const r = tsbuild(root, args);
  assert.equal(r.code, 0, `tsbuild ${args.join(' ')} failed: ${r.err}`);
  return r.out;
}

function noLeftovers(root: string): void {
  const c = join(root, 'containers');
  assert.deepEqual(existsSync(c) ? readdirSync(c) : [], []);
  assert.deepEqual(readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(root)), []);
}

describe('tsbuild CLI', () => {
  it('bud prints the image ID on stdout (progress on stderr), images/tag/inspect/rmi manage the store', (t) => {
    const root = tempDir(t, 'root');
    const ctx = tempDir(t, 'ctx');
    writeFileSync(join(ctx, 'Containerfile'), 'FROM busybox\nRUN echo built > /b\nCMD ["cat", "/b"]\n');
    const r = tsbuild(root, ['bud', '-t', 'app', ctx]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^[0-9a-f]{64}\n$/);
    assert.match(r.err, /STEP 1\/3: FROM busybox/);
    assert.match(r.err, /STEP 2\/3: RUN echo built/);
    assert.match(r.err, /Successfully tagged localhost\/app:latest/);
    const id = r.out.trim();
    const again = tsbuild(root, ['bud', '-q', '-t', 'app', ctx]);
    assert.equal(again.out, `${id}\n`);
    assert.equal(again.err, '', '--quiet prints nothing else');
    ok(root, ['tag', 'app', 'registry.example/team/app:1.0']);
    const images = ok(root, ['images']);
    assert.match(images, /localhost\/app\s+latest\s+[0-9a-f]{12}/);
    assert.match(images, /registry\.example\/team\/app\s+1\.0/);
    const json = JSON.parse(ok(root, ['images', '--json'])) as { id: string; names: string[] }[];
    assert.ok(json.some((i) => i.id === id && i.names.includes('registry.example/team/app:1.0')));
    assert.equal(ok(root, ['inspect', '--format', '{{.OCIv1.config.Cmd}}', 'app']).trim(), '["cat","/b"]');
    ok(root, ['rmi', 'registry.example/team/app:1.0']);
    assert.doesNotMatch(ok(root, ['images']), /registry\.example/);
    assert.match(ok(root, ['images', '-q']), new RegExp(id.slice(0, 12)));
    const missing = tsbuild(root, ['inspect', 'nope']);
    assert.equal(missing.code, 1);
    assert.match(missing.err, /nope/);
  });

  it('working containers: from, run, copy, config, commit, mount/umount, containers, rm', (t) => {
    const root = tempDir(t, 'root');
    const files = tempDir(t, 'files');
    writeFileSync(join(files, 'f.txt'), 'copied in\n');
    const name = ok(root, ['from', 'busybox']).trim();
    assert.equal(name, 'busybox-working-container');
    ok(root, ['run', name, '--', 'sh', '-c', 'echo ran > /ran.txt']);
    ok(root, ['copy', name, join(files, 'f.txt'), '/dst/']);
    ok(root, ['config', '--cmd', '["cat", "/ran.txt", "/dst/f.txt", "/mounted.txt"]', '--env', 'A=1', '--label', 'k=v', '--port', '8080', name]);
    const mnt = ok(root, ['mount', name]).trim();
    writeFileSync(join(mnt, 'mounted.txt'), 'via mount\n');
    ok(root, ['umount', name]);
    assert.match(ok(root, ['containers']), new RegExp(name));
    const id = ok(root, ['commit', '-q', name, 'wc-image']).trim();
    assert.match(id, /^[0-9a-f]{64}$/);
    const cfg = JSON.parse(ok(root, ['inspect', '--format', '{{.OCIv1.config}}', 'wc-image'])) as { Env: string[]; Labels: Record<string, string>; ExposedPorts: Record<string, unknown> };
    assert.ok(cfg.Env.includes('A=1'));
    assert.equal(cfg.Labels.k, 'v');
    assert.ok('8080/tcp' in cfg.ExposedPorts);
    // the committed image has the run's, the copy's and the mount's changes
    const ctx = tempDir(t, 'ctx');
    writeFileSync(join(ctx, 'Containerfile'), 'FROM wc-image\nRUN cat /ran.txt /dst/f.txt /mounted.txt\n');
    const b = tsbuild(root, ['bud', '--no-cache', ctx]);
    assert.equal(b.code, 0, b.err);
    assert.match(b.err, /ran\ncopied in\nvia mount/);
    ok(root, ['rm', name]);
    assert.doesNotMatch(ok(root, ['containers']), new RegExp(name));
    noLeftovers(root);
  });

  it('prune drops the build cache and unreferenced blobs but keeps named images usable', (t) => {
    const root = tempDir(t, 'root');
    const ctx = tempDir(t, 'ctx');
    writeFileSync(join(ctx, 'Containerfile'), 'FROM busybox\nRUN echo one > /one\nRUN echo two > /two\n');
    ok(root, ['bud', '-q', '-t', 'keep', ctx]);
    writeFileSync(join(ctx, 'Containerfile'), 'FROM busybox\nRUN echo other > /other\n');
    const unnamed = ok(root, ['bud', '-q', ctx]).trim();
    const blobs = () => readdirSync(join(root, 'images', 'blobs', 'sha256')).length;
    const before = blobs();
    const out = ok(root, ['prune', '-a']);
    assert.match(out, /removed \d+ cache entries and \d+ blobs/);
    assert.ok(blobs() < before, `blobs ${before} -> ${blobs()}`);
    assert.doesNotMatch(ok(root, ['images', '-a', '--no-trunc']), new RegExp(unnamed), 'unnamed image pruned');
    // the named image still works as a base; nothing is cached any more
    writeFileSync(join(ctx, 'Containerfile'), 'FROM keep\nRUN cat /one /two\n');
    const b = tsbuild(root, ['bud', ctx]);
    assert.equal(b.code, 0, b.err);
    assert.match(b.err, /one\ntwo/);
    assert.doesNotMatch(b.err, /Using cache/);
  });

  it('--help everywhere (exit 0), usage errors exit 2, Dockerfile errors name file:line (exit 1)', (t) => {
    const root = tempDir(t, 'root');
    for (const c of ['bud', 'build', 'from', 'run', 'copy', 'add', 'config', 'commit', 'containers', 'rm', 'mount', 'umount', 'images', 'tag', 'rmi', 'pull', 'push', 'inspect', 'info', 'version', 'prune', 'login', 'logout']) {
      const r = tsbuild(root, [c, '--help']);
      assert.equal(r.code, 0, `${c} --help: ${r.err}`);
      assert.match(r.out, /Usage: tsbuild/);
    }
    assert.equal(tsbuild(root, ['bud', '--no-such-flag']).code, 2);
    const ctx = tempDir(t, 'ctx');
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM busybox\nRUNN echo\n');
    const bad = tsbuild(root, ['bud', ctx]);
    assert.equal(bad.code, 1);
    assert.match(bad.err, /Dockerfile:2: unknown instruction: RUNN \(did you mean RUN\?\)/);
    const info = JSON.parse(ok(root, ['info'])) as { store: { root: string } };
    assert.equal(info.store.root, root);
  });

  it('SIGINT during a RUN stops the build (exit 130) and releases every snapshot and mount', async (t) => {
    const root = tempDir(t, 'root');
    const ctx = tempDir(t, 'ctx');
    writeFileSync(join(ctx, 'Containerfile'), 'FROM busybox\nRUN echo started && sleep 60\n');
    const p = spawn(process.execPath, [BIN, 'bud', ctx], { env: { ...process.env, TSIMAGE_ROOT: root }, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    const t0 = Date.now();
    const code = await new Promise<number | null>((resolve) => {
      p.stderr.on('data', (d: Buffer) => {
        err += d.toString();
        if (err.includes('started') && !p.killed) p.kill('SIGINT');
      });
      p.on('exit', (c) => resolve(c));
    });
    assert.equal(code, 130, err);
    assert.ok(Date.now() - t0 < 30_000, 'stopped well before the sleep ends');
    noLeftovers(root);
  });
});
