/** The project's busybox base image (buildBusyboxBase) and the shared fixture. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tempDir, requireTool } from '../helpers.js';
import { baseLayout } from '../fixtures/base.js';
import { OciLayout, buildBusyboxBase, MediaTypes, parseManifest, parseConfig, type ImageManifest, type Digest } from '../../src/oci/index.js';

async function read(layout: OciLayout, ref = 'latest') {
  const desc = await layout.resolve(ref);
  const m = parseManifest(await layout.readBytes(desc.digest), desc.mediaType);
  const manifest = m.doc as ImageManifest;
  const config = parseConfig(await layout.readBytes(manifest.config.digest));
  return { desc, manifest, config };
}

describe('busybox base image', () => {
  it('is reproducible: same inputs give the same digests, another epoch other digests', async (t) => {
    const a = await OciLayout.open(tempDir(t, 'base'), { create: true });
    const b = await OciLayout.open(tempDir(t, 'base'), { create: true });
    const c = await OciLayout.open(tempDir(t, 'base'), { create: true });
    const da = await buildBusyboxBase(a, { epoch: 0 });
    const db = await buildBusyboxBase(b, { epoch: 0, tag: 'v1' });
    const dc = await buildBusyboxBase(c, { epoch: 1_700_000_000 });
    assert.equal(da.digest, db.digest);
    assert.notEqual(da.digest, dc.digest);
    const fixture = await baseLayout();
    assert.equal(fixture.manifestDigest, da.digest);
    // every blob identical
    for await (const d of a.digests()) assert.ok(readFileSync(b.blobPath(d)).equals(readFileSync(a.blobPath(d))));
    assert.equal((await b.resolve('v1')).digest, db.digest);
    const { config } = await read(c);
    assert.equal(config.created, '2023-11-14T22:13:20Z');
  });

  it('has the content of make-base.sh: applets, files, modes, config', async (t) => {
    requireTool('tar');
    const layout = await OciLayout.open((await baseLayout()).dir);
    const { desc, manifest, config } = await read(layout);
    assert.equal(desc.mediaType, MediaTypes.ociManifest);
    assert.equal(manifest.layers.length, 1);
    assert.equal(manifest.layers[0]!.mediaType, MediaTypes.ociLayerGzip);
    assert.equal(manifest.config.mediaType, MediaTypes.ociConfig);
    assert.equal(config.architecture, process.arch === 'x64' ? 'amd64' : process.arch);
    assert.equal(config.os, 'linux');
    assert.deepEqual(config.config?.Cmd, ['/bin/sh']);
    assert.deepEqual(config.config?.Env, ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin']);
    assert.equal(config.config?.Labels?.['org.opencontainers.image.title'], 'peers-busybox-base');
    assert.match(config.config?.Labels?.['org.opencontainers.image.description'] ?? '', /^static busybox v\d+\.\d+\.\d+ from Debian busybox-static$/);
    assert.equal(config.created, '1970-01-01T00:00:00Z');
    assert.deepEqual(config.history, [{ created: '1970-01-01T00:00:00Z', created_by: 'make-base.sh: ADD busybox-static rootfs' }]);
    // the diffID is the sha256 of the uncompressed layer
    const layerPath = layout.blobPath(manifest.layers[0]!.digest);
    const tar = execFileSync('gzip', ['-dc', layerPath], { maxBuffer: 64 << 20 });
    assert.equal(config.rootfs.diff_ids[0], `sha256:${createHash('sha256').update(tar).digest('hex')}` as Digest);
    // listing by GNU tar (an independent reader)
    const listing = execFileSync('tar', ['-tvzf', layerPath, '--numeric-owner'], { encoding: 'utf8' }).trim().split('\n');
    const entries = new Map(listing.map((l) => {
      const f = l.split(/\s+/);
      const name = f[5]!;
      return [name, { mode: f[0]!, owner: f[1]!, target: f[7] }];
    }));
    const applets = execFileSync('/bin/busybox', ['--list'], { encoding: 'utf8' }).trim().split('\n').filter((a) => a !== 'busybox');
    assert.ok(applets.length > 200);
    for (const a of applets) {
      const e = entries.get(`bin/${a}`);
      assert.ok(e, `bin/${a} missing`);
      assert.equal(e.mode, 'lrwxrwxrwx');
      assert.equal(e.target, 'busybox');
    }
    assert.equal(entries.get('bin/busybox')?.mode, '-rwxr-xr-x');
    assert.equal(entries.get('tmp/')?.mode, 'drwxrwxrwt');
    assert.equal(entries.get('var/tmp/')?.mode, 'drwxrwxrwt');
    assert.equal(entries.get('root/')?.mode, 'drwx------');
    for (const d of ['dev/', 'etc/', 'home/', 'proc/', 'sys/', 'sbin/', 'usr/bin/', 'usr/sbin/']) assert.equal(entries.get(d)?.mode, 'drwxr-xr-x', d);
    for (const [, e] of entries) assert.equal(e.owner, '0/0');
    assert.equal(entries.size, applets.length + 1 + 3 + 14);
    const passwd = execFileSync('tar', ['-xzOf', layerPath, 'etc/passwd'], { encoding: 'utf8' });
    assert.match(passwd, /^root:x:0:0:root:\/root:\/bin\/sh\n/);
    assert.ok(execFileSync('tar', ['-xzOf', layerPath, 'bin/busybox'], { maxBuffer: 64 << 20 }).equals(readFileSync('/bin/busybox')));
  });

  it('fails clearly without a usable busybox, leaving the layout unchanged', async (t) => {
    const layout = await OciLayout.open(tempDir(t, 'base'), { create: true });
    await assert.rejects(buildBusyboxBase(layout, { busybox: '/nonexistent/busybox' }), /busybox binary \/nonexistent\/busybox not found/);
    await assert.rejects(buildBusyboxBase(layout, { busybox: '/etc/hostname' }), /cannot run \/etc\/hostname/);
    assert.deepEqual((await layout.readIndex()).manifests, []);
    const blobs: string[] = [];
    for await (const d of layout.digests()) blobs.push(d);
    assert.deepEqual(blobs, []);
  });
});
