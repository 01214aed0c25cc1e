/**
 * Layer interop with the peers: our layers are read by GNU tar, umoci and skopeo; layers
 * produced by buildah (the busybox base from make-base.sh, and a commit with whiteouts,
 * a setuid file and a fifo) extract exactly as GNU tar / umoci extract them.
 * buildah runs with its own vfs storage in a temp dir (no shared state, no mounts).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, createWriteStream, lstatSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync, createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { tempDir, sh, requireTool, PEERS } from '../helpers.js';
import { packDirectory } from '../../src/oci/tar.js';
import { writeLayer } from '../../src/oci/layer.js';
import { extractLayer } from '../../src/oci/extract.js';
import { digestOf } from '../../src/oci/digest.js';
import { getXattr } from '../../src/oci/xattr.js';
import { snapshot, prng } from './tarutil.js';

type Manifest = { config: { digest: string }; layers: { digest: string; mediaType: string; size: number }[] };

function blobPath(layout: string, digest: string): string {
  return join(layout, 'blobs', ...digest.split(':'));
}

function readManifest(layout: string): Manifest {
  const idx = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  return JSON.parse(readFileSync(blobPath(layout, idx.manifests[0]!.digest), 'utf8')) as Manifest;
}

/** A minimal OCI layout holding one image made of our layer (written by hand, not by the store). */
async function layoutWithOurLayer(dir: string, src: string, compression: 'gzip' | 'zstd' | 'none'): Promise<{ layout: string; layerDigest: string }> {
  const layout = join(dir, 'layout');
  mkdirSync(join(layout, 'blobs/sha256'), { recursive: true });
  writeFileSync(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const tmp = join(layout, 'blobs/sha256/.tmp-layer');
  const r = await writeLayer(packDirectory(src, { mtimeClamp: 1_700_000_000 }), compression, (body) => pipeline(body, createWriteStream(tmp)));
  renameSync(tmp, blobPath(layout, r.digest));
  const put = (b: Buffer) => {
    const d = digestOf(b);
    writeFileSync(blobPath(layout, d), b);
    return { digest: d, size: b.length };
  };
  const config = put(
    Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [r.diffID] }, history: [{ created_by: 'tsimage test' }] })),
  );
  const mt = compression === 'gzip' ? 'application/vnd.oci.image.layer.v1.tar+gzip' : compression === 'zstd' ? 'application/vnd.oci.image.layer.v1.tar+zstd' : 'application/vnd.oci.image.layer.v1.tar';
  const manifest = put(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
        layers: [{ mediaType: mt, digest: r.digest, size: r.size }],
      }),
    ),
  );
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }],
    }),
  );
  return { layout, layerDigest: r.digest };
}

function sourceTree(src: string): void {
  mkdirSync(join(src, 'usr/bin'), { recursive: true });
  writeFileSync(join(src, 'usr/bin/app'), prng(200_000, 5));
  chmodSync(join(src, 'usr/bin/app'), 0o4755);
  writeFileSync(join(src, 'usr/bin/script'), '#!/bin/sh\n');
  chmodSync(join(src, 'usr/bin/script'), 0o755);
  symlinkSync('/usr/bin/app', join(src, 'usr/bin/abs'));
  symlinkSync('app', join(src, 'usr/bin/rel'));
  mkdirSync(join(src, 'tmp'));
  chmodSync(join(src, 'tmp'), 0o1777);
  mkdirSync(join(src, 'long/' + 'n'.repeat(120)), { recursive: true });
  writeFileSync(join(src, 'long/' + 'n'.repeat(120) + '/f'), 'x');
  sh('chown', ['-R', '1000:1000', join(src, 'long')]);
}

describe('layer interop', () => {
  it('our gzip layer is read by GNU tar, umoci unpack and skopeo copy (digests kept)', async (t) => {
    requireTool('umoci');
    requireTool('skopeo');
    const d = tempDir(t, 'interop');
    const src = join(d, 'src');
    mkdirSync(src);
    sourceTree(src);
    const want = snapshot(src, { mtime: false });
    const { layout, layerDigest } = await layoutWithOurLayer(d, src, 'gzip');

    const gnu = join(d, 'gnu');
    mkdirSync(gnu);
    sh('tar', ['-xzpf', blobPath(layout, layerDigest), '-C', gnu, '--numeric-owner', '--xattrs']);
    assert.deepEqual(snapshot(gnu, { mtime: false }), want, 'GNU tar');

    sh('umoci', ['unpack', '--image', `${layout}:latest`, join(d, 'bundle')]);
    assert.deepEqual(snapshot(join(d, 'bundle/rootfs'), { mtime: false }), want, 'umoci unpack');

    sh('skopeo', ['copy', '--quiet', `oci:${layout}:latest`, `oci:${join(d, 'copy')}:latest`]);
    assert.equal(readManifest(join(d, 'copy')).layers[0]!.digest, layerDigest);
    const inspect = JSON.parse(sh('skopeo', ['inspect', `oci:${layout}:latest`])) as { Layers: string[] };
    assert.deepEqual(inspect.Layers, [layerDigest]);
  });

  it('our zstd layer is read by skopeo (digest verified) and zstd(1)', async (t) => {
    requireTool('skopeo');
    requireTool('zstd');
    const d = tempDir(t, 'interop');
    const src = join(d, 'src');
    mkdirSync(src);
    sourceTree(src);
    const { layout, layerDigest } = await layoutWithOurLayer(d, src, 'zstd');
    sh('skopeo', ['copy', '--quiet', `oci:${layout}:latest`, `oci:${join(d, 'copy')}:latest`]);
    assert.equal(readManifest(join(d, 'copy')).layers[0]!.digest, layerDigest);
    const gnu = join(d, 'gnu');
    mkdirSync(gnu);
    sh('sh', ['-c', `zstd -dc '${blobPath(layout, layerDigest)}' | tar -xpf - -C '${gnu}' --numeric-owner`]);
    assert.deepEqual(snapshot(gnu, { mtime: false }), snapshot(src, { mtime: false }));
  });

  describe('buildah layers', () => {
    let work = '';
    let base = '';
    let two = '';
    before(() => {
      requireTool('buildah');
      requireTool('umoci');
      // lowercase only: buildah derives an image name from the oci: path
      work = join(tmpdir(), `tsimage-buildah-${process.pid}-${Date.now().toString(36)}`);
      mkdirSync(work);
      const conf = join(work, 'storage.conf');
      writeFileSync(conf, `[storage]\ndriver = "vfs"\ngraphroot = "${work}/graph"\nrunroot = "${work}/run"\n`);
      const env = { ...process.env, CONTAINERS_STORAGE_CONF: conf, SOURCE_DATE_EPOCH: '0' };
      sh('sh', [join(PEERS, 'make-base.sh'), join(work, 'base')], { env });
      base = join(work, 'base/oci');
      // a relative oci: path: the run's TMPDIR may hold capitals, which buildah refuses in the name it derives
      const ctr = sh('buildah', ['from', '-q', '--pull-never', 'oci:base/oci:latest'], { env, cwd: work }).trim();
      try {
        sh(
          'buildah',
          [
            'run',
            '--isolation',
            'chroot',
            ctr,
            '--',
            'sh',
            '-c',
            'rm /etc/group; rm -rf /var/tmp; mkdir -p /etc/new && echo hi > /etc/new/f && chmod 4755 /etc/new/f; mkfifo /etc/fifo; ln -s /etc/passwd /etc/pw-link; echo a > /home/a; ln /home/a /home/b',
          ],
          { env },
        );
        two = join(work, 'two');
        sh('buildah', ['commit', '--quiet', '--format', 'oci', ctr, 'oci:two:latest'], { env, cwd: work });
      } finally {
        sh('buildah', ['rm', ctr], { env });
        sh('buildah', ['rmi', '--all', '--force'], { env });
      }
    });

    after(() => rmSync(work, { recursive: true, force: true }));

    it('the busybox base layer (gzip) extracts exactly as GNU tar extracts it', async (t) => {
      const d = tempDir(t, 'interop');
      const m = readManifest(base);
      assert.equal(m.layers.length, 1);
      const blob = blobPath(base, m.layers[0]!.digest);
      const ours = join(d, 'ours');
      const gnu = join(d, 'gnu');
      mkdirSync(gnu);
      const r = await extractLayer(createReadStream(blob), ours);
      assert.ok(r.entries > 250, `busybox has ~280 entries, got ${r.entries}`);
      sh('tar', ['-xzpf', blob, '-C', gnu, '--numeric-owner', '--xattrs']);
      assert.deepEqual(snapshot(ours), snapshot(gnu));
      assert.ok(lstatSync(join(ours, 'bin/sh')).isSymbolicLink());
    });

    it('a buildah commit with whiteouts applies exactly as umoci unpack applies it', async (t) => {
      const d = tempDir(t, 'interop');
      const m = readManifest(two);
      assert.equal(m.layers.length, 2);
      const ours = join(d, 'ours');
      for (const l of m.layers) await extractLayer(createReadStream(blobPath(two, l.digest)), ours, { whiteouts: 'apply' });
      sh('umoci', ['unpack', '--image', `${two}:latest`, join(d, 'bundle')]);
      const theirs = snapshot(join(d, 'bundle/rootfs'));
      assert.deepEqual(snapshot(ours), theirs);
      assert.ok(!('etc/group' in theirs) && !('var/tmp' in theirs) && 'etc/new/f' in theirs, 'the oracle saw the change');
    });

    it("the same commit's top layer in 'overlay' mode gives overlayfs whiteouts", async (t) => {
      const d = tempDir(t, 'interop');
      const m = readManifest(two);
      const upper = join(d, 'upper');
      await extractLayer(createReadStream(blobPath(two, m.layers[1]!.digest)), upper, { whiteouts: 'overlay' });
      for (const p of ['etc/group', 'var/tmp']) {
        const st = lstatSync(join(upper, p));
        assert.ok(st.isCharacterDevice() && st.rdev === 0, `${p} is a 0/0 whiteout`);
      }
      assert.equal(getXattr(join(upper, 'etc'), 'trusted.overlay.opaque'), undefined, 'no opaque marker without .wh..wh..opq');
      assert.equal(lstatSync(join(upper, 'etc/new/f')).mode & 0o7777, 0o4755);
    });
  });
});
