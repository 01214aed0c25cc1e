/**
 * A source with simple (GPG) signatures and a change of its manifest asked for (--format, --dest-compress-format) or
 * wanted by the destination (a registry compresses uncompressed layers), side by side with skopeo 1.9.3: c/image
 * never modifies a signed manifest ("Would invalidate signatures"), so an image is copied as it is with its
 * signatures (exit 0, the flags ignored, no message), and a signed list that would have to change is refused with
 * c/image's message (exit 1). --remove-signatures converts. Each tool writes to its own fresh distribution registry
 * (skopeo reuses a blob already at the destination instead of compressing it, which would blur the comparison).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { baseLayout } from '../fixtures/base.js';
import { procsWith, requireTool, startDistribution } from '../helpers.js';
import { spawnRegistry } from '../registry/util.js';
import { OciLayout, MediaTypes, digestOf, type Descriptor } from '../../src/oci/index.js';

const TSCOPY = new URL('../../../bin/tscopy.js', import.meta.url).pathname;
const TLS = ['--src-tls-verify=false', '--dest-tls-verify=false'];

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

let dir: string;
let env: NodeJS.ProcessEnv;
let regd: string;
let lookaside: string;
/** Per tool: `keep` receives the copies that push the uncompressed layer, `change` those that must compress it. */
let regs: Record<'sk' | 'ts', { keep: string; change: string }>;
let img: { raw: string; list: string; gz: string };
const cleanups: (() => void | Promise<void>)[] = [];
type Tool = 'tscopy' | 'skopeo';

function cmd(bin: Tool, args: string[]): Run {
  const argv = bin === 'tscopy' ? [process.execPath, TSCOPY, '--registries.d', regd, ...args] : ['skopeo', '--registries.d', regd, ...args];
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', env });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
const okRun = (bin: Tool, args: string[]): Run => {
  const r = cmd(bin, args);
  assert.equal(r.status, 0, `${bin} ${args.join(' ')}: ${r.stderr}`);
  return r;
};
/** A message as skopeo's logrus prints it (msg="..." with inner quotes escaped). */
const logrus = (m: string) => `msg=${JSON.stringify(m)}`;
const raw = (ref: string) => Buffer.from(okRun('skopeo', ['inspect', '--raw', '--tls-verify=false', ref]).stdout);
const manifestOf = (ref: string) => JSON.parse(raw(ref).toString('utf8'));
/** The lookaside signature files of host/repo@digest: name -> bytes (base64). */
function sigFiles(repo: string, digest: string): Record<string, string> {
  const d = join(lookaside, `${repo}@${digest.replace(':', '=')}`);
  if (!existsSync(d)) return {};
  return Object.fromEntries(readdirSync(d).sort().map((f) => [f, readFileSync(join(d, f)).toString('base64')]));
}
/** Copy with one tool to its own registry (repo `name`); returns the run. */
function copyWith(t: Tool, src: string, name: string, flags: string[]): Run {
  const pre = t === 'tscopy' ? ['--insecure-policy'] : [];
  return cmd(t, [...pre, 'copy', '-q', ...TLS, ...flags, src, at(t, name)]);
}
/** Where a tool's copy `name` goes: names starting with `change/` to its second registry. */
const hostOf = (t: Tool, name: string) => regs[t === 'tscopy' ? 'ts' : 'sk'][name.startsWith('change/') ? 'change' : 'keep'];
const at = (t: Tool, name: string) => `docker://${hostOf(t, name)}/${name}:v1`;

describe('signed sources and --format / --dest-compress-format (as skopeo)', () => {
  before(async () => {
    requireTool('gpg');
    requireTool('skopeo');
    const base = await baseLayout();
    dir = mkdtempSync(join(tmpdir(), 'tsimage-sigconv-'));
    const gnupg = join(dir, 'gnupg');
    mkdirSync(gnupg, { mode: 0o700 });
    env = { ...process.env, GNUPGHOME: gnupg };
    cleanups.push(() => {
      spawnSync('gpgconf', ['--kill', 'all'], { env });
      rmSync(dir, { recursive: true, force: true });
    });
    const gpg = (args: string[]) => {
      const r = spawnSync('gpg', ['--batch', '--no-tty', ...args], { env, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`gpg ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    gpg(['--passphrase', '', '--quick-gen-key', 'Signer <signer@example.invalid>', 'ed25519', 'sign', 'never']);
    const fpr = /^fpr:+([0-9A-F]+):/m.exec(gpg(['--with-colons', '--list-secret-keys']))![1]!;
    const T = { after: (fn: () => void | Promise<void>) => void cleanups.push(fn) };
    // skopeo's registries: distribution; tscopy's and the source: tsregistry (starts faster)
    const tsRegs = Promise.all([0, 1, 2].map((i) => spawnRegistry(T, join(dir, `reg${i}`))));
    const all = [await startDistribution(T), await startDistribution(T), ...(await tsRegs)];
    const [a, b, c, d, src] = all.map((r) => r.addr) as [string, string, string, string, string];
    regs = { sk: { keep: a, change: b }, ts: { keep: c, change: d } };
    lookaside = join(dir, 'lookaside');
    regd = join(dir, 'registries.d');
    mkdirSync(regd);
    writeFileSync(join(regd, 'test.yaml'), `docker:\n${all.map((r) => `  ${r.addr}:\n    lookaside: file://${lookaside}/${r.addr}\n`).join('')}`);
    // the base image with its layer uncompressed (tag raw), and an index of it (tag list)
    const layoutDir = join(dir, 'layout');
    cpSync(base.dir, layoutDir, { recursive: true });
    const layout = await OciLayout.open(layoutDir);
    const gz = await layout.resolve('latest');
    const m = JSON.parse((await layout.readBytes(gz.digest)).toString('utf8'));
    const tar = gunzipSync(await layout.readBytes(m.layers[0].digest, 1 << 30));
    const layer = await layout.putBytes(MediaTypes.ociLayer, tar);
    const rawImg = await layout.putBytes(MediaTypes.ociManifest, JSON.stringify({ ...m, layers: [{ mediaType: MediaTypes.ociLayer, digest: layer.digest, size: layer.size }] }));
    await layout.tag('raw', rawImg);
    const idx = await layout.putBytes(
      MediaTypes.ociIndex,
      JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [{ mediaType: rawImg.mediaType, digest: rawImg.digest, size: rawImg.size, platform: { architecture: 'amd64', os: 'linux' } } satisfies Descriptor] }),
    );
    await layout.tag('list', idx);
    img = { raw: rawImg.digest, list: idx.digest, gz: gz.digest };
    // signed by skopeo into dir: layouts (they keep the layer uncompressed): the image; the list and its image; the
    // list alone (its image's signature removed); and the gzip base in a registry
    const sign = ['--sign-by', fpr, '--sign-identity', `${src}/x/y:v1`];
    okRun('skopeo', ['copy', '-q', ...sign, `oci:${layoutDir}:raw`, `dir:${dir}/image`]);
    okRun('skopeo', ['copy', '-q', '--all', ...sign, `oci:${layoutDir}:list`, `dir:${dir}/list`]);
    cpSync(join(dir, 'list'), join(dir, 'listonly'), { recursive: true });
    unlinkSync(join(dir, 'listonly', `${img.raw.slice(7)}.signature-1`));
    okRun('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--sign-by', fpr, `oci:${layoutDir}:latest`, `docker://${src}/src/gz:v1`]);
    assert.ok(existsSync(join(dir, 'image', 'signature-1')) && existsSync(join(dir, 'list', `${img.raw.slice(7)}.signature-1`)));
    img.gz = `${src}/src/gz`;
    void gz;
  });

  after(async () => {
    for (const c of cleanups.reverse()) await c();
    assert.deepEqual(procsWith('tsimage-sigconv-'), [], 'no gpg-agent left in the temporary homedir');
  });

  it('an image: copied as it is with its signatures, the conversion not done (exit 0); --remove-signatures converts', () => {
    for (const t of ['skopeo', 'tscopy'] as const) {
      const host = hostOf(t, 'img');
      // to a registry, which would compress the layer
      const r = copyWith(t, `dir:${dir}/image`, 'img/plain', []);
      assert.equal(r.status, 0, `${t}: ${r.stderr}`);
      assert.equal(digestOf(raw(at(t, 'img/plain'))), img.raw, `${t}: the manifest as it is`);
      assert.equal(manifestOf(at(t, 'img/plain')).layers[0].mediaType, MediaTypes.ociLayer, `${t}: layer not compressed`);
      assert.deepEqual(Object.values(sigFiles(`${host}/img/plain`, img.raw)), [readFileSync(join(dir, 'image', 'signature-1')).toString('base64')], `${t}: the signature carried`);
      // --format v2s2: not converted
      assert.equal(copyWith(t, `dir:${dir}/image`, 'img/fmt', ['--format', 'v2s2']).status, 0);
      assert.equal(digestOf(raw(at(t, 'img/fmt'))), img.raw, `${t}: --format ignored`);
      assert.equal(Object.keys(sigFiles(`${host}/img/fmt`, img.raw)).length, 1);
      // a platform picked out of the signed list: the instance has signatures, the same rule
      assert.equal(copyWith(t, `dir:${dir}/list`, 'img/inst', ['--override-arch', 'amd64', '--format', 'v2s2']).status, 0);
      assert.equal(digestOf(raw(at(t, 'img/inst'))), img.raw, `${t}: instance as it is`);
      // --dest-compress-format on a gzip image (skopeo 1.9.3 never recompresses a compressed layer; tscopy would)
      assert.equal(copyWith(t, `docker://${img.gz}:v1`, 'img/zstd', ['--dest-compress-format', 'zstd']).status, 0);
      assert.equal(manifestOf(at(t, 'img/zstd')).layers[0].mediaType, MediaTypes.ociLayerGzip, t);
      // --remove-signatures: converted, no signature
      assert.equal(copyWith(t, `dir:${dir}/image`, 'change/rm', ['--remove-signatures', '--format', 'v2s2']).status, 0);
      const rm = manifestOf(at(t, 'change/rm'));
      assert.equal(rm.mediaType, MediaTypes.dockerManifest, t);
      assert.equal(rm.layers[0].mediaType, MediaTypes.dockerLayerGzip, `${t}: compressed for the registry`);
    }
    // tscopy says why on its progress output; skopeo says nothing
    assert.match(okRun('tscopy', ['--insecure-policy', 'copy', ...TLS, '--format', 'v2s2', `dir:${dir}/image`, at('tscopy', 'img/msg')]).stdout, /as it is \(would invalidate signatures\)/);
    // tscopy recompresses when nothing is signed
    assert.equal(copyWith('tscopy', `docker://${img.gz}:v1`, 'change/zstd-rm', ['--remove-signatures', '--dest-compress-format', 'zstd']).status, 0);
    assert.equal(manifestOf(at('tscopy', 'change/zstd-rm')).layers[0].mediaType, MediaTypes.ociLayerZstd);
  });

  it("a signed list: copied as it is; refused with skopeo's message when it would have to change", () => {
    for (const t of ['skopeo', 'tscopy'] as const) {
      const host = hostOf(t, 'lst');
      // list and image signed: nothing changes, both signatures carried
      assert.equal(copyWith(t, `dir:${dir}/list`, 'lst/plain', ['--all']).status, 0);
      assert.equal(digestOf(raw(at(t, 'lst/plain'))), img.list, t);
      assert.equal(Object.keys(sigFiles(`${host}/lst/plain`, img.list)).length, 1, `${t}: list signature`);
      assert.equal(Object.keys(sigFiles(`${host}/lst/plain`, img.raw)).length, 1, `${t}: image signature`);
      // --format v2s2 would convert the list
      const fmt = copyWith(t, `dir:${dir}/list`, 'lst/fmt', ['--all', '--format', 'v2s2']);
      const msg = 'Manifest list must be converted to type "application/vnd.docker.distribution.manifest.list.v2+json" to be written to destination, but we cannot modify it: "Would invalidate signatures"';
      assert.equal(fmt.status, 1, t);
      assert.ok(fmt.stderr.includes(t === 'skopeo' ? logrus(msg) : `tscopy: ${msg}\n`), `${t}: ${fmt.stderr}`);
      // only the list signed: its image would be compressed for the registry, so the list would change
      const lo = copyWith(t, `dir:${dir}/listonly`, 'change/only', ['--all']);
      const msg2 = 'Manifest list must be converted to type "application/vnd.oci.image.index.v1+json" to be written to destination, but we cannot modify it: "Would invalidate signatures"';
      assert.equal(lo.status, 1, t);
      assert.ok(lo.stderr.includes(t === 'skopeo' ? logrus(msg2) : `tscopy: ${msg2}\n`), `${t}: ${lo.stderr}`);
      // neither leaves the list (skopeo has copied the image by then, tscopy writes nothing)
      assert.notEqual(cmd('skopeo', ['inspect', '--raw', '--tls-verify=false', at(t, 'change/only')]).status, 0);
    }
    const ls = cmd('skopeo', ['list-tags', '--tls-verify=false', `docker://${regs.ts.change}/change/only`]);
    assert.notEqual(ls.status, 0, 'tscopy wrote nothing: no such repository');
    assert.match(ls.stderr, /404/);
  });
});
