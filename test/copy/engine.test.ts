/**
 * The copy engine end to end through `tscopy copy` against real registries (tsregistry and distribution) and
 * local layouts, with skopeo, umoci and podman as oracles: reuse and cross-repository mounts, manifest lists
 * (--all, one platform), --format conversion and --dest-compress-format recompression (digests checked by
 * skopeo/umoci), --preserve-digests, failures that leave no tag, --digestfile.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, readFileSync, writeFileSync, existsSync, openSync, writeSync, closeSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { podmanImagesRemovedAfter, requireTool, sh, startDistribution, tempDir } from '../helpers.js';
import { baseLayout, type BaseLayout } from '../fixtures/base.js';
import { spawnRegistry } from '../registry/util.js';
import { multiArch, NOTLS, tscopy, tscopyFail } from './engine-util.js';
import { parseManifest, parseConfig, digestOf, MediaTypes, type Descriptor } from '../../src/oci/index.js';
import { copyImage } from '../../src/copy/engine.js';
import { openDestination, openSource, parseImageName } from '../../src/copy/transports/index.js';

const sha = (b: Buffer | string) => digestOf(b);

let base: BaseLayout;
before(async () => {
  requireTool('skopeo');
  base = await baseLayout();
});

describe('tscopy copy to and between registries', () => {
  it('oci -> tsregistry -> podman run; new repo mounts, same repo skips; registry -> oci keeps digests', async (t) => {
    requireTool('podman');
    const reg = await spawnRegistry(t, tempDir(t, 'reg'));
    const img = `${reg.addr}/eng/base:v1`;
    const out1 = tscopy(['copy', ...NOTLS, base.ociRef, `docker://${img}`]);
    assert.match(out1, /2 blobs \(2 copied, 0 skipped, 0 mounted\)/);
    assert.equal(sha(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${img}`])), base.manifestDigest);
    // cross-repository mount within one registry, then the same repository again (everything present)
    const out2 = tscopy(['copy', ...NOTLS, `docker://${img}`, `docker://${reg.addr}/eng/other:v1`]);
    assert.match(out2, /\(0 copied, 0 skipped, 2 mounted\)/);
    // the tag already names this manifest: one HEAD answers, nothing is written
    const out3 = tscopy(['copy', ...NOTLS, `docker://${img}`, `docker://${img}`]);
    assert.match(out3, new RegExp(`Image already at the destination: manifest ${base.manifestDigest}`));
    // another tag of the same repository: every blob is present (HEAD), only the manifest is written
    const out4 = tscopy(['copy', ...NOTLS, `docker://${img}`, `docker://${reg.addr}/eng/base:v2`]);
    assert.match(out4, /\(0 copied, 2 skipped, 0 mounted\)/);
    assert.equal(sha(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.addr}/eng/base:v2`])), base.manifestDigest);
    // inspect: skopeo's fields and values
    const ours = JSON.parse(tscopy(['inspect', '--tls-verify=false', `docker://${img}`])) as Record<string, unknown>;
    const theirs = JSON.parse(sh('skopeo', ['inspect', '--tls-verify=false', `docker://${img}`])) as Record<string, unknown>;
    for (const k of ['Name', 'Digest', 'RepoTags', 'Created', 'DockerVersion', 'Labels', 'Architecture', 'Os', 'Layers', 'Env'])
      assert.deepEqual(ours[k], theirs[k], k);
    // LayersData is newer than skopeo 1.9 here: checked against the layers
    assert.deepEqual((ours.LayersData as { Digest: string }[]).map((l) => l.Digest), theirs.Layers);
    assert.equal(
      tscopy(['inspect', '--tls-verify=false', '--format', '{{.Digest}} {{index .Labels "org.opencontainers.image.title"}} {{range .RepoTags}}<{{.}}>{{end}}', `docker://${img}`]).trim(),
      `${base.manifestDigest} ${(theirs.Labels as Record<string, string>)['org.opencontainers.image.title']} <v1><v2>`,
    );
    assert.equal(tscopy(['inspect', '--tls-verify=false', '--raw', '--config', `docker://${img}`]), sh('skopeo', ['inspect', '--tls-verify=false', '--raw', '--config', `docker://${img}`]));
    const d = tempDir(t, 'eng');
    tscopy(['copy', '-q', ...NOTLS, `docker://${reg.addr}/eng/other:v1`, `oci:${join(d, 'o')}:x`]);
    assert.equal(sha(sh('skopeo', ['inspect', '--raw', `oci:${join(d, 'o')}:x`])), base.manifestDigest);
    // podman runs what tscopy pushed
    const images = podmanImagesRemovedAfter(t);
    sh('podman', ['pull', '-q', '--tls-verify=false', `${reg.addr}/eng/other:v1`]);
    images.push(`${reg.addr}/eng/other:v1`);
    assert.equal(sh('podman', ['run', '--rm', '--pull=never', `${reg.addr}/eng/other:v1`, 'sh', '-c', 'echo ok-$((6*7))']).trim(), 'ok-42');
  });

  it('manifest lists: --all copies children then the index verbatim; without --all one platform (--override-arch)', async (t) => {
    const d = tempDir(t, 'eng');
    const { index, arm64 } = await multiArch(base, join(d, 'multi'));
    const reg = await startDistribution(t);
    tscopy(['copy', '-q', '--all', ...NOTLS, `oci:${join(d, 'multi')}:multi`, `docker://${reg.addr}/m/all:1`]);
    assert.equal(sha(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.addr}/m/all:1`])), index.digest);
    // skopeo copies the whole list out again (verifying every blob)
    sh('skopeo', ['copy', '-q', '--all', '--src-tls-verify=false', `docker://${reg.addr}/m/all:1`, `oci:${join(d, 'back')}:x`]);
    tscopy(['copy', '-q', '--override-arch', 'arm64', ...NOTLS, `oci:${join(d, 'multi')}:multi`, `docker://${reg.addr}/m/one:1`]);
    assert.equal(sha(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.addr}/m/one:1`])), arm64.digest);
    // --all again: the tag names the index already (up to date); one platform onto that tag: the tag moves to
    // the platform's image (a tag naming the whole list is not "up to date" for a single-image copy)
    assert.match(tscopy(['copy', '--all', ...NOTLS, `oci:${join(d, 'multi')}:multi`, `docker://${reg.addr}/m/all:1`]), /Image already at the destination/);
    const one = tscopy(['copy', '--override-arch', 'arm64', ...NOTLS, `oci:${join(d, 'multi')}:multi`, `docker://${reg.addr}/m/all:1`]);
    assert.doesNotMatch(one, /already at the destination/);
    assert.equal(sha(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.addr}/m/all:1`])), arm64.digest);
    assert.match(tscopy(['copy', '--override-arch', 'arm64', ...NOTLS, `oci:${join(d, 'multi')}:multi`, `docker://${reg.addr}/m/all:1`]), /Image already at the destination/);
    // skopeo's --multi-arch: all = --all; index-only copies the list alone (the registry refuses it where its
    // images are missing, and takes it where they are)
    tscopy(['copy', '-q', '--multi-arch', 'all', ...NOTLS, `oci:${join(d, 'multi')}:multi`, `docker://${reg.addr}/m/ma:1`]);
    assert.equal(sha(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.addr}/m/ma:1`])), index.digest);
    const io = tscopyFail(['copy', '-q', '--multi-arch', 'index-only', ...NOTLS, `oci:${join(d, 'multi')}:multi`, `docker://${reg.addr}/m/empty:1`]);
    assert.notEqual(io.status, 0);
    assert.match(io.stderr, /MANIFEST_BLOB_UNKNOWN|MANIFEST_UNKNOWN|unknown/i);
    tscopy(['copy', '-q', '--multi-arch', 'index-only', ...NOTLS, `oci:${join(d, 'multi')}:multi`, `docker://${reg.addr}/m/ma:2`]);
    assert.equal(sha(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.addr}/m/ma:2`])), index.digest);
    const info = JSON.parse(tscopy(['inspect', '--override-arch', 'arm64', `oci:${join(d, 'multi')}:multi`])) as { Digest: string; Architecture: string };
    assert.equal(info.Digest, index.digest);
    assert.equal(info.Architecture, 'arm64');
    const r = tscopyFail(['copy', '-q', '--override-arch', 's390x', `oci:${join(d, 'multi')}:multi`, `oci:${join(d, 'none')}:x`]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /no image for platform linux\/s390x/);
  });

  it('--format v2s2 to distribution: skopeo sees our digest, podman runs it; oci -> v2s2 -> oci round trip', async (t) => {
    requireTool('podman');
    const reg = await startDistribution(t);
    const img = `${reg.addr}/conv/base:v2`;
    const out = tscopy(['copy', '--format', 'v2s2', ...NOTLS, base.ociRef, `docker://${img}`]);
    const raw = sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${img}`]);
    const m = JSON.parse(raw) as { mediaType: string; config: { mediaType: string; digest: string }; layers: { mediaType: string }[] };
    assert.equal(m.mediaType, MediaTypes.dockerManifest);
    assert.equal(m.config.mediaType, MediaTypes.dockerConfig);
    assert.equal(m.layers[0]!.mediaType, MediaTypes.dockerLayerGzip);
    assert.match(out, new RegExp(`manifest ${sha(raw)} \\(changed from ${base.manifestDigest}: manifest converted to Docker schema 2\\)`));
    // skopeo's own conversion of the same image gives the same bytes
    const d = tempDir(t, 'eng');
    sh('skopeo', ['copy', '-q', '--format', 'v2s2', base.ociRef, `dir:${join(d, 'skopeo-v2s2')}`]);
    assert.equal(readFileSync(join(d, 'skopeo-v2s2', 'manifest.json'), 'utf8'), raw);
    const images = podmanImagesRemovedAfter(t, img);
    sh('podman', ['pull', '-q', '--tls-verify=false', img]);
    assert.equal(sh('podman', ['run', '--rm', '--pull=never', img, 'echo', 'v2s2-ok']).trim(), 'v2s2-ok');
    // back to OCI: skopeo's conversion of our v2s2 image and ours agree
    tscopy(['copy', '-q', '--format', 'oci', ...NOTLS, `docker://${img}`, `oci:${join(d, 'ours')}:x`]);
    sh('skopeo', ['copy', '-q', '--format', 'oci', '--src-tls-verify=false', `docker://${img}`, `oci:${join(d, 'theirs')}:x`]);
    assert.equal(sh('skopeo', ['inspect', '--raw', `oci:${join(d, 'ours')}:x`]), sh('skopeo', ['inspect', '--raw', `oci:${join(d, 'theirs')}:x`]));
    // --preserve-digests: the conversion is skipped, the manifest copied as it is (as skopeo; preserve-digests.test)
    tscopy(['copy', '-q', '--preserve-digests', '--format', 'v2s2', base.ociRef, `oci:${join(d, 'pd')}:x`]);
    assert.equal(digestOf(sh('skopeo', ['inspect', '--raw', `oci:${join(d, 'pd')}:x`])), base.manifestDigest);
  });
});

describe('recompression and failures', () => {
  it('--dest-compress-format zstd and gzip: new layer digests, same diffIDs; skopeo/umoci verify, zstd decompresses back', async (t) => {
    requireTool('umoci');
    const d = tempDir(t, 'eng');
    const dig = join(d, 'digest');
    tscopy(['copy', '-q', '--dest-compress-format', 'zstd', '--digestfile', dig, base.ociRef, `oci:${join(d, 'z')}:x`]);
    const raw = sh('skopeo', ['inspect', '--raw', `oci:${join(d, 'z')}:x`]);
    assert.equal(readFileSync(dig, 'utf8'), sha(raw));
    const zm = parseManifest(Buffer.from(raw));
    const bm = parseManifest(readFileSync(join(base.dir, 'blobs', 'sha256', base.manifestDigest.slice(7))));
    if (zm.kind !== 'manifest' || bm.kind !== 'manifest') throw new Error('manifests expected');
    assert.equal(zm.doc.layers[0]!.mediaType, MediaTypes.ociLayerZstd);
    assert.notEqual(zm.doc.layers[0]!.digest, bm.doc.layers[0]!.digest);
    assert.equal(zm.doc.config.digest, bm.doc.config.digest, 'diffIDs (config) unchanged');
    // skopeo verifies the zstd blob's digest while copying it
    sh('skopeo', ['copy', '-q', `oci:${join(d, 'z')}:x`, `dir:${join(d, 'zdir')}`]);
    // decompressing back (docker-archive keeps plain tars, checked against the diffIDs)
    tscopy(['copy', '-q', `oci:${join(d, 'z')}:x`, `docker-archive:${join(d, 'z.tar')}`]);
    const cfg = parseConfig(readFileSync(join(base.dir, 'blobs', 'sha256', bm.doc.config.digest.slice(7))));
    assert.ok(existsSync(join(d, 'z.tar')));
    // a gzip layer asked to be gzip stays as it is (skopeo keeps it too)
    const same = tscopy(['copy', '--dest-compress-format', 'gzip', base.ociRef, `oci:${join(d, 'same')}:x`]);
    assert.match(same, new RegExp(`manifest ${base.manifestDigest}$`, 'm'));
    // zstd -> gzip level 9: a new digest; umoci unpacks it (it checks blob digests and diffIDs)
    tscopy(['copy', '-q', '--dest-compress-format', 'gzip', '--dest-compress-level', '9', `oci:${join(d, 'z')}:x`, `oci:${join(d, 'g')}:x`]);
    const gm = parseManifest(Buffer.from(sh('skopeo', ['inspect', '--raw', `oci:${join(d, 'g')}:x`])));
    if (gm.kind !== 'manifest') throw new Error('manifest expected');
    assert.notEqual(gm.doc.layers[0]!.digest, bm.doc.layers[0]!.digest);
    sh('umoci', ['unpack', '--rootless', '--image', `${join(d, 'g')}:x`, join(d, 'bundle')]);
    assert.ok(statSync(join(d, 'bundle', 'rootfs', 'bin', 'busybox')).size > 100_000);
    assert.equal(cfg.rootfs.diff_ids.length, 1);
    // --dest-decompress (a dir: destination flag, as skopeo's): plain tar layers (digest = diffID), the same
    // manifest.json as skopeo's; an oci: destination is not changed by it (skopeo ignores it there too)
    tscopy(['copy', '-q', '--dest-decompress', base.ociRef, `dir:${join(d, 'plain')}`]);
    sh('skopeo', ['copy', '-q', '--dest-decompress', base.ociRef, `dir:${join(d, 'plain-skopeo')}`]);
    const ours = readFileSync(join(d, 'plain', 'manifest.json'), 'utf8');
    assert.equal(ours, readFileSync(join(d, 'plain-skopeo', 'manifest.json'), 'utf8'));
    const pm = parseManifest(Buffer.from(ours));
    if (pm.kind !== 'manifest') throw new Error('manifest expected');
    assert.equal(pm.doc.layers[0]!.mediaType, MediaTypes.ociLayer);
    assert.equal(pm.doc.layers[0]!.digest, cfg.rootfs.diff_ids[0]);
    assert.match(tscopy(['copy', '--dest-decompress', base.ociRef, `oci:${join(d, 'kept')}:x`]), new RegExp(`manifest ${base.manifestDigest}$`, 'm'));
    const both = tscopyFail(['copy', '-q', '--dest-decompress', '--dest-compress-format', 'zstd', base.ociRef, `oci:${join(d, 'no')}:x`]);
    assert.equal(both.status, 2);
    assert.match(both.stderr, /--dest-decompress and --dest-compress-format/);
  });

  it('a corrupt source blob fails the copy with the digest named, and leaves no tag (oci and registry)', async (t) => {
    const d = tempDir(t, 'eng');
    cpSync(base.dir, join(d, 'src'), { recursive: true });
    const bm = parseManifest(readFileSync(join(base.dir, 'blobs', 'sha256', base.manifestDigest.slice(7))));
    if (bm.kind !== 'manifest') throw new Error('manifest expected');
    const layer = bm.doc.layers[0]!.digest;
    const fd = openSync(join(d, 'src', 'blobs', 'sha256', layer.slice(7)), 'r+');
    writeSync(fd, Buffer.from('corrupt!'), 0, 8, 5000);
    closeSync(fd);
    const r = tscopyFail(['copy', '-q', `oci:${join(d, 'src')}:latest`, `oci:${join(d, 'dst')}:x`]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`digest mismatch for blob ${layer}`));
    const idx = JSON.parse(readFileSync(join(d, 'dst', 'index.json'), 'utf8')) as { manifests: unknown[] };
    assert.deepEqual(idx.manifests, []);
    assert.ok(!existsSync(join(d, 'dst', 'blobs', 'sha256', layer.slice(7))));
    const reg = await spawnRegistry(t, tempDir(t, 'reg'));
    const r2 = tscopyFail(['copy', '-q', ...NOTLS, `oci:${join(d, 'src')}:latest`, `docker://${reg.addr}/bad/img:x`]);
    assert.equal(r2.status, 1);
    const res = await fetch(`${reg.url}/v2/bad/img/manifests/x`, { method: 'HEAD', headers: { accept: MediaTypes.ociManifest } });
    assert.equal(res.status, 404);
  });

  it('library: copyImage with hooks (beforeWrite refuses before any write; afterManifest sees the written manifest)', async (t) => {
    const d = tempDir(t, 'eng');
    const srcName = await parseImageName(base.ociRef);
    const destName = await parseImageName(`oci:${join(d, 'h')}:x`);
    const dest = await openDestination(destName);
    const src = await openSource(srcName);
    await assert.rejects(copyImage(src, dest, { beforeWrite: () => { throw new Error('refused by policy'); } }), /refused by policy/);
    assert.deepEqual((JSON.parse(readFileSync(join(d, 'h', 'index.json'), 'utf8')) as { manifests: unknown[] }).manifests, []);
    let seen = '';
    const r = await copyImage(src, dest, { afterManifest: (ctx) => void (seen = ctx.manifest.digest), jobs: 1 });
    assert.equal(seen, base.manifestDigest);
    assert.equal(r.manifest.digest, base.manifestDigest);
    assert.equal(r.stats.copied, 2);
    assert.equal(digestOf(r.manifest.bytes), base.manifestDigest);
    await src.close();
    await dest.close();
    writeFileSync(join(d, 'unused'), '');
  });
});

describe('interruption', () => {
  it('an abort mid-blob rejects, leaves no tag (oci) and no archive or temp dir (oci-archive)', async (t) => {
    const d = tempDir(t, 'eng');
    const { Transform } = await import('node:stream');
    const { readdirSync: ls } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const before = ls(tmpdir()).filter((n) => n.startsWith('tsimage-ociarchive-')).length;
    for (const target of [`oci:${join(d, 'o')}:x`, `oci-archive:${join(d, 'a.tar')}:x`]) {
      const src = await openSource(await parseImageName(base.ociRef));
      // the real layout source, its blob streams slowed down so that the abort lands mid-blob
      const slow = Object.assign(Object.create(src) as typeof src, {
        blob: async (desc: Descriptor, io?: { signal?: AbortSignal }) => {
          const s = await src.blob(desc, io);
          return s.pipe(new Transform({ highWaterMark: 1024, transform: (c, _e, cb) => setTimeout(() => cb(null, c), 300) }));
        },
      });
      const dest = await openDestination(await parseImageName(target));
      const ac = new AbortController();
      setTimeout(() => ac.abort(new Error('interrupted by test')), 100);
      await assert.rejects(copyImage(slow, dest, { signal: ac.signal }), /interrupted by test|aborted/);
      await dest.close();
      await src.close();
    }
    assert.deepEqual((JSON.parse(readFileSync(join(d, 'o', 'index.json'), 'utf8')) as { manifests: unknown[] }).manifests, []);
    assert.ok(!existsSync(join(d, 'a.tar')));
    assert.equal(ls(tmpdir()).filter((n) => n.startsWith('tsimage-ociarchive-')).length, before);
    assert.deepEqual(ls(join(d, 'o', 'blobs', 'sha256')).filter((n) => n.startsWith('.tmp')), []);
  });
});
