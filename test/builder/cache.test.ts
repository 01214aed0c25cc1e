/** Cache keys from real contexts: ignored/unrelated/used file changes, --explain-cache, prune. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers.js';
import { openContext } from '../../src/builder/context.js';
import { planCopy, type CopyRequest } from '../../src/builder/copyfiles.js';
import { BuildCache, cacheKey } from '../../src/builder/cache.js';

function tree(dir: string, files: Record<string, string>): void {
  for (const [p, c] of Object.entries(files)) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    writeFileSync(join(dir, p), c);
  }
}

const PARENT = cacheKey(undefined, 'FROM busybox', { base: 'sha256:' + 'a'.repeat(64) });

/** One "build": the keys of `COPY app/ /app/` and `COPY app.js /srv/` on the context as it is now. */
async function build(ctxDir: string, cacheDir: string) {
  const ctx = await openContext(ctxDir, { cacheDir });
  const keys: { key: string; instr: string; inputs: { files: import('../../src/builder/copyfiles.js').FileInput[] } }[] = [];
  let parent = PARENT;
  for (const [srcs, dest] of [[['app'], '/app/'], [['app.js'], '/srv/']] as const) {
    const r: CopyRequest = { kind: 'COPY', srcs: [...srcs], dest };
    const plan = await planCopy(r, { context: ctx });
    const instr = `COPY ${srcs.join(' ')} ${dest}`;
    const key = cacheKey(parent, instr, plan.inputs);
    keys.push({ key, instr, inputs: plan.inputs });
    parent = key;
    await plan.dispose();
  }
  await ctx.save();
  return { keys, reads: ctx.counters.filesRead };
}

describe('build cache keys', () => {
  it('ignored and unrelated files do not change keys; a used file does, and explain names it', async (t) => {
    const ctxDir = tempDir(t, 'ctx');
    const cacheDir = tempDir(t, 'cache');
    tree(ctxDir, { 'app/a.txt': 'a', 'app/b.txt': 'b', 'app/debug.log': 'x', 'app.js': 'v1', 'README.md': 'docs', '.dockerignore': '**/*.log\n' });
    const cache = await BuildCache.open(cacheDir);
    const b1 = await build(ctxDir, cacheDir);
    for (const k of b1.keys) {
      assert.equal(await cache.get(k.key), undefined);
      await cache.put(k.key, { parent: undefined, instruction: k.instr, inputs: k.inputs, result: { layer: { digest: 'sha256:' + '1'.repeat(64), diffID: 'sha256:' + '2'.repeat(64), size: 10, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' } } });
    }
    // the puts above used parent undefined; redo with the right parents for explain
    await cache.prune({ all: true });
    let parent = PARENT;
    for (const k of b1.keys) {
      await cache.put(k.key, { parent, instruction: k.instr, inputs: k.inputs, result: {} });
      parent = k.key;
    }

    // touching an ignored file (content too): all hits
    writeFileSync(join(ctxDir, 'app/debug.log'), 'changed');
    const b2 = await build(ctxDir, cacheDir);
    assert.deepEqual(b2.keys.map((k) => k.key), b1.keys.map((k) => k.key));
    assert.equal(b2.reads, 0); // stat cache: nothing re-read
    // an unrelated (unused) file: hits
    writeFileSync(join(ctxDir, 'README.md'), 'new docs');
    const b3 = await build(ctxDir, cacheDir);
    assert.deepEqual(b3.keys.map((k) => k.key), b1.keys.map((k) => k.key));
    // touching a used file without changing it: still a hit (content keys, as BuildKit)
    const later = new Date(Date.now() + 10_000);
    utimesSync(join(ctxDir, 'app/a.txt'), later, later);
    const b4 = await build(ctxDir, cacheDir);
    assert.deepEqual(b4.keys.map((k) => k.key), b1.keys.map((k) => k.key));
    assert.equal(b4.reads, 1);
    // a used file changes: that step and what follows miss
    writeFileSync(join(ctxDir, 'app/b.txt'), 'B!');
    const b5 = await build(ctxDir, cacheDir);
    assert.notEqual(b5.keys[0]!.key, b1.keys[0]!.key);
    assert.notEqual(b5.keys[1]!.key, b1.keys[1]!.key);
    assert.ok(await cache.get(b1.keys[0]!.key));
    assert.equal(await cache.get(b5.keys[0]!.key), undefined);
    const why = await cache.explain(PARENT, b5.keys[0]!.instr, b5.keys[0]!.inputs);
    const old = b1.keys[0]!.inputs.files.find((f) => f.path === 'app/b.txt')!.hash!.slice(5, 13);
    const neu = b5.keys[0]!.inputs.files.find((f) => f.path === 'app/b.txt')!.hash!.slice(5, 13);
    assert.equal(why, `COPY app /app/: app/b.txt changed (hash ${old} -> ${neu})`);
    const why2 = await cache.explain(b5.keys[0]!.key, b5.keys[1]!.instr, b5.keys[1]!.inputs);
    assert.match(why2, /not cached \(no earlier build from this point: first build, or an earlier step changed\)/);
    // new and removed files
    writeFileSync(join(ctxDir, 'app/c.txt'), 'c');
    const b6 = await build(ctxDir, cacheDir);
    assert.match(await cache.explain(PARENT, b6.keys[0]!.instr, b6.keys[0]!.inputs), /app\/b\.txt changed .*; app\/c\.txt added/);
  });

  it('keys: order independent, sensitive to instruction, args, base, modes', () => {
    const f = (mode: number) => [{ path: 'a', type: 'f', mode, hash: 'x128:1' }, { path: 'b', type: 'f', mode: 0o644, hash: 'x128:2' }];
    const k1 = cacheKey(PARENT, 'COPY . /', { files: f(0o644), args: { A: '1', B: '2' } });
    assert.equal(k1, cacheKey(PARENT, 'COPY . /', { files: [...f(0o644)].reverse(), args: { B: '2', A: '1' } }));
    assert.notEqual(k1, cacheKey(PARENT, 'COPY . /', { files: f(0o755), args: { A: '1', B: '2' } }));
    assert.notEqual(k1, cacheKey(PARENT, 'COPY . /', { files: f(0o644), args: { A: '1', B: '3' } }));
    assert.notEqual(k1, cacheKey(PARENT, 'COPY . /x', { files: f(0o644), args: { A: '1', B: '2' } }));
    assert.notEqual(k1, cacheKey(undefined, 'COPY . /', { files: f(0o644), args: { A: '1', B: '2' } }));
    assert.match(k1, /^sha256:[0-9a-f]{64}$/);
  });

  it('explain names build args and base images; prune bounds the index (LRU)', async (t) => {
    const cache = await BuildCache.open(tempDir(t, 'cache'));
    const k = cacheKey(PARENT, 'RUN make', { args: { V: '1' } });
    await cache.put(k, { parent: PARENT, instruction: 'RUN make', inputs: { args: { V: '1' } }, result: {} });
    assert.equal(await cache.explain(PARENT, 'RUN make', { args: { V: '2' } }), 'RUN make: build arg V changed ("1" -> "2")');
    const b = cacheKey(undefined, 'FROM x', { base: 'sha256:' + 'b'.repeat(64) });
    await cache.put(b, { instruction: 'FROM x', inputs: { base: 'sha256:' + 'b'.repeat(64) }, result: {} });
    assert.equal(await cache.explain(undefined, 'FROM x', { base: 'sha256:' + 'c'.repeat(64) }), 'FROM x: base image changed (bbbbbbbb -> cccccccc)');
    // prune: 5 entries with layers (a fresh index)
    await cache.prune({ all: true });
    const keys: string[] = [];
    for (let i = 0; i < 5; i++) {
      const key = cacheKey(PARENT, `RUN step ${i}`);
      keys.push(key);
      await cache.put(key, { parent: PARENT, instruction: `RUN step ${i}`, result: { layer: { digest: `sha256:${String(i).repeat(64)}`, diffID: 'sha256:' + 'd'.repeat(64), size: 100, mediaType: 'x' } } });
      const when = new Date(Date.now() - (10 - i) * 60_000);
      utimesSync(join(cache.dir, 'entries', key.slice(7) + '.json'), when, when);
    }
    const r = await cache.prune({ maxEntries: 4 });
    assert.equal(r.kept, 4);
    assert.deepEqual(r.removed.map((e) => e.instruction), ['RUN step 0']);
    const r2 = await cache.prune({ maxBytes: 250 });
    assert.deepEqual(r2.removed.map((e) => e.instruction).sort(), ['RUN step 1', 'RUN step 2']);
    const refs = await cache.referencedDigests();
    assert.deepEqual([...refs].sort(), ['sha256:' + '3'.repeat(64), 'sha256:' + '4'.repeat(64)]);
    assert.equal(await cache.get(keys[0]!), undefined);
  });
});
