/**
 * registries.d `use-sigstore-attachments` and cosign `.sig` tags, tscopy next to skopeo 1.9.3 with the same
 * registries.d: where they agree (true at both ends: carried; false at the source: not; true then false: the same
 * error; true at the source: a signed image is not converted) and the two documented differences (nothing set at
 * the source, or nothing set at the destination: tscopy carries the tag, as it always did; skopeo drops it, or fails).
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { requireTool, tempDir } from '../helpers.js';
import { baseLayout, type BaseLayout } from '../fixtures/base.js';
import { spawnRegistry } from '../registry/util.js';
import { keyPair } from '../sign/util.js';
import { digestOf } from '../../src/oci/digest.js';
import { MediaTypes } from '../../src/oci/mediatypes.js';

const TSCOPY = new URL('../../../bin/tscopy.js', import.meta.url).pathname;
const TLS = ['--src-tls-verify=false', '--dest-tls-verify=false'];

let base: BaseLayout;
before(async () => {
  requireTool('skopeo');
  base = await baseLayout();
});

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}
function run(bin: 'tscopy' | 'skopeo', args: string[]): Run {
  const argv = bin === 'tscopy' ? [process.execPath, TSCOPY, ...args] : ['skopeo', ...args];
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
const tagsOf = (repo: string): string[] => {
  const r = run('skopeo', ['list-tags', '--tls-verify=false', `docker://${repo}`]);
  return r.status === 0 ? (JSON.parse(r.stdout).Tags as string[]).sort() : [];
};
const rawOf = (ref: string) => Buffer.from(run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]).stdout);

describe('use-sigstore-attachments (registries.d) and cosign .sig tags', () => {
  it('carried, dropped, refused and kept from conversion as skopeo does; the two documented differences', async (t) => {
    const d = tempDir(t, 'sigatt');
    const [src, dst] = await Promise.all([spawnRegistry(t, join(d, 'src')), spawnRegistry(t, join(d, 'dst'))]);
    const S = src.addr;
    const D = dst.addr;
    // a cosign-signed image at the source
    run('tscopy', ['copy', '-q', '--dest-tls-verify=false', base.ociRef, `docker://${S}/app/img:v1`]);
    const k = keyPair(d, 'cosign');
    const signed = run('tscopy', ['sign', '--tls-verify=false', '--key', k.key, '--password-file', k.pw, `docker://${S}/app/img:v1`]);
    assert.equal(signed.status, 0, signed.stderr);
    const sigTag = `sha256-${base.manifestDigest.slice(7)}.sig`;
    const srcSig = JSON.parse(rawOf(`${S}/app/img:${sigTag}`).toString('utf8'));
    assert.equal(srcSig.layers.length, 1);

    /** registries.d dirs: the setting per registry (undefined = not set). */
    const regd = (name: string, s: boolean | undefined, dd: boolean | undefined) => {
      const dir = join(d, `regd-${name}`);
      mkdirSync(dir);
      const lines = ['docker:'];
      for (const [host, v] of [[S, s], [D, dd]] as const) if (v !== undefined) lines.push(`  ${host}:`, `    use-sigstore-attachments: ${v}`);
      writeFileSync(join(dir, 'a.yaml'), lines.length > 1 ? `${lines.join('\n')}\n` : '');
      return dir;
    };
    const copy = (bin: 'tscopy' | 'skopeo', dir: string, repo: string, flags: string[] = []) =>
      run(bin, ['--registries.d', dir, ...(bin === 'tscopy' ? ['--insecure-policy'] : []), 'copy', '-q', ...TLS, ...flags, `docker://${S}/app/img:v1`, `docker://${D}/${repo}:v1`]);
    const each = (name: string, s: boolean | undefined, dd: boolean | undefined, flags: string[] = []) => {
      const dir = regd(name, s, dd);
      return { sk: copy('skopeo', dir, `sk/${name}`, flags), ts: copy('tscopy', dir, `ts/${name}`, flags) };
    };
    const layersOf = (repo: string) => JSON.parse(rawOf(`${D}/${repo}:${sigTag}`).toString('utf8')).layers.map((l: { digest: string; annotations?: unknown }) => [l.digest, l.annotations]);

    // true at both ends: both carry the signature (skopeo writes its own .sig manifest: its layers are compared)
    let r = each('both', true, true);
    assert.equal(r.sk.status, 0, r.sk.stderr);
    assert.equal(r.ts.status, 0, r.ts.stderr);
    for (const who of ['sk', 'ts']) assert.deepEqual(tagsOf(`${D}/${who}/both`), ['v1', sigTag].sort(), who);
    assert.deepEqual(layersOf('ts/both'), layersOf('sk/both'));
    assert.deepEqual(layersOf('ts/both'), srcSig.layers.map((l: { digest: string; annotations?: unknown }) => [l.digest, l.annotations]));

    // false at the source: neither reads nor carries it
    r = each('srcfalse', false, true);
    assert.equal(r.sk.status, 0, r.sk.stderr);
    assert.equal(r.ts.status, 0, r.ts.stderr);
    for (const who of ['sk', 'ts']) assert.deepEqual(tagsOf(`${D}/${who}/srcfalse`), ['v1'], who);

    // true at the source, false at the destination: the same error, after the image
    r = each('dstfalse', true, false);
    const msg = 'writing signatures: writing sigstore attachments is disabled by configuration';
    assert.equal(r.sk.status, 1);
    assert.match(r.sk.stderr, new RegExp(msg));
    assert.equal(r.ts.status, 1);
    assert.equal(r.ts.stderr, `tscopy: ${msg}\n`);
    for (const who of ['sk', 'ts']) assert.deepEqual(tagsOf(`${D}/${who}/dstfalse`), ['v1'], who);

    // true at the source: a signed image is not converted (--format ignored), its signature carried
    r = each('fmt', true, true, ['--format', 'v2s2']);
    assert.equal(r.sk.status, 0, r.sk.stderr);
    assert.equal(r.ts.status, 0, r.ts.stderr);
    for (const who of ['sk', 'ts']) {
      assert.equal(digestOf(rawOf(`${D}/${who}/fmt:v1`)), base.manifestDigest, who);
      assert.deepEqual(tagsOf(`${D}/${who}/fmt`), ['v1', sigTag].sort(), who);
    }

    // difference 1: nothing set at the source. skopeo does not look (converts, carries nothing); tscopy carries the
    // tag as it always did, and converts (dropping it, with a notice) since skopeo would convert too
    r = each('unset', undefined, undefined);
    assert.equal(r.sk.status, 0, r.sk.stderr);
    assert.equal(r.ts.status, 0, r.ts.stderr);
    assert.deepEqual(tagsOf(`${D}/sk/unset`), ['v1']);
    assert.deepEqual(tagsOf(`${D}/ts/unset`), ['v1', sigTag].sort());
    r = each('unsetfmt', undefined, undefined, ['--format', 'v2s2']);
    assert.equal(r.sk.status, 0, r.sk.stderr);
    assert.equal(r.ts.status, 0, r.ts.stderr);
    for (const who of ['sk', 'ts']) assert.equal(JSON.parse(rawOf(`${D}/${who}/unsetfmt:v1`).toString('utf8')).mediaType, MediaTypes.dockerManifest, who);
    assert.deepEqual(tagsOf(`${D}/ts/unsetfmt`), ['v1']);
    assert.match(r.ts.stderr, /Signatures not copied: the manifest changed .* so they no longer apply/);

    // difference 2: true at the source, nothing set at the destination: skopeo fails after the image (it writes
    // attachments only where the option is on); tscopy writes the tag (only an explicit false stops it)
    r = each('dstunset', true, undefined);
    assert.equal(r.sk.status, 1);
    assert.match(r.sk.stderr, new RegExp(msg));
    assert.equal(r.ts.status, 0, r.ts.stderr);
    assert.deepEqual(tagsOf(`${D}/ts/dstunset`), ['v1', sigTag].sort());
    // and an explicit false at the destination with nothing set at the source: not written, with a notice
    r = each('dstfalse2', undefined, false);
    assert.equal(r.ts.status, 0, r.ts.stderr);
    assert.deepEqual(tagsOf(`${D}/ts/dstfalse2`), ['v1']);
    assert.match(r.ts.stderr, /use-sigstore-attachments is false for docker:\/\/.*dstfalse2.* in registries\.d/);
    // tscopy's own --sign-by-key there: refused before anything is written
    const signDir = regd('signfalse', undefined, false);
    const sign = run('tscopy', ['--registries.d', signDir, '--insecure-policy', 'copy', '-q', ...TLS, '--sign-by-key', k.key, '--sign-passphrase-file', k.pw, `docker://${S}/app/img:v1`, `docker://${D}/ts/signfalse:v1`]);
    assert.equal(sign.status, 2, sign.stderr);
    assert.match(sign.stderr, /writing sigstore attachments is disabled by configuration/);
    assert.deepEqual(tagsOf(`${D}/ts/signfalse`), []);
  });
});
