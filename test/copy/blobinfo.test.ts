/**
 * The blob-info cache (src/copy/blobinfo.ts): a copy into another repository of a registry mounts the blobs an
 * earlier copy sent there (skopeo's blob-info cache does the same), a location that no longer holds a blob is
 * forgotten after one failed mount, and the file survives torn lines and rewrites. Against the reference
 * registry (distribution); skopeo reads what the mounts produced.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { requireTool, sh, startDistribution, tempDir } from '../helpers.js';
import { baseLayout, type BaseLayout } from '../fixtures/base.js';
import { tscopy } from './engine-util.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import { BlobInfoCache } from '../../src/copy/blobinfo.js';

let base: BaseLayout;
let blobs: Digest[];
before(async () => {
  requireTool('skopeo');
  base = await baseLayout();
  const m = JSON.parse(sh('skopeo', ['inspect', '--raw', base.ociRef])) as { config: { digest: Digest }; layers: { digest: Digest }[] };
  blobs = [m.config.digest, ...m.layers.map((l) => l.digest)];
});

/** The summary line's counts. */
function counts(out: string): { copied: number; skipped: number; mounted: number } {
  const m = /\((\d+) copied, (\d+) skipped, (\d+) mounted\)/.exec(out);
  assert.ok(m, `no summary in:\n${out}`);
  return { copied: Number(m[1]), skipped: Number(m[2]), mounted: Number(m[3]) };
}

describe('blob-info cache', () => {
  it('a copy into another repository mounts what an earlier copy sent; none = no cache', async (t) => {
    const d = tempDir(t, 'bic');
    const reg = await startDistribution(t);
    const env = { TSIMAGE_BLOB_INFO_CACHE: join(d, 'cache.jsonl') };
    const push = (repo: string, e: NodeJS.ProcessEnv = env) => tscopy(['copy', '--dest-tls-verify=false', base.ociRef, `docker://${reg.addr}/${repo}:v1`], e);
    assert.deepEqual(counts(push('team-a/app')), { copied: blobs.length, skipped: 0, mounted: 0 });
    const lines = readFileSync(env.TSIMAGE_BLOB_INFO_CACHE, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { r: string; p: string; d: string });
    assert.deepEqual(new Set(lines.map((l) => `${l.r} ${l.p} ${l.d}`)), new Set(blobs.map((b) => `${reg.addr} team-a/app ${b}`)));
    // from an OCI layout (no source repository to mount from): the cache names team-a/app
    const second = push('team-b/app');
    assert.deepEqual(counts(second), { copied: 0, skipped: 0, mounted: blobs.length });
    assert.match(second, /mounted from team-a\/app/);
    // the mounted repository really holds the image: skopeo pulls it
    const out = join(d, 'out');
    sh('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${reg.addr}/team-b/app:v1`, `oci:${out}:x`]);
    assert.equal(digestOf(sh('skopeo', ['inspect', '--raw', `oci:${out}:x`])), base.manifestDigest);
    // a location already recorded within the hour is not written again
    const before = readFileSync(env.TSIMAGE_BLOB_INFO_CACHE, 'utf8');
    assert.equal(before.trim().split('\n').length, blobs.length * 2);
    // without a cache every byte moves again
    assert.deepEqual(counts(push('team-c/app', { TSIMAGE_BLOB_INFO_CACHE: 'none' })), { copied: blobs.length, skipped: 0, mounted: 0 });
    assert.equal(readFileSync(env.TSIMAGE_BLOB_INFO_CACHE, 'utf8'), before);
  });

  it('a location that no longer holds the blob is forgotten after one failed mount', async (t) => {
    const d = tempDir(t, 'bic');
    const reg = await startDistribution(t);
    const file = join(d, 'cache.jsonl');
    // the cache claims a repository that does not exist holds every blob (deleted since, or another registry on a reused port)
    writeFileSync(file, blobs.map((b) => JSON.stringify({ t: Date.now(), r: reg.addr, p: 'gone/app', d: b }) + '\n').join(''));
    const env = { TSIMAGE_BLOB_INFO_CACHE: file };
    const out1 = tscopy(['copy', '--dest-tls-verify=false', base.ociRef, `docker://${reg.addr}/fresh/app:v1`], env);
    assert.deepEqual(counts(out1), { copied: blobs.length, skipped: 0, mounted: 0 });
    const c = new BlobInfoCache(file);
    await c.load();
    for (const b of blobs) assert.deepEqual(c.candidates(reg.addr, b), ['fresh/app'], `candidates for ${b}`);
    // the next copy mounts from the repository that has them, and sends no request to gone/app
    const out2 = tscopy(['copy', '--dest-tls-verify=false', base.ociRef, `docker://${reg.addr}/next/app:v1`], env);
    assert.deepEqual(counts(out2), { copied: 0, skipped: 0, mounted: blobs.length });
    assert.doesNotMatch(out2, /gone\/app/);
  });

  it('the file: newest first, torn lines skipped, forgets kept, rewritten past its limit', async (t) => {
    const d = tempDir(t, 'bic');
    const file = join(d, 'sub', 'cache.jsonl');
    const dg = (i: number) => `sha256:${i.toString(16).padStart(64, '0')}` as Digest;
    const a = new BlobInfoCache(file, { maxBytes: 2000, keep: 5 });
    await a.load();
    a.record('r:1', 'x/old', dg(1));
    await new Promise((r) => setTimeout(r, 5));
    a.record('r:1', 'x/new', dg(1));
    a.record('r:2', 'y/other', dg(1));
    await a.flush();
    appendFileSync(file, '{"t":1,"r":"r:1","p":"torn'); // a writer killed mid-line
    const b = new BlobInfoCache(file, { maxBytes: 2000, keep: 5 });
    await b.load();
    assert.deepEqual(b.candidates('r:1', dg(1)), ['x/new', 'x/old']);
    assert.deepEqual(b.candidates('r:1', dg(1), ['x/new']), ['x/old']);
    assert.deepEqual(b.candidates('r:9', dg(1)), []);
    b.forget('r:1', 'x/new', dg(1));
    await b.flush();
    const c = new BlobInfoCache(file, { maxBytes: 2000, keep: 5 });
    await c.load();
    assert.deepEqual(c.candidates('r:1', dg(1)), ['x/old']);
    // past maxBytes the file is rewritten with the newest `keep` records: no torn line, no forgotten location
    for (let i = 2; i < 35; i++) c.record('r:1', 'z/many', dg(i));
    await new Promise((r) => setTimeout(r, 5));
    for (let i = 35; i < 40; i++) c.record('r:1', 'z/many', dg(i));
    await c.flush();
    const text = readFileSync(file, 'utf8');
    const kept = text.trim().split('\n').map((l) => JSON.parse(l) as { p: string; d: string; x?: number });
    assert.equal(kept.length, 5);
    assert.ok(kept.every((l) => l.p === 'z/many' && !l.x));
    assert.deepEqual(kept.map((l) => l.d).sort(), [35, 36, 37, 38, 39].map(dg).sort());
    // an unusable place (under a regular file) never fails the caller
    writeFileSync(join(d, 'afile'), '');
    const bad = new BlobInfoCache(join(d, 'afile', 'x', 'cache.jsonl'));
    await bad.load();
    bad.record('r:1', 'a/b', dg(1));
    await bad.flush();
  });
});
