/**
 * --preserve-digests as skopeo 1.9.3 (containers/image 5.23: cannotModifyManifestReason "Instructed to preserve
 * digests"): an image's manifest is copied as it is whatever --format, --dest-compress-format or the destination
 * would change ("hoping for the best": even a Docker schema 2 manifest into an OCI layout), and a list that would
 * have to change format is refused (exit 1) with containers/image's message. Both tools run every case side by side
 * into oci:, dir: and a real distribution registry.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { requireTool, sh, startDistribution, tempDir } from '../helpers.js';
import { baseLayout, type BaseLayout } from '../fixtures/base.js';
import { BIN, multiArch } from './engine-util.js';
import { OciLayout, digestOf, MediaTypes } from '../../src/oci/index.js';

let base: BaseLayout;
before(async () => {
  requireTool('skopeo');
  base = await baseLayout();
});

type Run = { status: number | null; stderr: string };
const run = (cmd: string, args: string[]): Run => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
};

describe('--preserve-digests (as skopeo)', () => {
  it('copies images as they are despite --format/compression, refuses lists that would change format', async (t) => {
    const d = tempDir(t, 'pd');
    const reg = await startDistribution(t);
    // sources: OCI image, Docker schema 2 image, OCI index, Docker list
    const ociImg = base.ociRef;
    const v2 = join(d, 'v2');
    sh('skopeo', ['copy', '-q', '--format', 'v2s2', ociImg, `dir:${v2}`]);
    await multiArch(base, join(d, 'ix'));
    const ociList = `oci:${join(d, 'ix')}:multi`;
    const v2List = join(d, 'v2list');
    sh('skopeo', ['copy', '-q', '--all', '--format', 'v2s2', ociList, `dir:${v2List}`]);
    const manifestOf = (src: string): Buffer => Buffer.from(sh('skopeo', ['inspect', '--raw', src]));
    const digests = {
      oci: base.manifestDigest,
      v2: digestOf(readFileSync(join(v2, 'manifest.json'))),
      ociList: digestOf(manifestOf(ociList)),
      v2List: digestOf(readFileSync(join(v2List, 'manifest.json'))),
    };
    assert.equal(JSON.parse(readFileSync(join(v2List, 'manifest.json'), 'utf8')).mediaType, MediaTypes.dockerManifestList);
    // the amd64 instances (what a copy without --all picks here)
    const amd64Of = (list: Buffer): string => JSON.parse(list.toString()).manifests.find((m: { platform: { architecture: string } }) => m.platform.architecture === 'amd64').digest;
    const v2Amd64 = amd64Of(readFileSync(join(v2List, 'manifest.json')));

    /** The top manifest a destination holds (an OCI layout's by index.json: skopeo cannot read back a Docker manifest there). */
    const written = async (dest: string): Promise<Buffer> => {
      if (dest.startsWith('dir:')) return readFileSync(join(dest.slice(4), 'manifest.json'));
      if (dest.startsWith('oci:')) {
        const [dir, tag] = dest.slice(4).split(':') as [string, string];
        const layout = await OciLayout.open(dir);
        return Buffer.from(await layout.readBytes((await layout.resolve(tag)).digest));
      }
      return Buffer.from(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', dest]));
    };
    let n = 0;
    const dests = (kind: 'oci' | 'dir' | 'docker'): [string, string] => {
      n++;
      if (kind === 'oci') return [`oci:${join(d, `sk${n}`)}:x`, `oci:${join(d, `ts${n}`)}:x`];
      if (kind === 'dir') return [`dir:${join(d, `sk${n}`)}`, `dir:${join(d, `ts${n}`)}`];
      return [`docker://${reg.addr}/pd/sk${n}:x`, `docker://${reg.addr}/pd/ts${n}:x`];
    };
    const tls = (dest: string) => (dest.startsWith('docker:') ? ['--dest-tls-verify=false'] : []);
    const same = async (what: string, flags: string[], src: string, kind: 'oci' | 'dir' | 'docker', want: string | RegExp): Promise<void> => {
      const [skDest, tsDest] = dests(kind);
      const sk = run('skopeo', ['copy', '-q', ...tls(skDest), ...flags, src, skDest]);
      const ts = run(process.execPath, [BIN, 'copy', '-q', ...tls(tsDest), ...flags, src, tsDest]);
      if (typeof want === 'string') {
        assert.equal(sk.status, 0, `${what}: skopeo: ${sk.stderr}`);
        assert.equal(ts.status, 0, `${what}: tscopy: ${ts.stderr}`);
        const theirs = await written(skDest);
        assert.equal(digestOf(theirs), want, `${what}: skopeo wrote another manifest`);
        assert.deepEqual(await written(tsDest), theirs, `${what}: tscopy wrote another manifest than skopeo`);
      } else {
        assert.equal(sk.status, 1, `${what}: skopeo: ${sk.stderr}`);
        assert.match(sk.stderr.replace(/\\"/g, '"'), want, `${what}: skopeo`);
        assert.equal(ts.status, 1, `${what}: tscopy exit ${ts.status}: ${ts.stderr}`);
        assert.match(ts.stderr, want, `${what}: tscopy`);
      }
    };
    const P = '--preserve-digests';
    // images: verbatim, both directions, to every kind of destination
    for (const kind of ['oci', 'dir', 'docker'] as const) {
      await same(`OCI image --format v2s2 to ${kind}`, [P, '--format', 'v2s2'], ociImg, kind, digests.oci);
      await same(`v2s2 image --format oci to ${kind}`, [P, '--format', 'oci'], `dir:${v2}`, kind, digests.v2);
    }
    // a Docker schema 2 image into an OCI layout without --format: still verbatim
    await same('v2s2 image to an OCI layout', [P], `dir:${v2}`, 'oci', digests.v2);
    // recompression skipped
    await same('--dest-compress-format zstd', [P, '--dest-compress-format', 'zstd'], ociImg, 'dir', digests.oci);
    await same('--all --dest-compress-format zstd', [P, '--all', '--dest-compress-format', 'zstd'], ociList, 'dir', digests.ociList);
    // a list without --all: the platform's instance, verbatim
    await same('OCI index, one instance, --format v2s2', [P, '--format', 'v2s2'], ociList, 'dir', base.manifestDigest);
    await same('Docker list, one instance, --format oci', [P, '--format', 'oci'], `dir:${v2List}`, 'dir', v2Amd64);
    // --all with an unchanged list format: verbatim
    await same('--all, no conversion', [P, '--all'], `dir:${v2List}`, 'docker', digests.v2List);
    // --all and a list that would change format: refused
    const must = (type: string) => new RegExp(`Manifest list must be converted to type "${type.replace(/[.+]/g, '\\$&')}" to be written to destination, but we cannot modify it: "Instructed to preserve digests"`);
    await same('OCI index --all --format v2s2', [P, '--all', '--format', 'v2s2'], ociList, 'dir', must(MediaTypes.dockerManifestList));
    await same('OCI index --all --format v2s2 to a registry', [P, '--all', '--format', 'v2s2'], ociList, 'docker', must(MediaTypes.dockerManifestList));
    await same('Docker list --all --format oci', [P, '--all', '--format', 'oci'], `dir:${v2List}`, 'dir', must(MediaTypes.ociIndex));
    await same('Docker list --all to an OCI layout', [P, '--all'], `dir:${v2List}`, 'oci', must(MediaTypes.ociIndex));
  });
});
