/**
 * The content store against the peers, both ways:
 * - a layout and an OCI archive WRITTEN BY OUR STORE (OciLayout.ingest/putBytes/tag,
 *   exportOciArchive) are read by `skopeo copy oci:`/`oci-archive:`, `skopeo inspect` and
 *   `umoci unpack` with identical digests and the same root filesystem;
 * - the busybox base from ../shared/peers/make-base.sh (buildah + skopeo) is read by the store
 *   (layout and archive) and written back byte-identical.
 * buildah runs with its own vfs storage in a temp dir (no shared state, no mounts).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, createReadStream, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tempDir, sh, requireTool, PEERS } from '../helpers.js';
import {
  OciLayout,
  MediaTypes,
  buildBusyboxBase,
  exportOciArchive,
  exportDockerArchive,
  importDockerArchive,
  DockerArchiveReader,
  importOciArchive,
  OciArchiveReader,
  packDirectory,
  writeLayer,
  extractLayer,
  parseManifest,
  toJsonBytes,
  type Descriptor,
  type ImageManifest,
  type Digest,
} from '../../src/oci/index.js';
import { snapshot, prng } from './tarutil.js';

type Idx = { manifests: { digest: string; annotations?: Record<string, string> }[] };

/** Every file under dir (relative path -> bytes), for byte-for-byte comparisons. */
function files(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (rel: string) => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(r);
      else out.set(r, readFileSync(join(dir, r)));
    }
  };
  walk('');
  return out;
}

function assertSameFiles(got: string, want: string, what: string): void {
  const a = files(got);
  const b = files(want);
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort(), `${what}: file set`);
  for (const [k, v] of b) assert.ok(a.get(k)!.equals(v), `${what}: ${k} differs`);
}

/** An image made by our store on top of the busybox base: base layer + one gzip layer of a tree. */
async function ourImage(layout: OciLayout, work: string): Promise<{ manifest: Descriptor; layers: Digest[] }> {
  const base = await buildBusyboxBase(layout, { tag: 'base', epoch: 0 });
  const baseManifest = parseManifest(await layout.readBytes(base.digest)).doc as ImageManifest;
  const baseConfig = JSON.parse((await layout.readBytes(baseManifest.config.digest)).toString()) as { rootfs: { diff_ids: string[] } };
  const src = join(work, 'src');
  mkdirSync(join(src, 'usr/bin'), { recursive: true });
  writeFileSync(join(src, 'usr/bin/app'), prng(300_000, 7));
  chmodSync(join(src, 'usr/bin/app'), 0o4755);
  symlinkSync('app', join(src, 'usr/bin/app-link'));
  mkdirSync(join(src, 'etc'));
  writeFileSync(join(src, 'etc/motd'), 'hello from tsimage\n');
  let stored: Descriptor | undefined;
  const r = await writeLayer(packDirectory(src, { mtimeClamp: 1_700_000_000 }), 'gzip', async (body) => {
    stored = await layout.ingest({ mediaType: MediaTypes.ociLayerGzip }, body);
  });
  assert.equal(stored?.digest, r.digest);
  const config = await layout.putBytes(
    MediaTypes.ociConfig,
    toJsonBytes({
      created: '2023-11-14T22:13:20Z',
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: [...baseConfig.rootfs.diff_ids, r.diffID] },
      history: [{ created_by: 'base' }, { created_by: 'tsimage test layer' }],
    }),
  );
  const layers = [baseManifest.layers[0]!, { mediaType: MediaTypes.ociLayerGzip, digest: r.digest, size: r.size }];
  const manifest = await layout.putBytes(
    MediaTypes.ociManifest,
    toJsonBytes({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { mediaType: config.mediaType, digest: config.digest, size: config.size }, layers }),
  );
  await layout.tag('app', manifest);
  return { manifest, layers: layers.map((l) => l.digest) };
}

function indexDigest(layoutDir: string, name: string): string {
  const idx = JSON.parse(readFileSync(join(layoutDir, 'index.json'), 'utf8')) as Idx;
  const hit = idx.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === name);
  assert.ok(hit, `no ${name} in ${layoutDir}/index.json`);
  return hit.digest;
}

describe('store interop: what our store writes, the peers read', () => {
  it('skopeo and umoci read a layout and an OCI archive written by the store, with identical digests', async (t) => {
    requireTool('skopeo');
    requireTool('umoci');
    requireTool('tar');
    const d = tempDir(t, 'storeinterop');
    const layoutDir = join(d, 'ours');
    const layout = await OciLayout.open(layoutDir, { create: true });
    const { manifest, layers } = await ourImage(layout, d);
    const manifestBytes = await layout.readBytes(manifest.digest);
    const archive = join(d, 'ours.tar');
    await exportOciArchive(layout, archive);

    // the rootfs as our extractor builds it
    const want = join(d, 'want');
    for (const l of layers) await extractLayer(createReadStream(layout.blobPath(l)), want, { whiteouts: 'apply' });
    const wantSnap = snapshot(want, { mtime: false });

    for (const [transport, ref] of [
      ['oci', `oci:${layoutDir}:app`],
      ['oci-archive', `oci-archive:${archive}:app`],
    ] as const) {
      // the raw manifest skopeo sees is our bytes
      const raw = sh('skopeo', ['inspect', '--raw', ref]);
      assert.ok(Buffer.from(raw).equals(manifestBytes), `${transport}: skopeo inspect --raw returns our manifest bytes`);
      const inspect = JSON.parse(sh('skopeo', ['inspect', ref])) as { Digest: string; Layers: string[] };
      assert.equal(inspect.Digest, manifest.digest, `${transport}: manifest digest`);
      assert.deepEqual(inspect.Layers, layers, `${transport}: layer digests`);
      // a copy keeps every digest (skopeo verifies each blob against its digest while copying)
      const copy = join(d, `copy-${transport}`);
      sh('skopeo', ['copy', '--quiet', '--preserve-digests', ref, `oci:${copy}:app`]);
      assert.equal(indexDigest(copy, 'app'), manifest.digest, `${transport}: copied manifest digest`);
      for (const l of layers) assert.ok(readFileSync(join(copy, 'blobs/sha256', l.slice(7))).equals(readFileSync(layout.blobPath(l))), `${transport}: layer ${l}`);
    }

    // umoci unpacks our layout, and our archive once untarred (an OCI archive is a tar of a layout)
    sh('umoci', ['unpack', '--image', `${layoutDir}:app`, join(d, 'bundle1')]);
    assert.deepEqual(snapshot(join(d, 'bundle1/rootfs'), { mtime: false }), wantSnap, 'umoci unpack of our layout');
    const untarred = join(d, 'untarred');
    mkdirSync(untarred);
    sh('tar', ['-xf', archive, '-C', untarred]);
    assertSameFiles(untarred, layoutDir, 'our archive untarred = our layout');
    sh('umoci', ['unpack', '--image', `${untarred}:app`, join(d, 'bundle2')]);
    assert.deepEqual(snapshot(join(d, 'bundle2/rootfs'), { mtime: false }), wantSnap, 'umoci unpack of our archive');
    assert.equal(readFileSync(join(d, 'bundle2/rootfs/etc/motd'), 'utf8'), 'hello from tsimage\n');

    // and back: skopeo's archive of our layout is read by our archive reader with the same digests
    const theirs = join(d, 'theirs.tar');
    sh('skopeo', ['copy', '--quiet', '--preserve-digests', `oci:${layoutDir}:app`, `oci-archive:${theirs}:app`]);
    const rd = await OciArchiveReader.open(theirs);
    assert.equal((await rd.resolve('app')).digest, manifest.digest);
    for (const l of layers) assert.ok(rd.has(l as Digest));
  });
});

describe('store interop: the make-base.sh busybox base (buildah + skopeo)', () => {
  let work = '';
  let base = '';
  before(() => {
    requireTool('buildah');
    requireTool('skopeo');
    work = join(tmpdir(), `tsimage-mkbase-${process.pid}-${Date.now().toString(36)}`);
    mkdirSync(work);
    const conf = join(work, 'storage.conf');
    writeFileSync(conf, `[storage]\ndriver = "vfs"\ngraphroot = "${work}/graph"\nrunroot = "${work}/run"\n`);
    sh('sh', [join(PEERS, 'make-base.sh'), join(work, 'base')], { env: { ...process.env, CONTAINERS_STORAGE_CONF: conf, SOURCE_DATE_EPOCH: '0' } });
    base = join(work, 'base');
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it('the layout is read by the store and written back byte-identical', async (t) => {
    const src = await OciLayout.open(join(base, 'oci'));
    const entries = await src.list();
    assert.deepEqual(entries.map((e) => e.name), ['latest']);
    const want = /^manifest (sha256:[0-9a-f]{64})$/m.exec(readFileSync(join(base, 'DIGESTS'), 'utf8'))![1];
    assert.equal((await src.resolve('latest')).digest, want);
    const dstDir = join(tempDir(t, 'mkbase'), 'copy');
    const dst = await OciLayout.open(dstDir, { create: true });
    // every blob through the verifying ingest, then the same index entries
    for await (const dg of src.digests()) {
      const st = await src.stat(dg);
      await dst.ingest({ digest: dg, size: st!.size, mediaType: 'application/octet-stream' }, await src.open(dg));
    }
    for (const e of entries) await dst.tag(e.name, e.descriptor);
    assertSameFiles(dstDir, join(base, 'oci'), 'store copy of the make-base.sh layout');
    // the store's own view of it (manifests parse, everything reachable, nothing to collect)
    const gc = await dst.gc({ dryRun: true });
    assert.equal(gc.removed.length, 0);
  });

  it('the OCI archive is imported by the store and exported back with the same members and bytes', async (t) => {
    requireTool('tar');
    const d = tempDir(t, 'mkbase');
    const archive = join(base, 'base.oci.tar');
    const dst = await OciLayout.open(join(d, 'imported'), { create: true });
    const added = await importOciArchive(archive, dst);
    assert.equal(added.length, 1);
    assertSameFiles(join(d, 'imported'), join(base, 'oci'), 'import of make-base.sh base.oci.tar');
    // our export: the same member list, modes, sizes and contents as skopeo's (only mtimes differ)
    const ours = join(d, 'ours.tar');
    await exportOciArchive(dst, ours);
    const list = (f: string) =>
      sh('tar', ['-tvf', f, '--numeric-owner'])
        .trim()
        .split('\n')
        .map((l) => {
          const x = l.split(/\s+/);
          return `${x[0]} ${x[1]} ${x[2]} ${x[5]}`;
        });
    assert.deepEqual(list(ours), list(archive));
    for (const dir of ['ours', 'theirs']) mkdirSync(join(d, dir));
    sh('tar', ['-xf', ours, '-C', join(d, 'ours')]);
    sh('tar', ['-xf', archive, '-C', join(d, 'theirs')]);
    assertSameFiles(join(d, 'ours'), join(d, 'theirs'), 'our archive vs skopeo archive contents');
    // and the in-place reader sees the same image as the layout
    const rd = await OciArchiveReader.open(archive);
    assert.equal((await rd.resolve('latest')).digest, (await dst.resolve('latest')).digest);
  });
});

describe('store interop: docker-archive (docker save format) with skopeo', () => {
  it('skopeo reads our docker-archive (config and diffIDs kept); we read and import skopeo\'s; our export equals skopeo\'s bytes', async (t) => {
    requireTool('skopeo');
    const d = tempDir(t, 'dockerarch');
    const layout = await OciLayout.open(join(d, 'ours'), { create: true });
    const { manifest, layers } = await ourImage(layout, d);
    const m = parseManifest(await layout.readBytes(manifest.digest)).doc as ImageManifest;
    const configBytes = await layout.readBytes(m.config.digest);
    const diffIDs = (JSON.parse(configBytes.toString()) as { rootfs: { diff_ids: Digest[] } }).rootfs.diff_ids;
    assert.equal(diffIDs.length, layers.length);

    // ours -> skopeo
    const ours = join(d, 'ours.tar');
    await exportDockerArchive(layout, ours, [{ ref: 'app', repoTags: ['localhost/app:v1'] }]);
    const inspect = JSON.parse(sh('skopeo', ['inspect', `docker-archive:${ours}`])) as { Layers: string[]; RepoTags: string[] };
    assert.deepEqual(inspect.Layers, diffIDs, 'skopeo sees the diffIDs as the layers');
    const cfg = sh('skopeo', ['inspect', '--config', '--raw', `docker-archive:${ours}`]);
    assert.ok(Buffer.from(cfg).equals(configBytes), 'config bytes kept');
    const copy = join(d, 'skcopy');
    sh('skopeo', ['copy', '--quiet', `docker-archive:${ours}`, `oci:${copy}:app`]);
    const cm = JSON.parse(readFileSync(join(copy, 'blobs/sha256', indexDigest(copy, 'app').slice(7)), 'utf8')) as ImageManifest;
    assert.equal(cm.config.digest, m.config.digest);

    // skopeo -> ours
    const theirs = join(d, 'theirs.tar');
    sh('skopeo', ['copy', '--quiet', `oci:${join(d, 'ours')}:app`, `docker-archive:${theirs}:localhost/app:v1`]);
    const rd = await DockerArchiveReader.open(theirs);
    assert.deepEqual(rd.items[0]!.RepoTags, ['localhost/app:v1']);
    const img = await rd.image(0);
    assert.equal(img.config.digest, m.config.digest);
    assert.deepEqual(img.layers.map((l) => l.diffID), diffIDs);
    const dst = await OciLayout.open(join(d, 'imported'), { create: true });
    const desc = await importDockerArchive(theirs, dst, { compression: 'none' });
    const im = parseManifest(await dst.readBytes(desc.digest)).doc as ImageManifest;
    assert.deepEqual(im.layers.map((l) => l.digest), diffIDs, 'uncompressed layers = diffIDs');
    assert.ok((await dst.readBytes(im.config.digest)).equals(configBytes));
    // and the same image exported by us from that import gives skopeo's archive, byte for byte
    const again = join(d, 'again.tar');
    await exportDockerArchive(dst, again, [{ ref: desc.digest, repoTags: ['localhost/app:v1'] }]);
    assert.ok(readFileSync(again).equals(readFileSync(theirs)), 'our docker-archive bytes = skopeo\'s');
  });
});
