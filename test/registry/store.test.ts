/** Storage driver suite, upload sessions across restarts and expiry, concurrency, and the config loader. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { FilesystemDriver, PathNotFoundError, RegistryStore, loadConfig, makeConfig, type StorageDriver } from '../../src/registry/index.js';
import { tempDir } from '../helpers.js';
import { OCI_MANIFEST, blob, errCode, pushBlob, pushImage, req, sha256, startRegistry } from './util.js';

function driverSuite(name: string, make: (t: { after(fn: () => void): void }) => Promise<StorageDriver>): void {
  describe(`StorageDriver suite: ${name}`, () => {
    it('putContent/getContent/stat/list/move/delete and typed not-found errors', async (t) => {
      const d = await make(t);
      await d.putContent('/a/b/c', 'hello');
      assert.equal((await d.getContent('/a/b/c')).toString(), 'hello');
      assert.equal((await d.stat('/a/b/c')).size, 5);
      assert.deepEqual(await d.list('/a/b'), ['c']);
      assert.deepEqual(await d.list('/nope'), []);
      await d.putContent('/a/b/c', 'replaced');
      assert.equal((await d.getContent('/a/b/c')).toString(), 'replaced');
      await d.move('/a/b/c', '/x/y/z');
      await assert.rejects(d.getContent('/a/b/c'), PathNotFoundError);
      await assert.rejects(d.stat('/a/b/c'), PathNotFoundError);
      await assert.rejects(d.move('/a/b/c', '/q'), PathNotFoundError);
      assert.equal((await d.getContent('/x/y/z')).toString(), 'replaced');
      await d.delete('/x');
      await d.delete('/x');
      assert.deepEqual(await d.list('/x'), []);
      assert.throws(() => d.localPath?.('/../etc/passwd'));
    });
    it('writer appends and readers read from offsets', async (t) => {
      const d = await make(t);
      let w = await d.writer('/up/data', true);
      w.write(Buffer.from('0123'));
      await w.commit();
      w = await d.writer('/up/data', true);
      assert.equal(w.size, 4);
      w.write(Buffer.from('456789'));
      await w.commit();
      assert.equal(w.size, 10);
      const chunks: Buffer[] = [];
      for await (const c of await d.reader('/up/data', 3)) chunks.push(c as Buffer);
      assert.equal(Buffer.concat(chunks).toString(), '3456789');
      const part: Buffer[] = [];
      for await (const c of await d.reader('/up/data', 2, 4)) part.push(c as Buffer);
      assert.equal(Buffer.concat(part).toString(), '234');
      const c2 = await d.writer('/up/other', false);
      c2.write(Buffer.from('x'));
      await c2.cancel();
      await assert.rejects(d.stat('/up/other'), PathNotFoundError);
      await assert.rejects(d.reader('/up/missing'), PathNotFoundError);
    });
  });
}

driverSuite('filesystem', async (t) => new FilesystemDriver(tempDir(t, 'drv')));

describe('upload sessions', () => {
  it('survive a registry restart (hash recomputed on PUT) and keep their offset', async (t) => {
    const root = tempDir(t, 'reg-restart');
    const b = blob(50_000);
    const reg1 = await startRegistry(t, {}, { root });
    const s = await req(reg1.url, 'POST', '/v2/r/blobs/uploads/');
    const loc = s.headers.get('location')!;
    await req(reg1.url, 'PATCH', loc, { body: b.data.subarray(0, 20_000), headers: { 'Content-Range': '0-19999' } });
    await reg1.close();
    const reg2 = await startRegistry(t, {}, { root });
    const st = await req(reg2.url, 'GET', loc);
    assert.equal(st.status, 204);
    assert.equal(st.headers.get('range'), '0-19999');
    const bad = await req(reg2.url, 'PATCH', loc, { body: b.data.subarray(30_000), headers: { 'Content-Range': '30000-49999' } });
    assert.equal(bad.status, 416);
    await req(reg2.url, 'PATCH', loc, { body: b.data.subarray(20_000, 40_000), headers: { 'Content-Range': '20000-39999' } });
    const fin = await req(reg2.url, 'PUT', `${loc}?digest=${b.digest}`, { body: b.data.subarray(40_000) });
    assert.equal(fin.status, 201, fin.text);
    assert.ok((await req(reg2.url, 'GET', `/v2/r/blobs/${b.digest}`)).body.equals(b.data));
  });

  it('expire after the configured time', async (t) => {
    const root = tempDir(t, 'reg-expire');
    const reg = await startRegistry(t, { storage: { uploads: { expiry: '1h', purgeInterval: 0 } } }, { root });
    const old = await req(reg.url, 'POST', '/v2/e/blobs/uploads/');
    const fresh = await req(reg.url, 'POST', '/v2/e/blobs/uploads/');
    // age the first session on disk
    const id = old.headers.get('docker-upload-uuid')!;
    writeFileSync(join(root, 'repositories/e/_uploads', id, 'startedat'), new Date(Date.now() - 2 * 3600_000).toISOString());
    const reg2 = await startRegistry(t, { storage: { uploads: { expiry: '1h', purgeInterval: 0 } } }, { root });
    const n = await reg2.store.purgeUploads(Date.now() - reg2.config.storage.uploads.expiry);
    assert.equal(n, 1);
    assert.equal(errCode(await req(reg2.url, 'GET', old.headers.get('location')!)), 'BLOB_UPLOAD_UNKNOWN');
    assert.equal((await req(reg2.url, 'GET', fresh.headers.get('location')!)).status, 204);
    assert.deepEqual(readdirSync(join(root, 'repositories/e/_uploads')), [fresh.headers.get('docker-upload-uuid')]);
  });
});

describe('concurrency', () => {
  it('10 clients pushing the same blob, tags and many repositories at once', async (t) => {
    const reg = await startRegistry(t);
    const b = blob(300_000);
    const digests = await Promise.all(Array.from({ length: 10 }, (_, i) => pushBlob(reg.url, `con/r${i % 3}`, b.data)));
    assert.ok(digests.every((d) => d === b.digest));
    for (let i = 0; i < 3; i++) assert.ok((await req(reg.url, 'GET', `/v2/con/r${i}/blobs/${b.digest}`)).body.equals(b.data));
    const blobsDir = join(reg.config.storage.root, 'blobs/sha256', b.digest.slice(7, 9));
    assert.deepEqual(readdirSync(blobsDir), [b.digest.slice(7)], 'stored once, no temp files left');
    const imgs = await Promise.all(Array.from({ length: 10 }, (_, i) => pushImage(reg.url, 'con/tag', 'same', { seed: String(i) })));
    const g = await req(reg.url, 'GET', '/v2/con/tag/manifests/same', { headers: { Accept: OCI_MANIFEST } });
    assert.ok(imgs.some((i) => i.digest === g.headers.get('docker-content-digest')), 'the tag points to one of the pushed manifests');
    assert.deepEqual(readdirSync(join(reg.config.storage.root, 'repositories/con/tag/_manifests/tags')), ['same']);
  });
});

describe('store hooks and events', () => {
  it('a beforeManifestPut hook can refuse a tag overwrite with a spec error; events fire', async (t) => {
    const { OciError } = await import('../../src/oci/index.js');
    const events: string[] = [];
    const reg = await startRegistry(t, {}, {
      hooks: {
        beforeManifestPut: (e) => {
          if (e.tag === 'release' && e.previous && e.previous !== e.digest) throw new OciError('DENIED', `tag ${e.tag} is immutable`);
        },
      },
    });
    reg.store.on((e) => events.push(e.type));
    await pushImage(reg.url, 'imm', 'release');
    await assert.rejects(pushImage(reg.url, 'imm', 'release'), /403/);
    assert.ok(events.includes('blob.pushed') && events.includes('manifest.pushed'));
  });

  it('the authoriser sees the route, the repository and the access (mount asks pull on the source)', async (t) => {
    const seen: string[] = [];
    const reg = await startRegistry(t, {}, {
      authorize: (c, access, route) => {
        seen.push(`${route} ${access.map((a) => `${a.name}:${a.actions.join(',')}`).join(' ')}`);
        if (access.some((a) => a.name === 'secret')) return c.json({ errors: [{ code: 'DENIED', message: 'no' }] }, 403);
      },
    });
    const b = blob(10);
    await pushBlob(reg.url, 'pub', b.data);
    const m = await req(reg.url, 'POST', `/v2/pub2/blobs/uploads/?mount=${b.digest}&from=pub`);
    assert.equal(m.status, 201);
    assert.ok(seen.includes('upload-mount pub2:pull,push pub:pull') || seen.includes('upload-start pub2:pull,push pub:pull'), seen.join('\n'));
    assert.equal((await req(reg.url, 'GET', `/v2/secret/blobs/${sha256('x')}`)).status, 403);
    assert.equal((await req(reg.url, 'GET', '/v2/_catalog')).status, 200);
    assert.ok(seen.includes('catalog catalog:*'));
  });
});

describe('config', () => {
  it('defaults, YAML file, env and flag overrides, in that order', async (t) => {
    const dir = tempDir(t, 'cfg');
    const file = join(dir, 'config.yml');
    writeFileSync(file, 'http:\n  addr: 127.0.0.1:6000\nstorage:\n  root: /data\n  uploads:\n    expiry: 2h\nlimits:\n  manifestSize: 1MiB\n');
    const c = await loadConfig({ file, env: { TSREGISTRY_STORAGE_UPLOADS_EXPIRY: '90m', TSREGISTRY_STORAGE_CACHE_TTL: '0' }, overrides: { addr: '127.0.0.1:7000' } });
    assert.equal(c.http.addr, '127.0.0.1:7000');
    assert.equal(c.storage.root, '/data');
    assert.equal(c.storage.uploads.expiry, 90 * 60_000);
    assert.equal(c.storage.cache.ttl, 0);
    assert.equal(c.limits.manifestSize, 1024 * 1024);
    assert.equal(c.storage.fsync, true);
    const d = await makeConfig({}, { TSIMAGE_REGISTRY_ROOT: '/srv/reg' });
    assert.equal(d.storage.root, '/srv/reg');
    assert.equal(d.http.addr, '127.0.0.1:5000');
  });

  it('validation names the bad key', async (t) => {
    const dir = tempDir(t, 'cfg');
    const file = join(dir, 'bad.yml');
    writeFileSync(file, 'storage:\n  uploads:\n    expiry: soon\n');
    await assert.rejects(loadConfig({ file, env: {} }), /config storage\.uploads\.expiry: expected a duration/);
    await assert.rejects(makeConfig({ storage: { rooot: '/x' } }), /config storage\.rooot: unknown key/);
    await assert.rejects(makeConfig({ http: { addr: 'nope' } }), /config http\.addr: expected HOST:PORT/);
    await assert.rejects(loadConfig({ env: { TSREGISTRY_STORAGE_FSYNC: 'maybe' } }), /storage\.fsync \(from \$TSREGISTRY_STORAGE_FSYNC\): expected true or false/);
    writeFileSync(file, 'http: [1\n');
    await assert.rejects(loadConfig({ file, env: {} }), /not valid YAML/);
    await assert.rejects(loadConfig({ file: join(dir, 'missing.yml'), env: {} }), /cannot read config file/);
  });
});

void Readable;
void RegistryStore;
