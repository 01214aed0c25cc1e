/**
 * Real clients against a real tsregistry process: skopeo copy in and out (all layers, an OCI
 * index with --all), podman pull/run/push, buildah push. Raw manifests are compared byte for byte.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { podmanImagesRemovedAfter, requireTool, sh, tempDir } from '../helpers.js';
import { baseOciDir, req, spawnRegistry, ACCEPT_ALL } from './util.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** An OCI layout holding an index (tag "multi") over the base image for two platforms. */
function multiArchLayout(dir: string, base: string): { indexDigest: string } {
  cpSync(base, dir, { recursive: true });
  const idx = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8'));
  const m = idx.manifests[0];
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        { mediaType: m.mediaType, digest: m.digest, size: m.size, platform: { architecture: 'amd64', os: 'linux' } },
        { mediaType: m.mediaType, digest: m.digest, size: m.size, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } },
      ],
    }),
  );
  const hex = sha(index);
  writeFileSync(join(dir, 'blobs', 'sha256', hex), index);
  idx.manifests = [{ mediaType: 'application/vnd.oci.image.index.v1+json', digest: `sha256:${hex}`, size: index.length, annotations: { 'org.opencontainers.image.ref.name': 'multi' } }];
  writeFileSync(join(dir, 'index.json'), JSON.stringify(idx));
  return { indexDigest: `sha256:${hex}` };
}

describe('interop with skopeo, podman and buildah', () => {
  it('skopeo copy in and out: same raw manifest, same blobs; OCI index with --all', async (t) => {
    requireTool('skopeo');
    const base = await baseOciDir();
    const reg = await spawnRegistry(t, tempDir(t, 'reg-interop'));
    sh('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${base}:latest`, `docker://${reg.addr}/lib/base:latest`]);
    const rawIn = sh('skopeo', ['inspect', '--raw', `oci:${base}:latest`]);
    const rawReg = sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.addr}/lib/base:latest`]);
    assert.equal(rawReg, rawIn);
    const out = tempDir(t, 'reg-out');
    sh('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${reg.addr}/lib/base:latest`, `oci:${out}:latest`]);
    assert.equal(sh('skopeo', ['inspect', '--raw', `oci:${out}:latest`]), rawIn);
    const manifest = JSON.parse(rawIn);
    for (const l of [manifest.config, ...manifest.layers]) {
      const hex = l.digest.slice(7);
      assert.equal(sha(readFileSync(join(out, 'blobs', 'sha256', hex))), hex);
    }
    // registry -> registry (a mount or a copy: both must give the same manifest)
    sh('skopeo', ['copy', '-q', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${reg.addr}/lib/base:latest`, `docker://${reg.addr}/copy/of/base:v2`]);
    assert.equal(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.addr}/copy/of/base:v2`]), rawIn);
    const tags = JSON.parse(sh('skopeo', ['list-tags', '--tls-verify=false', `docker://${reg.addr}/copy/of/base`]));
    assert.deepEqual(tags.Tags, ['v2']);

    const multi = tempDir(t, 'reg-multi');
    const { indexDigest } = multiArchLayout(multi, base);
    sh('skopeo', ['copy', '-q', '--all', '--dest-tls-verify=false', `oci:${multi}:multi`, `docker://${reg.addr}/multi:latest`]);
    const g = await req(reg.url, 'GET', '/v2/multi/manifests/latest', { headers: { Accept: ACCEPT_ALL } });
    assert.equal(g.headers.get('docker-content-digest'), indexDigest);
    assert.equal(sha(g.body), indexDigest.slice(7));
    const back = tempDir(t, 'reg-multi-back');
    sh('skopeo', ['copy', '-q', '--all', '--src-tls-verify=false', `docker://${reg.addr}/multi:latest`, `oci:${back}:multi`]);
    assert.equal(JSON.parse(readFileSync(join(back, 'index.json'), 'utf8')).manifests[0].digest, indexDigest);
    const arm = JSON.parse(sh('skopeo', ['inspect', '--tls-verify=false', '--override-arch', 'arm64', '--override-variant', 'v8', `docker://${reg.addr}/multi:latest`]));
    assert.equal(arm.Digest, indexDigest); // skopeo reports the index digest, having resolved the arm64 instance through it
    assert.equal(arm.Layers[0], manifest.layers[0].digest);
  });

  it('podman pull, run and push; buildah push', async (t) => {
    requireTool('podman');
    requireTool('buildah');
    const base = await baseOciDir();
    const reg = await spawnRegistry(t, tempDir(t, 'reg-podman'));
    const tag = randomBytes(4).toString('hex');
    const src = `${reg.addr}/pod/base:${tag}`;
    sh('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${base}:latest`, `docker://${src}`]);
    const images = podmanImagesRemovedAfter(t);
    sh('podman', ['pull', '-q', '--tls-verify=false', src]);
    images.push(src);
    const outp = sh('podman', ['run', '--rm', '--pull=never', src, 'sh', '-c', 'echo hello-from-$((6*7))']);
    assert.equal(outp.trim(), 'hello-from-42');
    // podman push (it recompresses: the layer is uploaded again, not mounted)
    const pushed = `${reg.addr}/pod/pushed:${tag}`;
    sh('podman', ['push', '-q', '--tls-verify=false', src, `docker://${pushed}`]);
    const inspected = JSON.parse(sh('skopeo', ['inspect', '--tls-verify=false', `docker://${pushed}`]));
    assert.equal(inspected.Layers.length, 1);
    assert.equal(inspected.Os, 'linux');
    // buildah: commit a working container with a new file and push it
    const ctr = sh('buildah', ['from', '--pull-never', src]).trim();
    t.after(() => {
      try {
        sh('buildah', ['rm', ctr]);
      } catch {}
    });
    sh('buildah', ['run', '--isolation', 'chroot', ctr, 'sh', '-c', `echo ${tag} > /stamp`]);
    const img = `localhost/tsreg-buildah:${tag}`;
    sh('buildah', ['commit', '-q', ctr, img]);
    images.push(img);
    sh('buildah', ['push', '-q', '--tls-verify=false', img, `docker://${reg.addr}/built/img:${tag}`]);
    const b = JSON.parse(sh('skopeo', ['inspect', '--tls-verify=false', `docker://${reg.addr}/built/img:${tag}`]));
    assert.equal(b.Layers.length, 2);
    // and podman runs what buildah pushed, pulled back from tsregistry
    sh('podman', ['rmi', '-f', img]);
    const pulled = `${reg.addr}/built/img:${tag}`;
    sh('podman', ['pull', '-q', '--tls-verify=false', pulled]);
    images.push(pulled);
    assert.equal(sh('podman', ['run', '--rm', '--pull=never', pulled, 'cat', '/stamp']).trim(), tag);
  });
});
