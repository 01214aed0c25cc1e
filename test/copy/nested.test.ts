/**
 * Nested indexes (an OCI index whose `manifests` include another index, which the image spec allows) through
 * tscopy: --all copies the whole tree with every digest kept (oci -> tsregistry -> distribution -> oci), inspect
 * --raw shows it, platform selection descends into nested indexes (compared with skopeo inspect, which resolves
 * them the same way), a recompression rewrites every index on the way up, and a Docker manifest list (which
 * cannot hold a list) is refused.
 *
 * skopeo 1.9.3 itself cannot copy such a tree (`copy --all` fails at the nested index with "Unexpectedly
 * received a manifest list instead of a manifest for a single image"), but it reads what tscopy wrote: the raw
 * top index, the nested index copied on its own by digest, and a platform image under the top tag.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { requireTool, sh, startDistribution, tempDir } from '../helpers.js';
import { baseLayout, type BaseLayout } from '../fixtures/base.js';
import { spawnRegistry } from '../registry/util.js';
import { NOTLS, tscopy, tscopyFail } from './engine-util.js';
import { OciLayout, parseManifest, MediaTypes, type Descriptor } from '../../src/oci/index.js';

let base: BaseLayout;
before(async () => {
  requireTool('skopeo');
  base = await baseLayout();
});

interface Tree {
  /** top index (tag "nested"): [arm64 image, inner (no platform)] */
  top: Descriptor;
  /** inner: [amd64 image, deep (platform linux/ppc64le)] */
  inner: Descriptor;
  /** deep: [ppc64le image] */
  deep: Descriptor;
  amd64: Descriptor;
  arm64: Descriptor;
  ppc64le: Descriptor;
}

/**
 * The base layout plus two variants of its image (configs with another architecture, same layer), arranged in
 * three levels of indexes.
 */
async function nestedLayout(dir: string): Promise<Tree> {
  cpSync(base.dir, dir, { recursive: true });
  const layout = await OciLayout.open(dir);
  const amd = await layout.resolve('latest');
  const amd64: Descriptor = { mediaType: amd.mediaType, digest: amd.digest, size: amd.size };
  const m = parseManifest(await layout.readBytes(amd64.digest), amd64.mediaType);
  if (m.kind !== 'manifest') throw new Error('manifest expected');
  const cfg = JSON.parse((await layout.readBytes(m.doc.config.digest)).toString('utf8'));
  const variant = async (architecture: string, v?: string) => {
    const c = await layout.putBytes(MediaTypes.ociConfig, JSON.stringify({ ...cfg, architecture, variant: v }));
    return layout.putBytes(MediaTypes.ociManifest, JSON.stringify({ ...m.doc, config: c }));
  };
  const arm64 = await variant('arm64', 'v8');
  const ppc64le = await variant('ppc64le');
  const index = (manifests: unknown[]) => layout.putBytes(MediaTypes.ociIndex, JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests }));
  const deep = await index([{ ...ppc64le, platform: { architecture: 'ppc64le', os: 'linux' } }]);
  const inner = await index([
    { ...amd64, platform: { architecture: 'amd64', os: 'linux' } },
    { ...deep, platform: { architecture: 'ppc64le', os: 'linux' } },
  ]);
  const top = await index([{ ...arm64, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } }, inner]);
  await layout.tag('nested', top);
  return { top, inner, deep, amd64, arm64, ppc64le };
}

const blobs = (dir: string) => readdirSync(join(dir, 'blobs', 'sha256')).sort();

describe('nested indexes', () => {
  it('--all copies the tree oci -> tsregistry -> distribution -> oci with every digest kept; skopeo reads it', async (t) => {
    const src = tempDir(t, 'nested-src');
    const tree = await nestedLayout(src);
    const reg = await spawnRegistry(t, tempDir(t, 'reg'));
    const dist = await startDistribution(t);
    const out = tempDir(t, 'nested-out');

    const a = tscopy(['copy', '--all', ...NOTLS, `oci:${src}:nested`, `docker://${reg.addr}/n/img:t`]);
    assert.match(a, new RegExp(`manifest ${tree.top.digest}`));
    tscopy(['copy', '--all', ...NOTLS, `docker://${reg.addr}/n/img:t`, `docker://${dist.addr}/n/img:t`]);
    tscopy(['copy', '--all', ...NOTLS, `docker://${dist.addr}/n/img:t`, `oci:${out}:back`]);
    // every blob and manifest came back, nothing else
    assert.deepEqual(blobs(out), blobs(src));
    const back = await OciLayout.open(out);
    assert.equal((await back.resolve('back')).digest, tree.top.digest);

    // inspect --raw shows the top index's bytes (tscopy and skopeo, from both registries)
    const raw = (await OciLayout.open(src)).readBytes(tree.top.digest);
    const topBytes = (await raw).toString('utf8');
    assert.equal(tscopy(['inspect', '--raw', '--tls-verify=false', `docker://${reg.addr}/n/img:t`]), topBytes);
    assert.equal(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${dist.addr}/n/img:t`]), topBytes);
    assert.equal(tscopy(['inspect', '--raw', `oci:${src}:nested`]), topBytes);
    // each level by digest, as the registries hold it
    for (const d of [tree.inner, tree.deep, tree.ppc64le]) {
      const bytes = (await back.readBytes(d.digest)).toString('utf8');
      assert.equal(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.addr}/n/img@${d.digest}`]), bytes);
      assert.equal(tscopy(['inspect', '--raw', '--tls-verify=false', `docker://${dist.addr}/n/img@${d.digest}`]), bytes);
    }
    // skopeo copies the deepest index (an index of images: it supports that) and the top's direct image
    const sk = tempDir(t, 'sk');
    sh('skopeo', ['copy', '--all', '--preserve-digests', '--src-tls-verify=false', `docker://${dist.addr}/n/img@${tree.deep.digest}`, `oci:${sk}:deep`]);
    assert.equal((await (await OciLayout.open(sk)).resolve('deep')).digest, tree.deep.digest);
    sh('skopeo', ['copy', '--override-arch', 'arm64', '--src-tls-verify=false', `docker://${reg.addr}/n/img:t`, `oci:${sk}:arm`]);
    assert.equal((await (await OciLayout.open(sk)).resolve('arm')).digest, tree.arm64.digest);

    // again: the tag already names the tree, nothing is sent
    const again = tscopy(['copy', '--all', ...NOTLS, `oci:${src}:nested`, `docker://${reg.addr}/n/img:t`]);
    assert.doesNotMatch(again, /copied, [1-9]|[1-9] copied/);
  });

  it('platform selection descends into nested indexes (as skopeo inspect does)', async (t) => {
    const src = tempDir(t, 'nested-src');
    const tree = await nestedLayout(src);
    const reg = await spawnRegistry(t, tempDir(t, 'reg'));
    tscopy(['copy', '--all', ...NOTLS, `oci:${src}:nested`, `docker://${reg.addr}/p/img:t`]);
    const dst = tempDir(t, 'plat');
    const cases: [string, Descriptor][] = [
      ['arm64', tree.arm64], // a direct child
      ['amd64', tree.amd64], // in the platform-less inner index
      ['ppc64le', tree.ppc64le], // two levels down, through an index entry with a platform
    ];
    for (const [arch, want] of cases) {
      for (const from of [`oci:${src}:nested`, `docker://${reg.addr}/p/img:t`]) {
        const outp = tscopy(['copy', '--override-arch', arch, '--override-os', 'linux', ...NOTLS, from, `oci:${dst}:${arch}`]);
        assert.match(outp, new RegExp(`manifest ${want.digest}`), `${arch} from ${from}`);
        assert.doesNotMatch(outp, /no longer apply/);
      }
      // inspect picks the same image as skopeo inspect (same JSON, field for field)
      const ours = JSON.parse(tscopy(['inspect', '--override-arch', arch, '--override-os', 'linux', `oci:${src}:nested`]));
      const theirs = JSON.parse(sh('skopeo', ['inspect', '--override-arch', arch, '--override-os', 'linux', `oci:${src}:nested`]));
      assert.equal(ours.Architecture, arch);
      // LayersData and Variant are newer than skopeo 1.9 (engine.test.ts checks LayersData against Layers)
      delete ours.LayersData;
      delete ours.Variant;
      assert.deepEqual(ours, theirs);
      assert.equal(tscopy(['inspect', '--config', '--raw', '--override-arch', arch, `oci:${src}:nested`]), sh('skopeo', ['inspect', '--config', '--raw', '--override-arch', arch, `oci:${src}:nested`]));
    }
    const layout = await OciLayout.open(dst);
    for (const [arch, want] of cases) assert.equal((await layout.resolve(arch)).digest, want.digest);
    // no match: the message lists what every level offers
    const miss = tscopyFail(['copy', '--override-arch', 's390x', `oci:${src}:nested`, `oci:${dst}:none`]);
    assert.equal(miss.status, 1);
    assert.match(miss.stderr, /no image for platform linux\/s390x in the manifest list \(it has linux\/arm64\/v8, linux\/amd64, linux\/ppc64le\)/);
  });

  it('a recompression rewrites each index on the way up; v2s2 is refused, --preserve-digests keeps every manifest', async (t) => {
    const src = tempDir(t, 'nested-src');
    const tree = await nestedLayout(src);
    const dst = tempDir(t, 'z');
    tscopy(['copy', '--all', '--dest-compress-format', 'zstd', `oci:${src}:nested`, `oci:${dst}:z`]);
    const layout = await OciLayout.open(dst);
    const top = await layout.resolve('z');
    assert.notEqual(top.digest, tree.top.digest);
    // walk the tree written: every index is new, every image has a zstd layer, every manifest is there
    const seen: string[] = [];
    const walk = async (d: Descriptor): Promise<void> => {
      const p = parseManifest(await layout.readBytes(d.digest), d.mediaType);
      seen.push(`${p.kind}:${d.platform ? d.platform.architecture : '-'}`);
      if (p.kind === 'index') {
        assert.ok(![tree.top, tree.inner, tree.deep].some((o) => o.digest === d.digest), `index ${d.digest} rewritten`);
        for (const c of p.doc.manifests) await walk(c);
      } else {
        assert.equal(p.doc.layers[0]!.mediaType, MediaTypes.ociLayerZstd);
        assert.ok(await layout.stat(p.doc.layers[0]!.digest));
      }
    };
    await walk(top);
    assert.deepEqual(seen, ['index:-', 'manifest:arm64', 'index:-', 'manifest:amd64', 'index:ppc64le', 'manifest:ppc64le']);
    // skopeo reads the deepest level of what was written
    sh('skopeo', ['inspect', '--raw', `oci:${dst}:z`]);

    const v2 = tscopyFail(['copy', '--all', '--format', 'v2s2', `oci:${src}:nested`, `oci:${tempDir(t, 'v2')}:x`]);
    assert.equal(v2.status, 2);
    assert.match(v2.stderr, new RegExp(`a Docker manifest list cannot hold another list \\(index ${tree.deep.digest} is nested\\)`));
    // --preserve-digests: recompression skipped, every manifest copied as it is (as skopeo; preserve-digests.test)
    const pd = tempDir(t, 'pd');
    tscopy(['copy', '--all', '--preserve-digests', '--dest-compress-format', 'zstd', `oci:${src}:nested`, `oci:${pd}:x`]);
    assert.equal((await (await OciLayout.open(pd)).resolve('x')).digest, tree.top.digest);
  });
});
