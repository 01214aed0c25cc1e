/**
 * Image layer encryption (skopeo copy --encryption-key jwe:PUBKEY / --encrypt-layer N / --decryption-key PRIVKEY,
 * containers/ocicrypt's format) against skopeo 1.9.3 both ways: what tscopy encrypts skopeo decrypts, and the
 * reverse, back to the byte-identical plain manifest (same config and diffIDs, same layer blobs). Keys made per run
 * with openssl (RSA 2048 and EC P-256, PKCS#8); a 3-layer image built here; oci: layouts in temp dirs and a real
 * distribution registry on port 0.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { requireTool, sh, startDistribution } from '../helpers.js';
import { baseLayout } from '../fixtures/base.js';
import { tscopy, tscopyFail } from './engine-util.js';

const JWE = 'org.opencontainers.image.enc.keys.jwe';
const PUBOPTS = 'org.opencontainers.image.enc.pubopts';

interface Layout {
  dir: string;
  ref: string;
  manifestDigest: string;
  manifest: Manifest;
}
interface Desc {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}
interface Manifest {
  config: Desc;
  layers: Desc[];
}

let dir: string;
let plain: Layout;
const keys = { rsa: '', rsaPub: '', ec: '', ecPub: '', wrong: '' };
const cleanups: (() => void | Promise<void>)[] = [];
const T = { after: (fn: () => void | Promise<void>) => void cleanups.push(fn) };
let reg = '';

const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const blobPath = (d: string, digest: string) => join(d, 'blobs', 'sha256', digest.slice(7));

function readLayout(d: string, ref = 'latest'): Layout {
  const index = JSON.parse(readFileSync(join(d, 'index.json'), 'utf8')) as { manifests: (Desc & { annotations?: Record<string, string> })[] };
  const m = index.manifests.find((x) => x.annotations?.['org.opencontainers.image.ref.name'] === ref);
  assert.ok(m, `${d}: no ${ref} in index.json`);
  return { dir: d, ref, manifestDigest: m.digest, manifest: JSON.parse(readFileSync(blobPath(d, m.digest), 'utf8')) as Manifest };
}

/** The manifests index.json lists (none when there is no layout). */
function imagesIn(d: string): unknown[] {
  return existsSync(join(d, 'index.json')) ? (JSON.parse(readFileSync(join(d, 'index.json'), 'utf8')) as { manifests: unknown[] }).manifests : [];
}

function putBlob(d: string, data: Buffer): string {
  const digest = sha(data);
  writeFileSync(blobPath(d, digest), data);
  return digest;
}

/** The busybox base plus two gzip layers (3 layers; diffIDs in the config). */
async function buildPlain(d: string): Promise<Layout> {
  const base = await baseLayout();
  sh('cp', ['-a', `${base.dir}/.`, d]);
  const b = readLayout(d);
  const config = JSON.parse(readFileSync(blobPath(d, b.manifest.config.digest), 'utf8')) as { rootfs: { diff_ids: string[] }; history?: unknown[] };
  const layers = [...b.manifest.layers];
  for (const [i, text] of ['first extra layer\n', 'second extra layer\n'.repeat(5000)].entries()) {
    const tar = execTar(`extra${i}.txt`, text);
    const gz = gzipSync(tar);
    layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: putBlob(d, gz), size: gz.length });
    config.rootfs.diff_ids.push(sha(tar));
    config.history?.push({ created: '1970-01-01T00:00:00Z', created_by: `extra layer ${i}` });
  }
  const cfg = Buffer.from(JSON.stringify(config));
  const manifest = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: putBlob(d, cfg), size: cfg.length }, layers };
  const mb = Buffer.from(JSON.stringify(manifest));
  const md = putBlob(d, mb);
  writeFileSync(join(d, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: md, size: mb.length, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }] }));
  return readLayout(d);
}

/** A tar of one regular file (ustar, fixed times): a small deterministic layer. */
function execTar(name: string, content: string): Buffer {
  const src = mkdtempSync(join(tmpdir(), 'tsimage-enc-tar-'));
  try {
    writeFileSync(join(src, name), content);
    const out = join(src, 'out.tar');
    sh('tar', ['--format=ustar', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-C', src, '-cf', out, name]);
    return readFileSync(out);
  } finally {
    rmSync(src, { recursive: true, force: true });
  }
}

function fresh(label: string): string {
  const d = join(dir, `${label}-${Math.random().toString(36).slice(2, 8)}`);
  return d;
}

function skopeo(args: string[]): string {
  return sh('skopeo', args);
}

function skopeoFail(args: string[]): string {
  try {
    sh('skopeo', args);
  } catch (e) {
    return (e as Error).message;
  }
  assert.fail(`skopeo ${args.join(' ')} succeeded`);
}

/** The plain image comes back byte for byte: same manifest digest (so same config, diffIDs and layer blobs). */
function assertPlain(l: Layout): void {
  assert.equal(l.manifestDigest, plain.manifestDigest, `${l.dir}: decrypted manifest differs from the plain one:\n${JSON.stringify(l.manifest)}\nvs\n${JSON.stringify(plain.manifest)}`);
  for (const layer of l.manifest.layers) assert.equal(sha(readFileSync(blobPath(l.dir, layer.digest))), layer.digest);
}

/** Layer i of an encrypted manifest is in ocicrypt's format; returns the public options. */
function assertEncrypted(l: Layout, i: number): Record<string, unknown> {
  const e = l.manifest.layers[i]!;
  const p = plain.manifest.layers[i]!;
  assert.equal(e.mediaType, `${p.mediaType}+encrypted`);
  assert.notEqual(e.digest, p.digest);
  assert.equal(e.size, p.size, 'AES-CTR keeps the size');
  const blob = readFileSync(blobPath(l.dir, e.digest));
  assert.equal(sha(blob), e.digest);
  assert.deepEqual(Object.keys(e.annotations ?? {}).sort(), [JWE, PUBOPTS]);
  const pub = JSON.parse(Buffer.from(e.annotations![PUBOPTS]!, 'base64').toString('utf8')) as Record<string, unknown>;
  assert.deepEqual(Object.keys(pub), ['cipher', 'hmac', 'cipheroptions']);
  assert.equal(pub.cipher, 'AES_256_CTR_HMAC_SHA256');
  assert.equal(Buffer.from(pub.hmac as string, 'base64').length, 32);
  for (const part of e.annotations![JWE]!.split(',')) {
    const jwe = JSON.parse(Buffer.from(part, 'base64').toString('utf8')) as Record<string, unknown>;
    assert.ok(typeof jwe.ciphertext === 'string' && typeof jwe.iv === 'string' && typeof jwe.tag === 'string');
    const prot = JSON.parse(Buffer.from(jwe.protected as string, 'base64url').toString('utf8')) as Record<string, unknown>;
    assert.equal(prot.enc, 'A256GCM');
  }
  return pub;
}

before(async () => {
  requireTool('skopeo');
  requireTool('openssl');
  dir = mkdtempSync(join(tmpdir(), 'tsimage-encrypt-'));
  T.after(() => rmSync(dir, { recursive: true, force: true }));
  const k = (n: string) => join(dir, n);
  sh('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', k('rsa.pem')]);
  sh('openssl', ['pkey', '-in', k('rsa.pem'), '-pubout', '-out', k('rsa.pub.pem')]);
  // PKCS#8: skopeo 1.9.3's ocicrypt ignores SEC1 "EC PRIVATE KEY" files
  sh('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', k('ec.pem')]);
  sh('openssl', ['pkey', '-in', k('ec.pem'), '-pubout', '-out', k('ec.pub.pem')]);
  sh('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', k('wrong.pem')]);
  Object.assign(keys, { rsa: k('rsa.pem'), rsaPub: k('rsa.pub.pem'), ec: k('ec.pem'), ecPub: k('ec.pub.pem'), wrong: k('wrong.pem') });
  const p = join(dir, 'plain');
  mkdirSync(p);
  plain = await buildPlain(p);
  assert.equal(plain.manifest.layers.length, 3);
  reg = (await startDistribution(T)).addr;
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe('skopeo encrypts, tscopy decrypts', () => {
  it('every layer, RSA and EC recipients: back to the plain image with either key', () => {
    const enc = fresh('sk-enc');
    skopeo(['copy', '-q', '--encryption-key', `jwe:${keys.rsaPub}`, '--encryption-key', `jwe:${keys.ecPub}`, `oci:${plain.dir}:latest`, `oci:${enc}:latest`]);
    const e = readLayout(enc);
    for (const i of [0, 1, 2]) assertEncrypted(e, i);
    assert.equal(e.manifest.config.digest, plain.manifest.config.digest);
    for (const key of [keys.rsa, keys.ec]) {
      const out = fresh('ts-dec');
      tscopy(['copy', '-q', '--decryption-key', key, `oci:${enc}:latest`, `oci:${out}:latest`]);
      assertPlain(readLayout(out));
    }
  });

  it('from a registry (skopeo pushes it encrypted; tscopy pulls it decrypted)', () => {
    skopeo(['copy', '-q', '--dest-tls-verify=false', '--encryption-key', `jwe:${keys.rsaPub}`, '--encrypt-layer', '-1', `oci:${plain.dir}:latest`, `docker://${reg}/sk-enc:latest`]);
    const out = fresh('ts-dec-reg');
    tscopy(['copy', '-q', '--src-tls-verify=false', '--decryption-key', keys.rsa, `docker://${reg}/sk-enc:latest`, `oci:${out}:latest`]);
    assertPlain(readLayout(out));
  });
});

describe('tscopy encrypts, skopeo decrypts', () => {
  it('every layer for RSA and EC recipients; skopeo decrypts with either key, tscopy too', () => {
    const enc = fresh('ts-enc');
    const stdout = tscopy(['copy', '--encryption-key', `jwe:${keys.rsaPub}`, '--encryption-key', `jwe:${keys.ecPub}`, `oci:${plain.dir}:latest`, `oci:${enc}:latest`]);
    assert.match(stdout, /3 layer\(s\) encrypted/);
    const e = readLayout(enc);
    for (const i of [0, 1, 2]) assertEncrypted(e, i);
    // the config (diffIDs of the plain tars) is the plain image's
    assert.deepEqual(e.manifest.config, plain.manifest.config);
    for (const key of [keys.rsa, keys.ec]) {
      const out = fresh('sk-dec');
      skopeo(['copy', '-q', '--decryption-key', key, `oci:${enc}:latest`, `oci:${out}:latest`]);
      assertPlain(readLayout(out));
    }
    const out = fresh('ts-dec');
    tscopy(['copy', '-q', '--decryption-key', keys.ec, `oci:${enc}:latest`, `oci:${out}:latest`]);
    assertPlain(readLayout(out));
    // a key that is not a recipient: skopeo refuses too
    assert.match(skopeoFail(['copy', '-q', '--decryption-key', keys.wrong, `oci:${enc}:latest`, `oci:${fresh('sk-wrong')}:latest`]), /decrypting layer sha256:/);
  });

  it('--encrypt-layer -1: only the last layer, the others unchanged; to a registry', () => {
    tscopy(['copy', '-q', '--dest-tls-verify=false', '--encryption-key', `jwe:${keys.rsaPub}`, '--encrypt-layer', '-1', `oci:${plain.dir}:latest`, `docker://${reg}/ts-enc:latest`]);
    const raw = JSON.parse(skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${reg}/ts-enc:latest`])) as Manifest & { mediaType: string };
    assert.equal(raw.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    assert.deepEqual(raw.layers.slice(0, 2), plain.manifest.layers.slice(0, 2));
    assert.equal(raw.layers[2]!.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip+encrypted');
    const out = fresh('sk-dec-reg');
    skopeo(['copy', '-q', '--src-tls-verify=false', '--decryption-key', keys.rsa, `docker://${reg}/ts-enc:latest`, `oci:${out}:latest`]);
    assertPlain(readLayout(out));
    // --encrypt-layer 0,1 (comma-separated, as skopeo's int slice) into a layout
    const enc = fresh('ts-enc01');
    tscopy(['copy', '-q', '--encryption-key', `jwe:${keys.ecPub}`, '--encrypt-layer', '0,1', `oci:${plain.dir}:latest`, `oci:${enc}:latest`]);
    const e = readLayout(enc);
    assertEncrypted(e, 0);
    assertEncrypted(e, 1);
    assert.deepEqual(e.manifest.layers[2], plain.manifest.layers[2]);
  });

  it('recompressed and encrypted (--dest-compress-format zstd): decrypts to the zstd layers, same diffIDs', () => {
    const enc = fresh('ts-enc-zstd');
    tscopy(['copy', '-q', '--dest-compress-format', 'zstd', '--encryption-key', `jwe:${keys.rsaPub}`, `oci:${plain.dir}:latest`, `oci:${enc}:latest`]);
    const e = readLayout(enc);
    assert.ok(e.manifest.layers.every((l) => l.mediaType === 'application/vnd.oci.image.layer.v1.tar+zstd+encrypted'));
    assert.deepEqual(e.manifest.config, plain.manifest.config);
    const viaSkopeo = fresh('sk-dec-zstd');
    skopeo(['copy', '-q', '--decryption-key', keys.rsa, `oci:${enc}:latest`, `oci:${viaSkopeo}:latest`]);
    const viaTscopy = fresh('ts-dec-zstd');
    tscopy(['copy', '-q', '--decryption-key', keys.rsa, `oci:${enc}:latest`, `oci:${viaTscopy}:latest`]);
    const a = readLayout(viaSkopeo);
    const b = readLayout(viaTscopy);
    assert.equal(a.manifestDigest, b.manifestDigest);
    assert.ok(a.manifest.layers.every((l) => l.mediaType === 'application/vnd.oci.image.layer.v1.tar+zstd'));
    assert.deepEqual(a.manifest.config, plain.manifest.config);
    // and back to gzip with the plain image's diffIDs checked on the way
    const gz = fresh('ts-gz');
    tscopy(['copy', '-q', '--dest-compress-format', 'gzip', `oci:${viaTscopy}:latest`, `oci:${gz}:latest`]);
  });
});

describe('more', () => {
  it('--all: an index of encrypted images, decrypted by skopeo and tscopy to the same index', () => {
    // an index (platform linux/amd64) over the plain image
    const idx = fresh('index');
    sh('cp', ['-a', `${plain.dir}/.`, idx]);
    const child = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: plain.manifestDigest, size: readFileSync(blobPath(idx, plain.manifestDigest)).length, platform: { architecture: 'amd64', os: 'linux' } };
    const ib = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [child] }));
    const id = putBlob(idx, ib);
    writeFileSync(join(idx, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', digest: id, size: ib.length, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }] }));
    const enc = fresh('ts-enc-all');
    tscopy(['copy', '-q', '--all', '--encryption-key', `jwe:${keys.rsaPub}`, `oci:${idx}:latest`, `oci:${enc}:latest`]);
    const top = readLayout(enc).manifestDigest;
    const encIndex = JSON.parse(readFileSync(blobPath(enc, top), 'utf8')) as { manifests: Desc[] };
    const encChild = encIndex.manifests[0]!.digest;
    assert.notEqual(encChild, plain.manifestDigest);
    const encManifest = JSON.parse(readFileSync(blobPath(enc, encChild), 'utf8')) as Manifest;
    assertEncrypted({ dir: enc, ref: '', manifestDigest: encChild, manifest: encManifest }, 2);
    const bySkopeo = fresh('sk-dec-all');
    skopeo(['copy', '-q', '--all', '--decryption-key', keys.rsa, `oci:${enc}:latest`, `oci:${bySkopeo}:latest`]);
    const byTscopy = fresh('ts-dec-all');
    tscopy(['copy', '-q', '--all', '--decryption-key', keys.rsa, `oci:${enc}:latest`, `oci:${byTscopy}:latest`]);
    const a = readLayout(bySkopeo).manifestDigest;
    assert.equal(readLayout(byTscopy).manifestDigest, a);
    const dec = JSON.parse(readFileSync(blobPath(bySkopeo, a), 'utf8')) as { manifests: Desc[] };
    assert.equal(dec.manifests[0]!.digest, plain.manifestDigest);
  });

  it('a passphrase-protected private key (KEYFILE:PASS, pass=, file=)', () => {
    const key = join(dir, 'rsa-pass.pem');
    const pub = join(dir, 'rsa-pass.pub.pem');
    sh('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-aes-256-cbc', '-pass', 'pass:s3cret', '-out', key]);
    sh('openssl', ['pkey', '-in', key, '-passin', 'pass:s3cret', '-pubout', '-out', pub]);
    const passFile = join(dir, 'pass.txt');
    writeFileSync(passFile, 's3cret');
    const enc = fresh('ts-enc-pass');
    tscopy(['copy', '-q', '--encryption-key', `jwe:${pub}`, '--encrypt-layer', '1', `oci:${plain.dir}:latest`, `oci:${enc}:latest`]);
    // (skopeo 1.9.3's ocicrypt reads "KEYFILE:PASS" as a file name: it cannot use such a key at all)
    for (const spec of [`${key}:s3cret`, `${key}:pass=s3cret`, `${key}:file=${passFile}`]) {
      const o = fresh('ts-dec-pass');
      tscopy(['copy', '-q', '--decryption-key', spec, `oci:${enc}:latest`, `oci:${o}:latest`]);
      assertPlain(readLayout(o));
    }
    for (const [spec, re] of [[key, /the private key is encrypted: give its passphrase/], [`${key}:nope`, /wrong passphrase/]] as const) {
      const r = tscopyFail(['copy', '-q', '--decryption-key', spec, `oci:${enc}:latest`, `oci:${fresh('ts-dec-nopass')}:latest`]);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, re);
    }
  });
});

describe('refusals', () => {
  it('a decryption key that fits no recipient: names the layer, writes nothing', () => {
    const enc = fresh('sk-enc-wrong');
    skopeo(['copy', '-q', '--encryption-key', `jwe:${keys.rsaPub}`, `oci:${plain.dir}:latest`, `oci:${enc}:latest`]);
    const out = fresh('ts-wrong');
    const r = tscopyFail(['copy', '-q', '--decryption-key', keys.wrong, `oci:${enc}:latest`, `oci:${out}:latest`]);
    assert.equal(r.status, 1, r.stderr);
    const first = readLayout(enc).manifest.layers[0]!.digest;
    assert.match(r.stderr, new RegExp(`decrypting layer ${first}: none of the decryption keys \\(${keys.wrong}\\) is a recipient`));
    assert.deepEqual(imagesIn(out), []);
    assert.deepEqual(existsSync(join(out, 'blobs', 'sha256')) ? readdirSync(join(out, 'blobs', 'sha256')) : [], [], 'no blob written (keys unwrapped first)');
  });

  it('a tampered ciphertext (manifest rewritten to match): HMAC mismatch naming the layer, no image at the destination', () => {
    const enc = fresh('sk-enc-tamper');
    skopeo(['copy', '-q', '--encryption-key', `jwe:${keys.rsaPub}`, `oci:${plain.dir}:latest`, `oci:${enc}:latest`]);
    const e = readLayout(enc);
    // flip a byte in the last layer's ciphertext and make the manifest and index.json name the new blob
    const last = e.manifest.layers[2]!;
    const blob = readFileSync(blobPath(enc, last.digest));
    blob[Math.floor(blob.length / 2)]! ^= 0x55;
    const tampered = putBlob(enc, blob);
    rmSync(blobPath(enc, last.digest));
    const m = JSON.parse(readFileSync(blobPath(enc, e.manifestDigest), 'utf8')) as Manifest;
    m.layers[2]!.digest = tampered;
    const mb = Buffer.from(JSON.stringify(m));
    const md = putBlob(enc, mb);
    const index = JSON.parse(readFileSync(join(enc, 'index.json'), 'utf8')) as { manifests: Desc[] };
    Object.assign(index.manifests[0]!, { digest: md, size: mb.length });
    writeFileSync(join(enc, 'index.json.tmp'), JSON.stringify(index));
    renameSync(join(enc, 'index.json.tmp'), join(enc, 'index.json'));
    const out = fresh('ts-tamper');
    const r = tscopyFail(['copy', '-q', '--decryption-key', keys.rsa, `oci:${enc}:latest`, `oci:${out}:latest`]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`decrypting layer ${tampered}: HMAC mismatch`));
    assert.deepEqual(imagesIn(out), [], 'no image committed');
    // no plaintext of the tampered layer either (blobs only appear complete and verified)
    const plainLast = plain.manifest.layers[2]!.digest;
    assert.ok(!existsSync(blobPath(out, plainLast)));
    // decrypted and recompressed: the decompressor may see the modified data before the HMAC check; still named
    const r2 = tscopyFail(['copy', '-q', '--dest-compress-format', 'zstd', '--decryption-key', keys.rsa, `oci:${enc}:latest`, `oci:${out}:latest`]);
    assert.equal(r2.status, 1, r2.stderr);
    assert.match(r2.stderr, new RegExp(`decrypting layer ${tampered}: .*the encrypted layer (was )?(probably )?modified or is corrupt`));
    assert.deepEqual(imagesIn(out), []);
    // skopeo refuses it too
    assert.match(skopeoFail(['copy', '-q', '--decryption-key', keys.rsa, `oci:${enc}:latest`, `oci:${fresh('sk-tamper')}:latest`]), /hmac/i);
  });

  it('flags: v2s2, both key kinds, --encrypt-layer alone or out of range, unsupported protocols, private key as recipient', () => {
    const src = `oci:${plain.dir}:latest`;
    const cases: [string[], number, RegExp][] = [
      [['--encryption-key', `jwe:${keys.rsaPub}`, '-f', 'v2s2'], 2, /encrypted layers need the OCI manifest format/],
      [['--encryption-key', `jwe:${keys.rsaPub}`, '--decryption-key', keys.rsa], 2, /cannot be specified together/],
      [['--encrypt-layer', '1'], 2, /--encrypt-layer can only be used with --encryption-key/],
      [['--encryption-key', `jwe:${keys.rsaPub}`, '--encrypt-layer', '3'], 2, /--encrypt-layer 3: .* has 3 layer\(s\)/],
      [['--encryption-key', `jwe:${keys.rsaPub}`, '--encrypt-layer', '-4'], 2, /--encrypt-layer -4/],
      [['--encryption-key', `pgp:${keys.rsaPub}`], 2, /pgp protocol is not supported by tscopy/],
      [['--encryption-key', keys.rsaPub], 2, /PROTOCOL:KEYFILE/],
      [['--encryption-key', `jwe:${keys.rsa}`], 2, /not a public key/],
      [['--decryption-key', keys.rsaPub], 2, /not a private key/],
    ];
    for (const [flags, status, re] of cases) {
      const out = fresh('flags');
      const r = tscopyFail(['copy', '-q', ...flags, src, `oci:${out}:latest`]);
      assert.equal(r.status, status, `${flags.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re, flags.join(' '));
      assert.deepEqual(imagesIn(out), [], `${flags.join(' ')}: nothing written`);
    }
  });

  it("a signed source is not encrypted (skopeo's rule: it would invalidate the signatures) unless --remove-signatures", () => {
    const signed = fresh('signed');
    skopeo(['copy', '-q', `oci:${plain.dir}:latest`, `dir:${signed}`]);
    writeFileSync(join(signed, 'signature-1'), 'not checked with --insecure-policy');
    const r = tscopyFail(['copy', '-q', '--insecure-policy', '--encryption-key', `jwe:${keys.rsaPub}`, `dir:${signed}`, `dir:${fresh('ts-signed')}`]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /layer sha256:\w+ should be encrypted, but we can't modify the manifest: Would invalidate signatures/);
    const out = fresh('ts-unsigned');
    tscopy(['copy', '-q', '--insecure-policy', '--remove-signatures', '--encryption-key', `jwe:${keys.rsaPub}`, `dir:${signed}`, `oci:${out}:latest`]);
    assertEncrypted(readLayout(out), 0);
  });
});
