/**
 * `list-tags`, `delete` (and sync's tag listing) with a registries.conf that rewrites the name (prefix -> location) and has a mirror,
 * against skopeo 1.9.3 with the same files: both contact the registry the name says (containers/image's
 * newDockerClientFromRef: no rewriting, no mirrors, unlike copy/inspect), with the `insecure`/`blocked` of the entry
 * that matches the name; delete then removes the manifest's simple signatures from the registries.d lookaside
 * (file://: signature-1.. up to the first missing one; http: fails after the delete with containers/image's message).
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { requireTool, sh, startDistribution, tempDir } from '../helpers.js';
import { baseLayout, type BaseLayout } from '../fixtures/base.js';
import { spawnRegistry } from '../registry/util.js';
import { tscopy, tscopyFail } from './engine-util.js';

let base: BaseLayout;
before(async () => {
  requireTool('skopeo');
  base = await baseLayout();
});

function skopeo(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('skopeo', args, { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const push = (ref: string) => tscopy(['copy', '-q', '--dest-tls-verify=false', base.ociRef, `docker://${ref}`]);
const tagsOf = (repo: string) => JSON.parse(sh('skopeo', ['list-tags', '--tls-verify=false', `docker://${repo}`])).Tags.sort() as string[];

describe('list-tags and delete with registries.conf rewriting (as skopeo)', () => {
  it('use the name as written (not the location or a mirror), the matching entry insecure/blocked, and the lookaside', async (t) => {
    const d = tempDir(t, 'listdel');
    const dist = await startDistribution(t); // the registry the names say
    const location = await spawnRegistry(t, join(d, 'loc'));
    const mirror = await spawnRegistry(t, join(d, 'mir'));
    const A = dist.addr;
    // same image under two tags per repository: sk (for skopeo) and ts (for tscopy)
    for (const r of ['sk', 'ts']) {
      push(`${A}/lib/${r}:t1`);
      push(`${A}/lib/${r}:t2`);
      push(`${location.addr}/lib/${r}:p1`);
      push(`${mirror.addr}/cache/lib/${r}:m1`);
    }
    const conf = join(d, 'registries.conf');
    writeFileSync(
      conf,
      [
        '[[registry]]',
        `prefix = "${A}/lib"`,
        `location = "${location.addr}/lib"`,
        'insecure = true',
        '[[registry.mirror]]',
        `location = "${mirror.addr}/cache/lib"`,
        'insecure = true',
        '[[registry]]',
        `prefix = "${A}/blk"`,
        `location = "${A}/blk"`,
        'blocked = true',
        '',
      ].join('\n'),
    );
    const lookaside = join(d, 'lookaside');
    const regd = join(d, 'registries.d');
    mkdirSync(regd);
    writeFileSync(join(regd, 'a.yaml'), `docker:\n  ${A}:\n    lookaside: file://${lookaside}\n`);
    const regdHttp = join(d, 'registries.d-http');
    mkdirSync(regdHttp);
    writeFileSync(join(regdHttp, 'a.yaml'), `docker:\n  ${A}:\n    lookaside: http://127.0.0.1:9/sigs\n`);
    const env = { CONTAINERS_REGISTRIES_CONF: conf };
    const sk = (args: string[]) => skopeo(['--registries-conf', conf, ...args]);

    // list-tags: the name's registry (t1, t2), not the location's p1 nor the mirror's m1; no TLS flag: the entry
    // matching the name says insecure (by prefix, not by host)
    for (const r of ['sk', 'ts']) {
      const theirs = sk(['list-tags', `docker://${A}/lib/${r}`]);
      assert.equal(theirs.status, 0, theirs.stderr);
      const ours = tscopy(['list-tags', `docker://${A}/lib/${r}`], env);
      assert.equal(ours, theirs.stdout);
      assert.deepEqual(JSON.parse(ours).Tags.sort(), ['t1', 't2']);
    }
    // (copy and inspect do rewrite: p1 is read from the location)
    assert.match(tscopy(['inspect', '--raw', `docker://${A}/lib/ts:p1`], env), /"schemaVersion":2/);

    // delete: the name's registry; the manifest goes (so both its tags); its lookaside signatures 1.. go up to the first gap
    const sigs = (r: string) => join(lookaside, 'lib', `${r}@${base.manifestDigest.replace(':', '=')}`);
    for (const r of ['sk', 'ts']) {
      mkdirSync(sigs(r), { recursive: true });
      for (const n of [1, 2, 4]) writeFileSync(join(sigs(r), `signature-${n}`), `sig ${n}`);
    }
    const theirs = sk(['--registries.d', regd, 'delete', `docker://${A}/lib/sk:t1`]);
    assert.equal(theirs.status, 0, theirs.stderr);
    tscopy(['--registries.d', regd, 'delete', `docker://${A}/lib/ts:t1`], env);
    for (const r of ['sk', 'ts']) {
      assert.deepEqual(tagsOf(`${A}/lib/${r}`), [], r);
      assert.deepEqual(tagsOf(`${location.addr}/lib/${r}`), ['p1'], r);
      assert.deepEqual(tagsOf(`${mirror.addr}/cache/lib/${r}`), ['m1'], r);
    }
    assert.deepEqual(readdirSync(sigs('ts')), readdirSync(sigs('sk')));
    assert.deepEqual(readdirSync(sigs('ts')), ['signature-4']);

    // an http lookaside cannot be written: the manifest is deleted, then both fail with the same message
    push(`${A}/lib/sk:h`);
    push(`${A}/lib/ts:h`);
    const skHttp = sk(['--registries.d', regdHttp, 'delete', `docker://${A}/lib/sk:h`]);
    const tsHttp = tscopyFail(['--registries.d', regdHttp, 'delete', `docker://${A}/lib/ts:h`], env);
    assert.equal(skHttp.status, 1);
    assert.equal(tsHttp.status, 1);
    const msg = (r: string) =>
      `Writing directly to a http lookaside http://127.0.0.1:9/sigs/lib/${r}@${base.manifestDigest.replace(':', '=')}/signature-1 is not supported. Configure a lookaside-staging: location`;
    assert.ok(skHttp.stderr.includes(msg('sk')), skHttp.stderr);
    assert.ok(tsHttp.stderr.includes(msg('ts')), tsHttp.stderr);
    assert.deepEqual(tagsOf(`${A}/lib/sk`), []);
    assert.deepEqual(tagsOf(`${A}/lib/ts`), []);

    // sync lists the tags the same way (the name's registry), then copies each through the rewrite: s1 is at A and at
    // the location (copied from there), p-only only at the location (not listed, not synced)
    push(`${A}/lib/sy:s1`);
    push(`${location.addr}/lib/sy:s1`);
    push(`${location.addr}/lib/sy:p-only`);
    for (const [who, out] of [['skopeo', join(d, 'sync-sk')], ['tscopy', join(d, 'sync-ts')]] as const) {
      mkdirSync(out);
      const args = ['sync', '--src', 'docker', '--dest', 'dir', `${A}/lib/sy`, out];
      if (who === 'skopeo') {
        const r = sk(args);
        assert.equal(r.status, 0, r.stderr);
      } else tscopy(args, env);
      assert.deepEqual(readdirSync(out), ['sy:s1'], who);
    }
    assert.deepEqual(readdirSync(join(d, 'sync-ts', 'sy:s1')).sort(), readdirSync(join(d, 'sync-sk', 'sy:s1')).sort());

    // blocked by the entry matching the name: both refuse, tscopy naming the entry
    for (const args of [['list-tags', `docker://${A}/blk/app`], ['delete', `docker://${A}/blk/app:x`]]) {
      const s = sk(args);
      assert.equal(s.status, 1);
      assert.match(s.stderr, new RegExp(`registry ${A}/blk is blocked`));
      const o = tscopyFail(args, env);
      assert.notEqual(o.status, 0);
      assert.match(o.stderr, new RegExp(`registry ${A}/blk is blocked in registries.conf`));
    }
  });
});
