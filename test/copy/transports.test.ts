/**
 * Local transports against skopeo, both ways: what tscopy writes (oci:, oci-archive:, docker-archive:, dir:)
 * skopeo reads with the same digests, and what skopeo writes tscopy reads with the same digests.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, existsSync, writeFileSync, mkdirSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { requireTool, sh, tempDir } from '../helpers.js';
import { tscopy, tscopyFail } from './engine-util.js';
import { baseLayout, type BaseLayout } from '../fixtures/base.js';
import { parseImageName } from '../../src/copy/transports/index.js';
import { storeNames } from '../../src/copy/transports/tsbuild.js';
import { OciLayout, parseManifest, parseConfig, type Digest } from '../../src/oci/index.js';
import { digestOf } from '../../src/oci/digest.js';

const sha = (b: Buffer | string) => digestOf(b);

function skopeoRaw(ref: string): string {
  return sh('skopeo', ['inspect', '--raw', ref]);
}

let base: BaseLayout;
before(async () => {
  requireTool('skopeo');
  base = await baseLayout();
});

describe('tscopy writes, skopeo reads (same digests)', () => {
  for (const [transport, suffix] of [
    ['oci', ':v1'],
    ['oci-archive', ':v1'],
    ['dir', ''],
  ] as const) {
    it(`${transport}: manifest bytes verbatim, skopeo reads and copies them back`, (t) => {
      const d = tempDir(t, 'copy');
      const target = `${transport}:${join(d, transport === 'oci-archive' ? 'img.tar' : 'img')}${suffix}`;
      tscopy(['copy', '-q', base.ociRef, target]);
      const raw = skopeoRaw(target);
      assert.equal(sha(raw), base.manifestDigest);
      assert.equal(tscopy(['inspect', '--raw', target]), raw);
      // skopeo verifies every blob while copying it out
      sh('skopeo', ['copy', '-q', '--preserve-digests', target, `oci:${join(d, 'back')}:x`]);
      assert.equal(sha(skopeoRaw(`oci:${join(d, 'back')}:x`)), base.manifestDigest);
      const ours = JSON.parse(tscopy(['inspect', target])) as { Digest: string; Layers: string[] };
      const theirs = JSON.parse(sh('skopeo', ['inspect', target])) as { Digest: string; Layers: string[] };
      assert.equal(ours.Digest, theirs.Digest);
      assert.deepEqual(ours.Layers, theirs.Layers);
    });
  }

  it('dir: the layout skopeo writes (version file, blobs by hex, manifest.json)', (t) => {
    const d = tempDir(t, 'copy');
    tscopy(['copy', '-q', base.ociRef, `dir:${join(d, 'ours')}`]);
    sh('skopeo', ['copy', '-q', base.ociRef, `dir:${join(d, 'theirs')}`]);
    assert.deepEqual(readdirSync(join(d, 'ours')).sort(), readdirSync(join(d, 'theirs')).sort());
    for (const f of readdirSync(join(d, 'theirs'))) assert.deepEqual(readFileSync(join(d, 'ours', f)), readFileSync(join(d, 'theirs', f)), f);
  });

  it('docker-archive: skopeo reads it with the same config and layer diffIDs; the archive equals skopeo\'s', (t) => {
    const d = tempDir(t, 'copy');
    tscopy(['copy', '-q', base.ociRef, `docker-archive:${join(d, 'ours.tar')}:example.com/app:v1`]);
    sh('skopeo', ['copy', '-q', base.ociRef, `docker-archive:${join(d, 'theirs.tar')}:example.com/app:v1`]);
    const ours = skopeoRaw(`docker-archive:${join(d, 'ours.tar')}`);
    assert.equal(ours, skopeoRaw(`docker-archive:${join(d, 'theirs.tar')}`));
    assert.equal(tscopy(['inspect', '--raw', `docker-archive:${join(d, 'theirs.tar')}`]), ours);
    assert.deepEqual(readFileSync(join(d, 'ours.tar')), readFileSync(join(d, 'theirs.tar')));
    // --additional-tag: more RepoTags in manifest.json, both names readable by skopeo
    tscopy(['copy', '-q', '--additional-tag', 'other/name:v2', base.ociRef, `docker-archive:${join(d, 'two.tar')}:example.com/app:v1`]);
    sh('skopeo', ['inspect', `docker-archive:${join(d, 'two.tar')}:docker.io/other/name:v2`]);
    sh('skopeo', ['inspect', `docker-archive:${join(d, 'two.tar')}:example.com/app:v1`]);
    // Existing archives are not modified (skopeo's rule).
    const r = tscopyFail(['copy', '-q', base.ociRef, `docker-archive:${join(d, 'ours.tar')}`]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /doesn't support modifying existing images/);
  });
});

describe('skopeo writes, tscopy reads (same digests)', () => {
  it('oci, oci-archive, dir: tscopy copies what skopeo wrote to an OCI layout, digests kept', (t) => {
    const d = tempDir(t, 'copy');
    for (const [i, target] of [`oci:${join(d, 'o')}:t`, `oci-archive:${join(d, 'a.tar')}:t`, `dir:${join(d, 'dir')}`].entries()) {
      sh('skopeo', ['copy', '-q', base.ociRef, target]);
      assert.equal(tscopy(['inspect', '--raw', target]), skopeoRaw(target));
      const out = `oci:${join(d, `out${i}`)}:x`;
      tscopy(['copy', '-q', target, out]);
      assert.equal(sha(skopeoRaw(out)), base.manifestDigest);
      sh('skopeo', ['copy', '-q', out, `oci:${join(d, `verify${i}`)}:x`]);
    }
  });

  it('docker-archive from skopeo -> oci: layers gzipped, diffIDs and config kept, skopeo reads the result', async (t) => {
    const d = tempDir(t, 'copy');
    sh('skopeo', ['copy', '-q', base.ociRef, `docker-archive:${join(d, 'in.tar')}:example.com/app:v1`]);
    tscopy(['copy', '-q', `docker-archive:${join(d, 'in.tar')}:example.com/app:v1`, `oci:${join(d, 'ours')}:x`]);
    sh('skopeo', ['copy', '-q', `docker-archive:${join(d, 'in.tar')}`, `oci:${join(d, 'theirs')}:x`]);
    const oursM = parseManifest(Buffer.from(skopeoRaw(`oci:${join(d, 'ours')}:x`)));
    const theirsM = parseManifest(Buffer.from(skopeoRaw(`oci:${join(d, 'theirs')}:x`)));
    assert.equal(oursM.kind, 'manifest');
    assert.equal(theirsM.kind, 'manifest');
    if (oursM.kind !== 'manifest' || theirsM.kind !== 'manifest') return;
    assert.equal(oursM.doc.layers[0]!.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
    // skopeo's conversion of the config (schema 2 -> OCI) gives the same config bytes as ours
    assert.equal(oursM.doc.config.digest, theirsM.doc.config.digest);
    const layout = await OciLayout.open(join(d, 'ours'));
    const cfg = parseConfig(await layout.readBytes(oursM.doc.config.digest));
    assert.deepEqual(cfg.rootfs.diff_ids, JSON.parse(sh('skopeo', ['inspect', '--config', `docker-archive:${join(d, 'in.tar')}`])).rootfs.diff_ids);
    // skopeo verifies the gzipped blobs' digests on the way out
    sh('skopeo', ['copy', '-q', `oci:${join(d, 'ours')}:x`, `dir:${join(d, 'check')}`]);
  });
});

describe('names', () => {
  it('parse errors are usage errors naming the problem', async () => {
    await assert.rejects(parseImageName('nosuch:x'), /unknown transport "nosuch"/);
    await assert.rejects(parseImageName('busybox'), /expected colon-separated transport:reference/);
    await assert.rejects(parseImageName('oci:/tmp/x:Bad Name'), /Invalid image Bad Name/);
    await assert.rejects(parseImageName('docker-archive:/tmp/x.tar:busybox@sha256:' + '0'.repeat(64)), /doesn't support digest references/);
    await assert.rejects(parseImageName('docker-archive:/tmp/x.tar:@x'), /Invalid source index/);
    await assert.rejects(parseImageName('dir:'), /empty path/);
    await assert.rejects(parseImageName('oci:/nonexistent-parent-dir/sub/x'), /parent directory .* does not exist/);
    const r = tscopyFail(['copy', 'busybox', 'oci:/tmp/x']);
    assert.equal(r.status, 2);
  });

  it('policy identities and namespaces as containers/image', async (t) => {
    const d = realpathSync(tempDir(t, 'copy'));
    mkdirSync(join(d, 'a'));
    const n = await parseImageName(`oci:${d}/a/b:tag`);
    assert.equal(n.policyIdentity(), `${d}/a/b:tag`);
    assert.deepEqual(n.policyNamespaces().slice(0, 3), [`${d}/a/b`, `${d}/a`, d]);
    const dn = await parseImageName(`dir:${d}/a/b`);
    assert.equal(dn.policyIdentity(), `${d}/a/b`);
    assert.deepEqual(dn.policyNamespaces().slice(0, 2), [`${d}/a`, d]);
  });

  it('tsbuild: short names resolve as buildah does', () => {
    assert.deepEqual(storeNames('app'), ['localhost/app:latest', 'docker.io/library/app:latest']);
    assert.deepEqual(storeNames('quay.io/x/y:1'), ['quay.io/x/y:1']);
    assert.deepEqual(storeNames('team/app:2'), ['localhost/team/app:2', 'docker.io/team/app:2']);
  });

  it('tsbuild: copies into and out of the local image store (TSIMAGE_ROOT)', (t) => {
    const d = tempDir(t, 'copy');
    const env = { TSIMAGE_ROOT: join(d, 'root') };
    tscopy(['copy', '-q', base.ociRef, 'tsbuild:app:v2'], env);
    const index = JSON.parse(readFileSync(join(d, 'root', 'images', 'index.json'), 'utf8')) as { manifests: { digest: string; annotations: Record<string, string> }[] };
    assert.deepEqual(index.manifests.map((m) => [m.annotations['org.opencontainers.image.ref.name'], m.digest]), [['localhost/app:v2', base.manifestDigest]]);
    tscopy(['copy', '-q', 'tsbuild:localhost/app:v2', `oci:${join(d, 'out')}:x`], env);
    assert.equal(sha(skopeoRaw(`oci:${join(d, 'out')}:x`)), base.manifestDigest);
    assert.ok(existsSync(join(d, 'root', 'images', 'oci-layout')));
  });
});

export { writeFileSync, mkdirSync, type Digest };
