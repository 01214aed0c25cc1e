/** --cache-to / --cache-from: cache entries as OCI artifacts in a real registry (distribution 2.8), read back by skopeo too. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { sh, startDistribution, tempDir, requireTool } from '../helpers.js';
import { OciLayout, digestOf, type MediaType } from '../../src/oci/index.js';
import { BuildCache, cacheKey } from '../../src/builder/cache.js';
import { CACHE_ARTIFACT_TYPE, cacheTag, RegistryCache, RemoteCaches } from '../../src/builder/cache-remote.js';
import { closeRegistryClients } from '../../src/copy/index.js';

describe('registry build cache', () => {
  it('pushes entries as artifacts and imports them into an empty store and cache', async (t) => {
    requireTool('skopeo');
    const reg = await startDistribution(t);
    t.after(() => closeRegistryClients?.());
    const layerBytes = gzipSync(randomBytes(64 * 1024));
    const mediaType = 'application/vnd.oci.image.layer.v1.tar+gzip' as MediaType;
    // machine A: a local store with the layer, a cache with two entries (one with a layer, one without)
    const storeA = await OciLayout.open(tempDir(t, 'storeA'), { create: true });
    const desc = await storeA.ingest({ mediaType }, Readable.from([layerBytes]));
    const cacheA = await BuildCache.open(tempDir(t, 'cacheA'));
    const parent = cacheKey(undefined, 'FROM base', { base: 'sha256:' + 'a'.repeat(64) });
    const k1 = cacheKey(parent, 'COPY app /app');
    const k2 = cacheKey(k1, 'RUN true');
    const diffID = 'sha256:' + 'd'.repeat(64);
    const e1 = await cacheA.put(k1, { parent, instruction: 'COPY app /app', result: { layer: { digest: desc.digest, diffID, size: desc.size, mediaType }, history: { created_by: 'COPY app /app' } } });
    const e2 = await cacheA.put(k2, { parent: k1, instruction: 'RUN true', result: { history: { created_by: 'RUN true', empty_layer: true } } });
    const repo = `${reg.addr}/cache/app`;
    const rcA = await RegistryCache.open(repo, { tlsVerify: false });
    const r = await rcA.push([e1, e2], storeA);
    assert.deepEqual(r, { pushed: 2, blobs: 1 });
    // pushing again sends no blob (HEAD finds it)
    assert.deepEqual(await rcA.push([e1], storeA), { pushed: 1, blobs: 0 });

    // a peer reads the artifact as we wrote it
    const raw = JSON.parse(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${repo}:${cacheTag(k1)}`]));
    assert.equal(raw.artifactType, CACHE_ARTIFACT_TYPE);
    assert.equal(raw.layers[0].digest, desc.digest);
    assert.equal(raw.annotations['dev.tsimage.cache.key'], k1);

    // machine B: empty store and cache
    const storeB = await OciLayout.open(tempDir(t, 'storeB'), { create: true });
    const cacheB = await BuildCache.open(tempDir(t, 'cacheB'));
    const rcB = await RegistryCache.open(repo, { tlsVerify: false });
    assert.equal(await rcB.fetch(cacheKey(parent, 'COPY other /x'), cacheB, storeB), undefined);
    const got = await rcB.fetch(k1, cacheB, storeB);
    assert.ok(got);
    assert.deepEqual(got.result.layer, { digest: desc.digest, diffID, size: desc.size, mediaType });
    assert.deepEqual(got.result.history, { created_by: 'COPY app /app' });
    assert.equal(got.parent, parent);
    assert.deepEqual(await storeB.stat(desc.digest), { size: layerBytes.length });
    const again = await cacheB.get(k1);
    assert.equal(again?.result.layer?.digest, desc.digest);
    const got2 = await rcB.fetch(k2, cacheB, storeB);
    assert.equal(got2?.result.layer, undefined);
    assert.equal(got2?.parent, k1);
    assert.equal(digestOf(layerBytes), desc.digest);
    await assert.rejects(RegistryCache.open(`${repo}:sometag`, { tlsVerify: false }), /without a tag or digest/);

    // RemoteCaches: the build-level helper (--cache-from tried in order, --cache-to pushes what was recorded)
    const storeC = await OciLayout.open(tempDir(t, 'storeC'), { create: true });
    const cacheC = await BuildCache.open(tempDir(t, 'cacheC'));
    const rcs = new RemoteCaches([`${reg.addr}/cache/empty`, repo], `${reg.addr}/cache/copy`, { tlsVerify: false });
    assert.ok(rcs.enabled);
    const hit = await rcs.lookup(k1, cacheC, storeC);
    assert.equal(hit?.result.layer?.digest, desc.digest);
    rcs.record(k1);
    assert.deepEqual(await rcs.flush(cacheC, storeC), { pushed: 1, blobs: 1 });
    await rcs.close();
    const copied = JSON.parse(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.addr}/cache/copy:${cacheTag(k1)}`]));
    assert.equal(copied.layers[0].digest, desc.digest);
  });
});
