/** OCI archives and docker-archives: round trips, in-place readers, bad input that changes nothing. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { fileHashes, tempDir } from '../helpers.js';
import { baseLayoutCopy, baseLayout } from '../fixtures/base.js';
import {
  OciLayout,
  OciArchiveReader,
  DockerArchiveReader,
  DockerArchiveWriter,
  importOciArchive,
  exportOciArchive,
  importDockerArchive,
  exportDockerArchive,
  indexTarFile,
  packEntries,
  readAll,
  digestOf,
  MediaTypes,
  DigestMismatchError,
  OciError,
  parseConfig,
  parseManifest,
  toJsonBytes,
  type Descriptor,
  type Digest,
  type ImageManifest,
  type TarEntry,
} from '../../src/oci/index.js';

function sha(b: Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(b).digest('hex')}` as Digest;
}

async function blobSet(l: OciLayout): Promise<string[]> {
  const out: string[] = [];
  for await (const d of l.digests()) out.push(d);
  return out.sort();
}

/** A second, small image (uncompressed layer) in a layout, named `name`. */
async function smallImage(l: OciLayout, name: string, content = 'hello'): Promise<Descriptor> {
  const tar = await readAll(packEntries([{ header: { name: 'hello.txt', type: 'file', size: content.length }, body: content }]));
  const layer = await l.putBytes(MediaTypes.ociLayer, tar);
  const config = await l.putBytes(
    MediaTypes.ociConfig,
    toJsonBytes({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layer.digest] }, config: { Cmd: ['/bin/sh'] } }),
  );
  const m = await l.putBytes(MediaTypes.ociManifest, toJsonBytes({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config, layers: [layer] }));
  await l.tag(name, m);
  return m;
}

/** A tar with given members (for hand-made, broken archives). */
async function writeTar(path: string, files: Record<string, Buffer | string>): Promise<void> {
  const entries: TarEntry[] = Object.entries(files).map(([name, body]) => ({
    header: { name, type: 'file', size: Buffer.byteLength(body) },
    body,
  }));
  writeFileSync(path, await readAll(packEntries(entries), 1 << 30));
}

describe('OCI archive', () => {
  it('round trips a whole layout byte for byte, reproducibly', async (t) => {
    const src = await baseLayoutCopy(tempDir(t, 'arch'));
    await smallImage(src, 'small');
    const out = tempDir(t, 'arch');
    const a1 = join(out, 'a1.tar');
    const a2 = join(out, 'a2.tar');
    const res = await exportOciArchive(src, a1);
    assert.equal(res.manifests.length, 2);
    await exportOciArchive(src, a2);
    assert.ok(readFileSync(a1).equals(readFileSync(a2)), 'same layout, same archive bytes');
    assert.deepEqual(readdirSync(out).sort(), ['a1.tar', 'a2.tar'], 'no temp files left');
    const dst = await OciLayout.open(join(out, 'dst'), { create: true });
    const added = await importOciArchive(a1, dst);
    assert.deepEqual(added.map((d) => d.digest), (await src.readIndex()).manifests.map((d) => d.digest));
    assert.deepEqual(fileHashes(dst.dir), fileHashes(src.dir));
  });

  it('exports only what the named images reach, and imports from a stream', async (t) => {
    const src = await baseLayoutCopy(tempDir(t, 'arch'));
    const small = await smallImage(src, 'small');
    const out = tempDir(t, 'arch');
    await exportOciArchive(src, join(out, 'small.tar'), { refs: ['small'] });
    const r = await OciArchiveReader.open(join(out, 'small.tar'));
    assert.deepEqual(r.list().map((e) => e.name), ['small']);
    const m = parseManifest(await r.readBytes(small.digest), small.mediaType).doc as ImageManifest;
    assert.deepEqual([...r.digests()].sort(), [small.digest, m.config.digest, m.layers[0]!.digest].sort());
    const dst = await OciLayout.open(join(out, 'dst'), { create: true });
    await importOciArchive(createReadStream(join(out, 'small.tar')), dst, { tag: 'renamed' });
    assert.equal((await dst.resolve('renamed')).digest, small.digest);
    assert.equal(await dst.find('small'), undefined);
    assert.deepEqual(await blobSet(dst), [...r.digests()].sort());
    await assert.rejects(exportOciArchive(src, join(out, 'x.tar'), { refs: ['nope'] }), (e: Error) => e instanceof OciError && e.code === 'MANIFEST_UNKNOWN');
  });

  it('reads blobs in place by seeking (ranges, digests verified by readBytes)', async (t) => {
    const base = await baseLayout();
    const out = tempDir(t, 'arch');
    const l = await OciLayout.open(base.dir);
    await exportOciArchive(l, join(out, 'b.tar'));
    const r = await OciArchiveReader.open(join(out, 'b.tar'));
    const desc = await r.resolve('latest');
    assert.equal(desc.digest, base.manifestDigest);
    assert.deepEqual(await r.resolve(), desc);
    const m = parseManifest(await r.readBytes(desc.digest), desc.mediaType).doc as ImageManifest;
    const layer = m.layers[0]!;
    assert.deepEqual(r.stat(layer.digest), { size: layer.size });
    const whole = await readAll(await r.open(layer.digest), 1 << 30);
    assert.equal(sha(whole), layer.digest);
    const part = await readAll(await r.open(layer.digest, { start: 100, end: 199 }));
    assert.ok(part.equals(whole.subarray(100, 200)));
    await assert.rejects(r.open(sha(Buffer.from('x'))), (e: Error) => e instanceof OciError && e.code === 'BLOB_UNKNOWN');
    const idx = await indexTarFile(join(out, 'b.tar'));
    assert.ok(idx.has('index.json') && idx.has('oci-layout') && idx.has(`blobs/sha256/${layer.digest.slice(7)}`));
  });

  it('a blob that does not match its name fails the import and names nothing', async (t) => {
    const dir = tempDir(t, 'arch');
    const dst = await OciLayout.open(join(dir, 'dst'), { create: true });
    await smallImage(dst, 'keep');
    const before = fileHashes(dst.dir);
    const good = Buffer.from('good');
    const liar = sha(Buffer.from('what the name claims'));
    const m = toJsonBytes({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { mediaType: MediaTypes.ociConfig, digest: sha(good), size: 4 }, layers: [] });
    await writeTar(join(dir, 'bad.tar'), {
      'oci-layout': '{"imageLayoutVersion": "1.0.0"}',
      [`blobs/sha256/${liar.slice(7)}`]: 'actual bytes',
      [`blobs/sha256/${sha(m).slice(7)}`]: m,
      'index.json': JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MediaTypes.ociManifest, digest: sha(m), size: m.length, annotations: { 'org.opencontainers.image.ref.name': 'bad' } }] }),
    });
    await assert.rejects(importOciArchive(join(dir, 'bad.tar'), dst), (e: Error) => e instanceof DigestMismatchError && e.message.includes(liar));
    assert.equal(await dst.has(liar), false);
    assert.deepEqual(fileHashes(dst.dir), before);
  });

  it('incomplete or non-archives give clear errors and change nothing', async (t) => {
    const dir = tempDir(t, 'arch');
    const dst = await OciLayout.open(join(dir, 'dst'), { create: true });
    const before = fileHashes(dst.dir);
    const cfg = Buffer.from('{}');
    const layerDigest = sha(Buffer.from('missing layer'));
    const m = toJsonBytes({
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      config: { mediaType: MediaTypes.ociConfig, digest: sha(cfg), size: 2 },
      layers: [{ mediaType: MediaTypes.ociLayerGzip, digest: layerDigest, size: 13 }],
    });
    await writeTar(join(dir, 'incomplete.tar'), {
      'oci-layout': '{"imageLayoutVersion": "1.0.0"}',
      [`blobs/sha256/${sha(cfg).slice(7)}`]: cfg,
      [`blobs/sha256/${sha(m).slice(7)}`]: m,
      'index.json': JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MediaTypes.ociManifest, digest: sha(m), size: m.length }] }),
    });
    await assert.rejects(importOciArchive(join(dir, 'incomplete.tar'), dst), new RegExp(`incomplete: blob ${layerDigest} \\(layers\\[0\\]`));
    assert.deepEqual((await dst.readIndex()).manifests, []);
    await writeTar(join(dir, 'noindex.tar'), { 'oci-layout': '{"imageLayoutVersion": "1.0.0"}' });
    await assert.rejects(importOciArchive(join(dir, 'noindex.tar'), dst), /not an OCI archive \(no index.json/);
    await assert.rejects(OciArchiveReader.open(join(dir, 'noindex.tar')), /not an OCI archive \(no index.json/);
    await writeTar(join(dir, 'nolayout.tar'), { 'index.json': '{"schemaVersion":2,"manifests":[]}' });
    await assert.rejects(importOciArchive(join(dir, 'nolayout.tar'), dst), /not an OCI archive \(no oci-layout/);
    writeFileSync(join(dir, 'junk.tar'), randomBytes(2048));
    await assert.rejects(importOciArchive(join(dir, 'junk.tar'), dst), /checksum|tar/i);
    await assert.rejects(OciArchiveReader.open(join(dir, 'junk.tar')), /not a tar archive, or corrupt/);
    await assert.rejects(importOciArchive(join(dir, 'missing.tar'), dst), /does not exist/);
    // truncated: the first half of a good archive
    const good = await baseLayoutCopy(tempDir(t, 'arch'));
    await exportOciArchive(good, join(dir, 'good.tar'));
    const bytes = readFileSync(join(dir, 'good.tar'));
    writeFileSync(join(dir, 'trunc.tar'), bytes.subarray(0, Math.floor(bytes.length / 2)));
    await assert.rejects(importOciArchive(join(dir, 'trunc.tar'), dst), /truncated|unexpected end/i);
    await assert.rejects(OciArchiveReader.open(join(dir, 'trunc.tar')), /truncated/);
    const after = fileHashes(dst.dir);
    assert.equal(after['index.json'], before['index.json']);
    assert.deepEqual(Object.keys(after).filter((k) => k.includes('.tmp-')), []);
  });
});

describe('docker-archive', () => {
  it('exports an image, reads it back as skopeo presents it, and imports it with the same diffIDs', async (t) => {
    const base = await baseLayout();
    const src = await OciLayout.open(base.dir);
    const dir = tempDir(t, 'darch');
    const path = join(dir, 'img.tar');
    await exportDockerArchive(src, path, [{ ref: 'latest', repoTags: ['busybox', 'localhost/base:v1'] }]);
    const srcManifest = parseManifest(await src.readBytes(base.manifestDigest)).doc as ImageManifest;
    const srcConfigBytes = await src.readBytes(srcManifest.config.digest);
    const srcConfig = parseConfig(srcConfigBytes);

    const r = await DockerArchiveReader.open(path);
    assert.deepEqual(r.items[0]!.RepoTags, ['docker.io/library/busybox:latest', 'localhost/base:v1']);
    assert.equal(r.select('busybox:latest'), 0);
    assert.equal(r.select('docker.io/library/busybox'), 0);
    assert.throws(() => r.select('other:tag'), /no image tagged/);
    const img = await r.image(0);
    assert.equal(img.config.digest, srcManifest.config.digest);
    assert.deepEqual(img.layers.map((l) => l.diffID), srcConfig.rootfs.diff_ids);
    const dm = JSON.parse(img.manifest.bytes.toString());
    assert.equal(dm.mediaType, MediaTypes.dockerManifest);
    assert.equal(dm.layers[0].digest, srcConfig.rootfs.diff_ids[0]);
    assert.equal(img.manifest.digest, digestOf(img.manifest.bytes));
    const layerBytes = await readAll(await r.blob(0, img.layers[0]!.diffID), 1 << 30);
    assert.equal(sha(layerBytes), img.layers[0]!.diffID);
    assert.equal(layerBytes.length, img.layers[0]!.size);

    for (const compression of ['none', 'gzip'] as const) {
      const dst = await OciLayout.open(join(dir, `dst-${compression}`), { create: true });
      const m = await importDockerArchive(path, dst, { compression });
      assert.equal((await dst.resolve('docker.io/library/busybox:latest')).digest, m.digest);
      const doc = parseManifest(await dst.readBytes(m.digest)).doc as ImageManifest;
      assert.ok((await dst.readBytes(doc.config.digest)).equals(srcConfigBytes), 'config bytes kept verbatim');
      if (compression === 'none') {
        assert.equal(doc.layers[0]!.digest, srcConfig.rootfs.diff_ids[0]);
        assert.equal(doc.layers[0]!.mediaType, MediaTypes.ociLayer);
      } else {
        assert.equal(doc.layers[0]!.mediaType, MediaTypes.ociLayerGzip);
        const { diffIDOf } = await import('../../src/oci/index.js');
        assert.equal((await diffIDOf(await dst.open(doc.layers[0]!.digest))).diffID, srcConfig.rootfs.diff_ids[0]);
      }
    }
    // and back: an uncompressed-layer layout exports to the same archive bytes
    const again = join(dir, 'again.tar');
    const dstNone = await OciLayout.open(join(dir, 'dst-none'));
    await exportDockerArchive(dstNone, again, [{ ref: 'docker.io/library/busybox:latest', repoTags: ['busybox', 'localhost/base:v1'] }]);
    assert.ok(readFileSync(again).equals(readFileSync(path)));
  });

  it('writes several images with shared layers and selects them by tag or index', async (t) => {
    const dir = tempDir(t, 'darch');
    const l = await baseLayoutCopy(tempDir(t, 'darch'));
    await smallImage(l, 'one', 'one');
    await smallImage(l, 'two', 'two');
    const path = join(dir, 'multi.tar');
    await exportDockerArchive(l, path, [
      { ref: 'one', repoTags: ['example.com/one:1'] },
      { ref: 'two', repoTags: ['example.com/two:2'] },
      { ref: 'latest', repoTags: [] },
    ]);
    const r = await DockerArchiveReader.open(path);
    assert.equal(r.items.length, 3);
    assert.throws(() => r.select(), /holds 3 images/);
    assert.equal(r.select('example.com/two:2'), 1);
    assert.equal(r.select(2), 2);
    assert.throws(() => r.select(3), /no image @3/);
    const dst = await OciLayout.open(join(dir, 'dst'), { create: true });
    const m = await importDockerArchive(path, dst, { image: 'example.com/two:2', tag: 'two', compression: 'none' });
    const doc = parseManifest(await dst.readBytes(m.digest)).doc as ImageManifest;
    assert.equal((await dst.readBytes(doc.layers[0]!.digest)).includes(Buffer.from('two')), true);
    await importDockerArchive(path, dst, { image: 2, compression: 'none' });
    assert.equal((await dst.readIndex()).manifests.length, 2, 'untagged image added as an unnamed entry');
  });

  it('a layer that does not match its diffID fails the import and names nothing', async (t) => {
    const dir = tempDir(t, 'darch');
    const w = new DockerArchiveWriter();
    t.after(() => w.close());
    const realTar = await readAll(packEntries([{ header: { name: 'a', type: 'file', size: 1 }, body: 'a' }]));
    const fakeTar = await readAll(packEntries([{ header: { name: 'b', type: 'file', size: 1 }, body: 'b' }]));
    // the config claims the diffID of realTar, the archive carries fakeTar under that name
    const { diffID } = await w.addLayer(undefined, Readable.from([fakeTar]));
    const cfg = toJsonBytes({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [diffID] } });
    w.addConfig(cfg);
    w.addImage({ config: digestOf(cfg), layers: [diffID], repoTags: ['x:1'] });
    const path = join(dir, 'ok.tar');
    await w.write(path);
    // now swap the bytes of the layer member for the same-length realTar
    const bytes = readFileSync(path);
    const at = bytes.indexOf(fakeTar.subarray(0, 512));
    realTar.copy(bytes, at);
    writeFileSync(path, bytes);
    for (const compression of ['none', 'gzip'] as const) {
      const dst = await OciLayout.open(join(dir, `dst-${compression}`), { create: true });
      await assert.rejects(importDockerArchive(path, dst, { compression }), (e: Error) => e instanceof DigestMismatchError && e.message.includes(diffID));
      assert.deepEqual((await dst.readIndex()).manifests, []);
      assert.deepEqual(await blobSet(dst), []);
    }
    await assert.rejects(DockerArchiveReader.open(join(dir, 'nothing.tar')), /does not exist/);
    const base = await baseLayoutCopy(tempDir(t, 'darch'));
    await exportOciArchive(base, join(dir, 'oci.tar'));
    await assert.rejects(DockerArchiveReader.open(join(dir, 'oci.tar')), /is an OCI archive, not a docker-archive/);
  });
});
