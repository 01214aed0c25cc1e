/**
 * Keeping storage in shape, against real `tsregistry serve` processes: `tsregistry scrub`
 * (corrupt blob and manifest found, quarantined, then answered as unknown), `tsregistry gc`
 * (dry run, real run, --delete-untagged, JSON), retention, tag immutability and quotas.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, tempDir } from '../helpers.js';
import { blob, errCode, pushBlob, pushImage, req, sha256, ACCEPT_ALL } from '../registry/util.js';
import { startTsregistry } from './util.js';

function blobFile(root: string, d: string): string {
  const hex = d.slice('sha256:'.length);
  return join(root, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

function tsregistry(args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'tsregistry.js'), ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** Flip one byte in the middle of a file (same size: only a re-hash notices). */
function corrupt(file: string): void {
  const b = readFileSync(file);
  b[b.length >> 1] = b[b.length >> 1]! ^ 0xff;
  writeFileSync(file, b);
}

describe('tsregistry scrub', () => {
  it('finds a corrupt blob and manifest, quarantines them, and the registry then answers unknown instead of bad bytes', async (t) => {
    const reg = await startTsregistry(t, { storage: { cache: { ttl: '0s' } } });
    const img = await pushImage(reg.url, 'app/one', 'v1', { layers: 2 });
    const other = await pushImage(reg.url, 'app/two', 'v1', { layers: 1 });
    const m = JSON.parse(img.bytes.toString('utf8'));
    const badLayer: string = m.layers[1].digest;
    const goodLayer: string = m.layers[0].digest;

    const clean = tsregistry(['scrub', '--root', reg.root]);
    assert.equal(clean.code, 0, clean.out + clean.err);
    assert.match(clean.out, /0 problems/);

    const badLayerBytes = readFileSync(blobFile(reg.root, badLayer));
    corrupt(blobFile(reg.root, badLayer));
    corrupt(blobFile(reg.root, other.digest));

    const dry = tsregistry(['scrub', '--root', reg.root, '--dry-run', '--format', 'json']);
    assert.equal(dry.code, 1, dry.err);
    const dr = JSON.parse(dry.out);
    assert.deepEqual(dr.corrupt.filter((p: { kind: string }) => p.kind === 'blob').map((p: { digest: string }) => p.digest).sort(), [badLayer, other.digest].sort());
    assert.ok(existsSync(blobFile(reg.root, badLayer)), 'dry run moves nothing');

    const r = tsregistry(['scrub', '--root', reg.root]);
    assert.equal(r.code, 1, 'problems found: exit 1');
    assert.match(r.err, new RegExp(`corrupt blob ${badLayer}: content hashes to sha256:`));
    assert.match(r.err, new RegExp(`corrupt manifest app/two@${other.digest}`));
    assert.match(r.err, new RegExp(`corrupt manifest app/one@${img.digest}: references ${badLayer}, which is corrupt \\(quarantined\\)`));
    assert.ok(!existsSync(blobFile(reg.root, badLayer)));
    const q = readdirSync(join(reg.root, 'quarantine', 'sha256'));
    assert.ok(q.some((n) => n.startsWith(badLayer.slice(7)) && !n.endsWith('.json')), `quarantined copy kept: ${q.join(', ')}`);

    // the server no longer serves the bad bytes
    const g = await req(reg.url, 'GET', `/v2/app/one/blobs/${badLayer}`);
    assert.equal(g.status, 404);
    assert.equal(errCode(g), 'BLOB_UNKNOWN');
    const h = await req(reg.url, 'HEAD', `/v2/app/one/blobs/${badLayer}`);
    assert.equal(h.status, 404);
    // a manifest still held in the live server's memory is served from there (the right bytes)...
    const warm = await req(reg.url, 'GET', `/v2/app/two/manifests/v1`, { headers: { Accept: ACCEPT_ALL } });
    if (warm.status === 200) assert.equal(sha256(warm.body), other.digest);
    else assert.equal(errCode(warm), 'MANIFEST_UNKNOWN');
    // ...and once the server restarts it is unknown
    await reg.stop();
    const reg2 = await startTsregistry(t, { storage: { cache: { ttl: '0s' } } }, { root: reg.root });
    const gm = await req(reg2.url, 'GET', `/v2/app/two/manifests/v1`, { headers: { Accept: ACCEPT_ALL } });
    assert.equal(gm.status, 404);
    assert.equal(errCode(gm), 'MANIFEST_UNKNOWN');
    assert.equal((await req(reg2.url, 'GET', `/v2/app/one/blobs/${badLayer}`)).status, 404);
    // the rest is untouched
    const ok = await req(reg2.url, 'GET', `/v2/app/one/blobs/${goodLayer}`);
    assert.equal(ok.status, 200);
    assert.equal(sha256(ok.body), goodLayer);
    const okm = await req(reg2.url, 'GET', `/v2/app/one/manifests/v1`, { headers: { Accept: ACCEPT_ALL } });
    assert.equal(okm.status, 200);

    // the lost manifest is still reported until it is pushed again; then a scrub is clean
    const still = tsregistry(['scrub', '--root', reg.root]);
    assert.equal(still.code, 1);
    assert.match(still.err, new RegExp(`corrupt manifest app/two@${other.digest}: manifest content is missing`));
    const re = await req(reg2.url, 'PUT', '/v2/app/two/manifests/v1', { body: other.bytes, headers: { 'Content-Type': other.mediaType } });
    assert.equal(re.status, 201);
    assert.equal(await pushBlob(reg2.url, 'app/one', badLayerBytes), badLayer);
    const again = tsregistry(['scrub', '--root', reg.root, '--quiet']);
    assert.equal(again.code, 0, again.out + again.err);
  });

  it('usage errors exit 2 and name the problem', () => {
    const r = tsregistry(['scrub', '--root', '/nonexistent/registry/root']);
    assert.equal(r.code, 2);
    assert.match(r.err, /does not exist/);
    const h = tsregistry(['gc', '--help']);
    assert.equal(h.code, 0);
    assert.match(h.out, /--dry-run/);
  });
});

describe('tsregistry gc', () => {
  it('dry run lists, real run deletes only unreferenced blobs; --delete-untagged frees untagged images; JSON report', async (t) => {
    const reg = await startTsregistry(t, { storage: { cache: { ttl: '0s' } } });
    const keep = await pushImage(reg.url, 'gc/keep', 'v1', { layers: 2 });
    const drop = await pushImage(reg.url, 'gc/drop', 'v1', { layers: 2 });
    const orphan = await pushBlob(reg.url, 'gc/keep', blob(5000).data);
    const keepDoc = JSON.parse(keep.bytes.toString('utf8'));
    const dropDoc = JSON.parse(drop.bytes.toString('utf8'));

    // default grace period (1h): nothing is old enough
    const none = tsregistry(['gc', '--root', reg.root]);
    assert.equal(none.code, 0, none.err);
    assert.match(none.out, /deleted 0 blobs/);

    const dry = tsregistry(['gc', '--root', reg.root, '--grace-period', '0s', '--dry-run']);
    assert.equal(dry.code, 0, dry.err);
    assert.match(dry.out, new RegExp(`would delete blob ${orphan}`));
    assert.ok(existsSync(blobFile(reg.root, orphan)));

    const real = tsregistry(['gc', '--root', reg.root, '--grace-period', '0s']);
    assert.equal(real.code, 0, real.err);
    assert.match(real.out, new RegExp(`deleted blob ${orphan}`));
    assert.ok(!existsSync(blobFile(reg.root, orphan)));
    for (const l of [keepDoc.config, ...keepDoc.layers, ...dropDoc.layers]) assert.ok(existsSync(blobFile(reg.root, l.digest)), `${l.digest} is referenced`);
    assert.equal((await req(reg.url, 'HEAD', `/v2/gc/keep/blobs/${orphan}`)).status, 404);

    // untag gc/drop:v1, then --delete-untagged frees the manifest and its blobs
    assert.equal((await req(reg.url, 'DELETE', '/v2/gc/drop/manifests/v1')).status, 202);
    const un = tsregistry(['gc', '--root', reg.root, '--grace-period', '0s', '--delete-untagged', '--format', 'json']);
    assert.equal(un.code, 0, un.err);
    const rep = JSON.parse(un.out);
    assert.equal(rep.gc.manifestsDeleted, 1);
    assert.equal(rep.gc.blobsDeleted, 4, 'manifest, config and two layers');
    for (const l of [dropDoc.config, ...dropDoc.layers]) assert.ok(!existsSync(blobFile(reg.root, l.digest)));
    assert.equal((await req(reg.url, 'GET', `/v2/gc/drop/manifests/${drop.digest}`, { headers: { Accept: ACCEPT_ALL } })).status, 404);
    // the kept image is whole
    for (const l of [keepDoc.config, ...keepDoc.layers]) {
      const g = await req(reg.url, 'GET', `/v2/gc/keep/blobs/${l.digest}`);
      assert.equal(sha256(g.body), l.digest);
    }
  });
});

describe('retention, immutability and quotas (real server)', () => {
  it('retention keeps the newest N and the keep patterns; immutable tags refuse overwrite and delete; quotas refuse going over', async (t) => {
    const dir = tempDir(t, 'regprod-ret');
    const reg = await startTsregistry(
      t,
      {
        storage: { cache: { ttl: '0s' } },
        retention: [{ repos: ['ci/**'], keepLast: 2, keep: ['stable'] }],
        immutable: [{ repos: ['prod/**'], tags: ['v*'] }],
        quota: [{ repos: ['team/**'], maxBytes: '20KiB' }],
      },
      { dir },
    );
    // retention
    const pushed: string[] = [];
    for (const tag of ['b1', 'stable', 'b2', 'b3', 'b4']) {
      await pushImage(reg.url, 'ci/app', tag);
      pushed.push(tag);
      await new Promise((r) => setTimeout(r, 30)); // distinct tag times
    }
    await pushImage(reg.url, 'other/app', 'b1');
    const cfg = join(dir, 'gc.yml');
    writeFileSync(cfg, `storage:\n  root: ${reg.root}\nretention:\n  - repos: ["ci/**"]\n    keepLast: 2\n    keep: [stable]\n`);
    const dry = tsregistry(['gc', '--config', cfg, '--dry-run']);
    assert.equal(dry.code, 0, dry.err);
    assert.match(dry.out, /would delete tag ci\/app:b1/);
    assert.match(dry.out, /would delete tag ci\/app:b2/);
    const r = tsregistry(['gc', '--config', cfg]);
    assert.equal(r.code, 0, r.err);
    const tags = (await req(reg.url, 'GET', '/v2/ci/app/tags/list')).json().tags;
    assert.deepEqual(tags, ['b3', 'b4', 'stable']);
    assert.deepEqual((await req(reg.url, 'GET', '/v2/other/app/tags/list')).json().tags, ['b1'], 'other repositories untouched');

    // immutability
    const v1 = await pushImage(reg.url, 'prod/api', 'v1');
    const again = await req(reg.url, 'PUT', '/v2/prod/api/manifests/v1', { body: v1.bytes, headers: { 'Content-Type': v1.mediaType } });
    assert.equal(again.status, 201, 'the identical manifest again is accepted');
    await assert.rejects(pushImage(reg.url, 'prod/api', 'v1'), /PUT manifest: 403 .*DENIED.*immutable/);
    const del = await req(reg.url, 'DELETE', '/v2/prod/api/manifests/v1');
    assert.equal(del.status, 403);
    assert.equal(errCode(del), 'DENIED');
    const byDigest = await req(reg.url, 'DELETE', `/v2/prod/api/manifests/${v1.digest}`);
    assert.equal(byDigest.status, 403, 'deleting the manifest would drop the immutable tag');
    await pushImage(reg.url, 'prod/api', 'latest');
    await pushImage(reg.url, 'prod/api', 'latest'); // mutable tags move freely
    const still = await req(reg.url, 'GET', '/v2/prod/api/manifests/v1', { headers: { Accept: ACCEPT_ALL } });
    assert.equal(sha256(still.body), v1.digest);

    // quota: 20 KiB in team/**
    await pushBlob(reg.url, 'team/a', blob(12 * 1024).data);
    await assert.rejects(pushBlob(reg.url, 'team/a', blob(12 * 1024).data), /403 .*DENIED/);
    await pushBlob(reg.url, 'team/b', blob(12 * 1024).data); // per repository
    await pushBlob(reg.url, 'free/a', blob(40 * 1024).data); // no rule
    // a mount over the quota is refused too
    const big = await pushBlob(reg.url, 'free/a', blob(15 * 1024).data);
    const mount = await req(reg.url, 'POST', `/v2/team/a/blobs/uploads/?mount=${big}&from=free/a`);
    assert.equal(mount.status, 403);
    assert.equal(errCode(mount), 'DENIED');
  });
});
