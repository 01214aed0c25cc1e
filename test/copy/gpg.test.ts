/**
 * GPG "simple signing" (containers-signature(5)) with lookaside storage, checked against skopeo 1.9.3 both ways:
 * real gpg (keys made per run in a temporary GNUPGHOME, its agent stopped at the end), real registries on port 0
 * (distribution and tsregistry processes), registries.d `lookaside: file://DIR`, policy.json `signedBy`.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:http';
import { baseLayout, baseLayoutCopy, pushBase } from '../fixtures/base.js';
import { procsWith, requireTool } from '../helpers.js';
import { spawnRegistry, startDistribution } from '../registry/util.js';
import { tscopy } from '../sign/util.js';
import { loadRegistriesD, lookasideFor, useSigstoreAttachments } from '../../src/copy/registries-d.js';
import { makeSimplePayload, parseSimplePayload } from '../../src/copy/sign/simple.js';
import type { Digest } from '../../src/oci/digest.js';

const TLS = ['--src-tls-verify=false', '--dest-tls-verify=false'];

interface Env {
  dir: string;
  gnupg: string;
  env: NodeJS.ProcessEnv;
  fpr: string;
  pub: string;
  wrongPub: string;
  wrongFpr: string;
  regd: string;
  lookaside: string;
  reg: string; // distribution host:port
  reg2: string; // tsregistry host:port
  digest: string;
  /** An http server serving `staging` at /sigs (an http(s) lookaside). */
  http: string;
  staging: string;
}

function gpg(e: { env: NodeJS.ProcessEnv }, args: string[], input?: Buffer): Buffer {
  const r = spawnSync('gpg', ['--batch', '--no-tty', ...args], { env: e.env, input });
  if (r.status !== 0) throw new Error(`gpg ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function run(e: Env, args: string[]): { status: number; stdout: string; stderr: string } {
  return tscopy(args, e.env);
}

function skopeo(e: Env, args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync('skopeo', args, { env: e.env, encoding: 'utf8' });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** tscopy/skopeo without blocking this process (the http lookaside is served from here). */
function runAsync(e: Env, cmd: 'tscopy' | 'skopeo', args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  const bin = cmd === 'tscopy' ? [process.execPath, new URL('../../../bin/tscopy.js', import.meta.url).pathname] : ['skopeo'];
  return new Promise((resolve) => {
    const c = spawn(bin[0]!, [...bin.slice(1), ...args], { env: e.env });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    c.on('close', (code) => resolve({ status: code ?? -1, stdout, stderr }));
  });
}

function policy(e: Env, name: string, req: Record<string, unknown>): string {
  const p = join(e.dir, `${name}.json`);
  writeFileSync(p, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }], transports: { docker: { '': [req] }, dir: { '': [req] } } }));
  return p;
}

function sigDir(e: Env, repo: string, digest: string): string {
  return join(e.lookaside, `${repo}@${digest.replace(':', '=')}`);
}

const cleanups: (() => void | Promise<void>)[] = [];
const T = { after: (fn: () => void | Promise<void>) => void cleanups.push(fn) };
let E: Env;

describe('GPG simple signing (lookaside, policy signedBy) against skopeo', () => {
  before(async () => {
    requireTool('gpg');
    requireTool('skopeo');
    const dir = mkdtempSync(join(tmpdir(), 'tsimage-gpg-test-'));
    const gnupg = join(dir, 'gnupg');
    mkdirSync(gnupg, { mode: 0o700 });
    const env = { ...process.env, GNUPGHOME: gnupg };
    cleanups.push(() => {
      // the agent gpg --sign started for this GNUPGHOME
      spawnSync('gpgconf', ['--kill', 'all'], { env });
      rmSync(dir, { recursive: true, force: true });
    });
    const mk = (uid: string) => {
      gpg({ env }, ['--passphrase', '', '--quick-gen-key', uid, 'ed25519', 'sign', 'never']);
      const out = gpg({ env }, ['--with-colons', '--list-secret-keys', uid]).toString();
      return /^fpr:+([0-9A-F]+):/m.exec(out)![1]!;
    };
    const fpr = mk('Signer <signer@example.invalid>');
    const wrongFpr = mk('Other <other@example.invalid>');
    const pub = join(dir, 'pub.gpg');
    writeFileSync(pub, gpg({ env }, ['--export', fpr]));
    const wrongPub = join(dir, 'wrong.gpg');
    writeFileSync(wrongPub, gpg({ env }, ['--armor', '--export', wrongFpr]));
    const d = await startDistribution(T);
    const r2 = await spawnRegistry(T, join(dir, 'tsreg'));
    const lookaside = join(dir, 'lookaside');
    const staging = join(dir, 'staging');
    // a static file server for the http lookaside (the staging directory, as a web server would publish it)
    const server: Server = createServer((req, res) => {
      const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
      const file = join(staging, path.replace(/^\/sigs\//, ''));
      if (!path.startsWith('/sigs/') || path.includes('..') || !existsSync(file)) {
        res.writeHead(404).end('not found');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(readFileSync(file));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const addr = server.address();
    const http = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/sigs`;
    const regd = join(dir, 'registries.d');
    mkdirSync(regd);
    writeFileSync(
      join(regd, 'test.yaml'),
      `docker:\n  ${d.addr}:\n    lookaside: file://${lookaside}\n  ${r2.addr}:\n    sigstore: file://${lookaside}2\n` +
        `  ${d.addr}/web:\n    lookaside: ${http}\n    lookaside-staging: file://${staging}\n  ${d.addr}/ro:\n    lookaside: ${http}\n`,
    );
    const digest = await pushBase(d.addr, 'app/unsigned', 'v1');
    E = { dir, gnupg, env, fpr, pub, wrongPub, wrongFpr, regd, lookaside, reg: d.addr, reg2: r2.addr, digest, http, staging };
  });

  after(async () => {
    for (const c of cleanups.reverse()) await c();
    assert.deepEqual(procsWith('tsimage-gpg-'), [], 'no gpg-agent (or gpg) left in a temporary homedir');
  });

  it('tscopy copy --sign-by: skopeo accepts it with policy signedBy, and refuses the unsigned image', () => {
    const r = run(E, ['--registries.d', E.regd, '--insecure-policy', 'copy', '-q', ...TLS, '--sign-by', E.fpr, `docker://${E.reg}/app/unsigned:v1`, `docker://${E.reg}/app/signed:v1`]);
    assert.equal(r.status, 0, r.stderr);
    const sig = join(sigDir(E, 'app/signed', E.digest), 'signature-1');
    assert.ok(existsSync(sig), `no lookaside signature at ${sig}`);
    assert.ok(!existsSync(join(sigDir(E, 'app/signed', E.digest), 'signature-2')));
    // the payload as containers/image writes it: sorted keys, identity with the tag, this digest
    const payload = gpg(E, ['--decrypt', sig]).toString();
    const m = /^\{"critical":\{"identity":\{"docker-reference":"([^"]+)"\},"image":\{"docker-manifest-digest":"(sha256:[0-9a-f]{64})"\},"type":"atomic container signature"\},"optional":\{"creator":"tscopy [^"]+","timestamp":(\d+)\}\}$/.exec(payload);
    assert.ok(m, payload);
    assert.equal(m[1], `${E.reg}/app/signed:v1`);
    assert.equal(m[2], E.digest);
    assert.ok(Math.abs(Number(m[3]) - Date.now() / 1000) < 600);
    // a binary OpenPGP message (compressed packet), not armored, not detached
    const packets = gpg(E, ['--list-packets', sig]).toString();
    assert.match(packets, /:literal data packet:/);
    assert.match(packets, /:onepass_sig packet:/);

    const pol = policy(E, 'signed-by', { type: 'signedBy', keyType: 'GPGKeys', keyPath: E.pub });
    const ok = skopeo(E, ['--registries.d', E.regd, '--policy', pol, 'copy', '-q', '--src-tls-verify=false', `docker://${E.reg}/app/signed:v1`, `dir:${E.dir}/sk-ok`]);
    assert.equal(ok.status, 0, `skopeo refused tscopy's signature: ${ok.stderr}`);
    assert.ok(readFileSync(join(E.dir, 'sk-ok', 'signature-1')).equals(readFileSync(sig)), 'skopeo carried the signature to dir: byte for byte');
    const bad = skopeo(E, ['--registries.d', E.regd, '--policy', pol, 'copy', '-q', '--src-tls-verify=false', `docker://${E.reg}/app/unsigned:v1`, `dir:${E.dir}/sk-bad`]);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /A signature was required, but no signature exists/);
    // tscopy's own policy check says the same for the unsigned image, and writes nothing
    const mine = run(E, ['--registries.d', E.regd, '--policy', pol, 'copy', '-q', ...TLS, `docker://${E.reg}/app/unsigned:v1`, `dir:${E.dir}/ts-bad`]);
    assert.equal(mine.status, 1);
    assert.match(mine.stderr, new RegExp(`docker:${E.reg}/app/unsigned:v1 rejected .*signedBy.*A signature was required, but no signature exists`));
    assert.ok(!existsSync(join(E.dir, 'ts-bad', 'manifest.json')));
  });

  it('skopeo --sign-by: tscopy verifies it, carries it to dir: as skopeo does, and refuses tampering, a wrong key, a wrong identity', () => {
    const sk = skopeo(E, ['--registries.d', E.regd, 'copy', '-q', ...TLS, '--sign-by', E.fpr, `docker://${E.reg}/app/unsigned:v1`, `docker://${E.reg}/app/sk:v1`]);
    assert.equal(sk.status, 0, sk.stderr);
    const sig = join(sigDir(E, 'app/sk', E.digest), 'signature-1');
    const pol = policy(E, 'signed-by-2', { type: 'signedBy', keyType: 'GPGKeys', keyPath: E.pub });
    const r = run(E, ['--registries.d', E.regd, '--policy', pol, 'copy', '-q', ...TLS, `docker://${E.reg}/app/sk:v1`, `dir:${E.dir}/ts-dir`]);
    assert.equal(r.status, 0, r.stderr);
    // dir: signatures byte-equal to skopeo's dir: copy of the same image
    const skd = skopeo(E, ['--registries.d', E.regd, '--policy', pol, 'copy', '-q', '--src-tls-verify=false', `docker://${E.reg}/app/sk:v1`, `dir:${E.dir}/sk-dir`]);
    assert.equal(skd.status, 0, skd.stderr);
    const names = (d: string) => readdirSync(d).sort();
    assert.deepEqual(names(join(E.dir, 'ts-dir')), names(join(E.dir, 'sk-dir')));
    for (const f of names(join(E.dir, 'sk-dir'))) assert.ok(readFileSync(join(E.dir, 'ts-dir', f)).equals(readFileSync(join(E.dir, 'sk-dir', f))), f);
    assert.ok(readFileSync(join(E.dir, 'ts-dir', 'signature-1')).equals(readFileSync(sig)));

    // a wrong key
    const wrong = policy(E, 'wrong-key', { type: 'signedBy', keyType: 'GPGKeys', keyData: readFileSync(E.wrongPub).toString('base64') });
    const w = run(E, ['--registries.d', E.regd, '--policy', wrong, 'copy', '-q', ...TLS, `docker://${E.reg}/app/sk:v1`, `dir:${E.dir}/w`]);
    assert.equal(w.status, 1);
    assert.match(w.stderr, new RegExp(`docker:${E.reg}/app/sk:v1 rejected .*signed by key [0-9A-F]+, which is not among the trusted keys`));
    // a wrong identity: exactReference to another image
    const ident = policy(E, 'wrong-identity', { type: 'signedBy', keyType: 'GPGKeys', keyPaths: [E.wrongPub, E.pub], signedIdentity: { type: 'exactReference', dockerReference: `${E.reg}/app/other:v1` } });
    const i = run(E, ['--registries.d', E.regd, '--policy', ident, 'copy', '-q', ...TLS, `docker://${E.reg}/app/sk:v1`, `dir:${E.dir}/i`]);
    assert.equal(i.status, 1);
    assert.match(i.stderr, new RegExp(`Signature for identity ${E.reg}/app/sk:v1 is not accepted: .*does not match ${E.reg}/app/other:v1`));
    // skopeo agrees on both
    assert.notEqual(skopeo(E, ['--registries.d', E.regd, '--policy', wrong, 'copy', '-q', '--src-tls-verify=false', `docker://${E.reg}/app/sk:v1`, `dir:${E.dir}/w2`]).status, 0);
    assert.notEqual(skopeo(E, ['--registries.d', E.regd, '--policy', ident, 'copy', '-q', '--src-tls-verify=false', `docker://${E.reg}/app/sk:v1`, `dir:${E.dir}/i2`]).status, 0);

    // tampered: one byte of the signature changed
    const good = readFileSync(sig);
    const t = Buffer.from(good);
    t[t.length - 8] = t[t.length - 8]! ^ 0x40;
    writeFileSync(sig, t);
    try {
      const x = run(E, ['--registries.d', E.regd, '--policy', pol, 'copy', '-q', ...TLS, `docker://${E.reg}/app/sk:v1`, `dir:${E.dir}/x`]);
      assert.equal(x.status, 1);
      assert.match(x.stderr, new RegExp(`docker:${E.reg}/app/sk:v1 rejected by policy .*signedBy.*: (BAD signature|signature did not verify|not an OpenPGP signature|not a signature)`));
      assert.ok(!existsSync(join(E.dir, 'x', 'manifest.json')), 'nothing written on refusal');
      assert.notEqual(skopeo(E, ['--registries.d', E.regd, '--policy', pol, 'copy', '-q', '--src-tls-verify=false', `docker://${E.reg}/app/sk:v1`, `dir:${E.dir}/x2`]).status, 0);
    } finally {
      writeFileSync(sig, good);
    }
  });

  it('payloads are parsed strictly: an unknown critical key, another type, a digest mismatch, a duplicate key each refuse', () => {
    const pol = policy(E, 'strict', { type: 'signedBy', keyType: 'GPGKeys', keyPath: E.pub, signedIdentity: { type: 'matchRepository' } });
    const target = sigDir(E, 'app/unsigned', E.digest);
    mkdirSync(target, { recursive: true });
    const ref = `${E.reg}/app/unsigned:v1`;
    const cases: [string, string, RegExp][] = [
      ['unknown critical key', `{"critical":{"identity":{"docker-reference":"${ref}"},"image":{"docker-manifest-digest":"${E.digest}"},"type":"atomic container signature","extra":1},"optional":{}}`, /unknown key "extra" in critical/],
      ['wrong type', `{"critical":{"identity":{"docker-reference":"${ref}"},"image":{"docker-manifest-digest":"${E.digest}"},"type":"cosign container image signature"},"optional":{}}`, /Unrecognized signature type "cosign container image signature"/],
      ['digest mismatch', `{"critical":{"identity":{"docker-reference":"${ref}"},"image":{"docker-manifest-digest":"sha256:${'1'.repeat(64)}"},"type":"atomic container signature"},"optional":{}}`, /Signature for digest sha256:1{64} does not match the image's sha256:/],
      ['duplicate key', `{"critical":{"identity":{"docker-reference":"${ref}"},"image":{"docker-manifest-digest":"${E.digest}"},"type":"atomic container signature"},"optional":{},"optional":{}}`, /duplicate key "optional"/],
    ];
    try {
      for (const [what, payload, want] of cases) {
        writeFileSync(join(target, 'signature-1'), gpg(E, ['--sign', '--local-user', E.fpr], Buffer.from(payload)));
        const r = run(E, ['--registries.d', E.regd, '--policy', pol, 'copy', '-q', ...TLS, `docker://${ref}`, `dir:${E.dir}/strict`]);
        assert.equal(r.status, 1, `${what}: accepted`);
        assert.match(r.stderr, new RegExp(`docker:${ref} rejected`), what);
        assert.match(r.stderr, want, what);
      }
    } finally {
      rmSync(target, { recursive: true, force: true });
    }
  });

  it('a copy to another registry carries the lookaside signature; skopeo verifies it at the destination', () => {
    const src = `docker://${E.reg}/app/signed:v1`;
    const r = run(E, ['--registries.d', E.regd, '--insecure-policy', 'copy', '-q', ...TLS, src, `docker://${E.reg2}/mirror/app:v1`]);
    assert.equal(r.status, 0, r.stderr);
    // registries.d says `sigstore:` (the older key name) for the second registry
    const carried = join(`${E.lookaside}2`, `mirror/app@${E.digest.replace(':', '=')}`, 'signature-1');
    assert.ok(readFileSync(carried).equals(readFileSync(join(sigDir(E, 'app/signed', E.digest), 'signature-1'))), 'carried byte for byte');
    const pol = policy(E, 'mirror', {
      type: 'signedBy',
      keyType: 'GPGKeys',
      keyPath: E.pub,
      signedIdentity: { type: 'remapIdentity', prefix: `${E.reg2}/mirror/app`, signedPrefix: `${E.reg}/app/signed` },
    });
    const v = skopeo(E, ['--registries.d', E.regd, '--policy', pol, 'copy', '-q', '--src-tls-verify=false', `docker://${E.reg2}/mirror/app:v1`, `dir:${E.dir}/mirror-dir`]);
    assert.equal(v.status, 0, v.stderr);
    // --remove-signatures drops it
    const r2 = run(E, ['--registries.d', E.regd, '--insecure-policy', 'copy', '-q', ...TLS, '--remove-signatures', src, `docker://${E.reg2}/mirror/nosig:v1`]);
    assert.equal(r2.status, 0, r2.stderr);
    assert.ok(!existsSync(join(`${E.lookaside}2`, `mirror/nosig@${E.digest.replace(':', '=')}`)));
    // an OCI layout cannot hold them: refused before anything is written, as skopeo
    const o = run(E, ['--registries.d', E.regd, '--insecure-policy', 'copy', '-q', ...TLS, src, `oci:${E.dir}/layout:v1`]);
    assert.equal(o.status, 2, o.stderr);
    assert.match(o.stderr, /Can not copy signatures to oci:.*Pushing signatures for OCI images is not supported.*--remove-signatures/);
    const idx = join(E.dir, 'layout', 'index.json');
    assert.ok(!existsSync(idx) || JSON.parse(readFileSync(idx, 'utf8')).manifests.length === 0, 'no image written to the layout');
  });

  it('standalone-sign / standalone-verify cross-checked with skopeo (output and error texts)', async () => {
    const base = await baseLayout();
    const man = join(E.dir, 'manifest.json');
    writeFileSync(man, readFileSync(join(base.dir, 'blobs', 'sha256', base.manifestDigest.slice(7))));
    const ref = 'registry.example.com/team/app:v1';
    const mine = run(E, ['standalone-sign', '-o', join(E.dir, 'ts.sig'), man, ref, E.fpr]);
    assert.equal(mine.status, 0, mine.stderr);
    const sv = skopeo(E, ['standalone-verify', man, ref, E.fpr, join(E.dir, 'ts.sig')]);
    assert.equal(sv.status, 0, sv.stderr);
    assert.equal(sv.stdout, `Signature verified, digest ${base.manifestDigest}\n`);
    assert.equal(skopeo(E, ['standalone-sign', '-o', join(E.dir, 'sk.sig'), man, ref, E.fpr]).status, 0);
    const tv = run(E, ['standalone-verify', man, ref, E.fpr, join(E.dir, 'sk.sig')]);
    assert.equal(tv.status, 0, tv.stderr);
    assert.equal(tv.stdout, sv.stdout, 'the same output as skopeo');
    // the same refusals, in skopeo's words
    for (const [args, what] of [
      [[man, 'registry.example.com/team/other:v1', E.fpr, join(E.dir, 'sk.sig')], 'identity'],
      [[man, ref, E.wrongFpr, join(E.dir, 'sk.sig')], 'fingerprint'],
      [[join(E.dir, 'sk.sig'), ref, E.fpr, join(E.dir, 'sk.sig')], 'digest'],
    ] as [string[], string][]) {
      const a = run(E, ['standalone-verify', ...args]);
      const b = skopeo(E, ['standalone-verify', ...args]);
      assert.equal(a.status, 1, what);
      assert.notEqual(b.status, 0, what);
      const msg = /Error verifying signature: [^\n]*/.exec(a.stderr)?.[0];
      assert.ok(msg, `${what}: ${a.stderr}`);
      assert.ok(b.stderr.replace(/\\"/g, '"').includes(msg), `${what}: skopeo said ${b.stderr}, tscopy ${msg}`);
    }
    // newer skopeo's forms: a fingerprint list, and "any" with --public-key-file (only those keys)
    const list = run(E, ['standalone-verify', man, ref, `${E.wrongFpr},${E.fpr}`, join(E.dir, 'sk.sig')]);
    assert.equal(list.stdout, `Signature verified using fingerprint ${E.fpr}, digest ${base.manifestDigest}\n`);
    assert.equal(run(E, ['standalone-verify', '--public-key-file', E.pub, man, ref, 'any', join(E.dir, 'sk.sig')]).status, 0);
    const other = run(E, ['standalone-verify', '--public-key-file', E.wrongPub, man, ref, 'any', join(E.dir, 'sk.sig')]);
    assert.equal(other.status, 1);
    assert.match(other.stderr, /not among the trusted keys/);
    assert.equal(run(E, ['standalone-verify', man, ref, 'any', join(E.dir, 'sk.sig')]).status, 2);
    assert.match(run(E, ['standalone-sign', man, ref, E.fpr]).stderr, /Usage: tscopy standalone-sign manifest docker-reference key-fingerprint -o signature/);
    assert.match(run(E, ['standalone-sign', '-o', join(E.dir, 'x.sig'), man, ref, '0'.repeat(40)]).stderr, /Error creating signature: key "0{40}" not found/);
    // a signed Docker schema 1 manifest: both sign and verify its digest without the JWS signatures (as skopeo)
    const payload = JSON.stringify({ schemaVersion: 1, name: 'team/app', tag: 'v1', fsLayers: [] }, null, 3);
    const protectedHeader = Buffer.from(JSON.stringify({ formatLength: payload.length - 2, formatTail: Buffer.from('\n}').toString('base64url') })).toString('base64url');
    const s1 = join(E.dir, 'schema1.json');
    writeFileSync(s1, `${payload.slice(0, -2)},\n   "signatures": [{"header": {"alg": "ES256"}, "signature": "c2ln", "protected": "${protectedHeader}"}]\n}`);
    const s1Digest = `sha256:${createHash('sha256').update(payload).digest('hex')}`;
    assert.equal(run(E, ['standalone-sign', '-o', join(E.dir, 's1-ts.sig'), s1, ref, E.fpr]).status, 0);
    assert.equal(skopeo(E, ['standalone-verify', s1, ref, E.fpr, join(E.dir, 's1-ts.sig')]).stdout, `Signature verified, digest ${s1Digest}\n`);
    assert.equal(skopeo(E, ['standalone-sign', '-o', join(E.dir, 's1-sk.sig'), s1, ref, E.fpr]).status, 0);
    assert.equal(run(E, ['standalone-verify', s1, ref, E.fpr, join(E.dir, 's1-sk.sig')]).stdout, `Signature verified, digest ${s1Digest}\n`);
  });

  it('--all signs and carries the list and every instance (dir: files as skopeo writes them); sync --sign-by; a passphrase file', async () => {
    // a two-platform list
    const layoutDir = join(E.dir, 'multi');
    mkdirSync(layoutDir);
    const layout = await baseLayoutCopy(layoutDir);
    const base = await baseLayout();
    const m1 = JSON.parse((await layout.readBytes(base.manifestDigest)).toString());
    const c2 = JSON.parse((await layout.readBytes(m1.config.digest)).toString());
    c2.architecture = 'arm64';
    const cfg2 = await layout.putBytes('application/vnd.oci.image.config.v1+json', JSON.stringify(c2));
    const m2 = await layout.putBytes('application/vnd.oci.image.manifest.v1+json', JSON.stringify({ ...m1, config: { ...m1.config, digest: cfg2.digest, size: cfg2.size } }));
    const size1 = (await layout.readBytes(base.manifestDigest)).length;
    const idx = await layout.putBytes(
      'application/vnd.oci.image.index.v1+json',
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: base.manifestDigest, size: size1, platform: { architecture: 'amd64', os: 'linux' } },
          { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: m2.digest, size: m2.size, platform: { architecture: 'arm64', os: 'linux' } },
        ],
      }),
    );
    await layout.tag('multi', idx);
    const r = run(E, ['--registries.d', E.regd, '--insecure-policy', 'copy', '-q', '--all', ...TLS, '--sign-by', E.fpr, `oci:${layoutDir}:multi`, `docker://${E.reg}/app/multi:v1`]);
    assert.equal(r.status, 0, r.stderr);
    for (const d of [idx.digest, base.manifestDigest, m2.digest]) assert.ok(existsSync(join(sigDir(E, 'app/multi', d), 'signature-1')), `signature of ${d}`);
    const pol = policy(E, 'multi', { type: 'signedBy', keyType: 'GPGKeys', keyPath: E.pub });
    const sk = skopeo(E, ['--registries.d', E.regd, '--policy', pol, 'copy', '-q', '--all', '--src-tls-verify=false', `docker://${E.reg}/app/multi:v1`, `dir:${E.dir}/multi-sk`]);
    assert.equal(sk.status, 0, sk.stderr);
    const ts = run(E, ['--registries.d', E.regd, '--policy', pol, 'copy', '-q', '--all', ...TLS, `docker://${E.reg}/app/multi:v1`, `dir:${E.dir}/multi-ts`]);
    assert.equal(ts.status, 0, ts.stderr);
    const names = readdirSync(join(E.dir, 'multi-sk')).sort();
    assert.ok(names.includes(`${m2.digest.slice(7)}.signature-1`) && names.includes('signature-1'), names.join(' '));
    assert.deepEqual(readdirSync(join(E.dir, 'multi-ts')).sort(), names);
    for (const f of names) assert.ok(readFileSync(join(E.dir, 'multi-ts', f)).equals(readFileSync(join(E.dir, 'multi-sk', f))), f);
    // a single instance from the signed list: the instance's own signature is checked and carried
    const one = run(E, ['--registries.d', E.regd, '--policy', pol, 'copy', '-q', '--override-arch', 'arm64', ...TLS, `docker://${E.reg}/app/multi:v1`, `dir:${E.dir}/one`]);
    assert.equal(one.status, 0, one.stderr);
    assert.ok(readFileSync(join(E.dir, 'one', 'signature-1')).equals(readFileSync(join(sigDir(E, 'app/multi', m2.digest), 'signature-1'))));

    // sync --sign-by, with a key that has a passphrase (loopback pinentry, first line of the file)
    gpg(E, ['--pinentry-mode', 'loopback', '--passphrase', 'secret words', '--quick-gen-key', 'Locked <locked@example.invalid>', 'ed25519', 'sign', 'never']);
    const locked = /^fpr:+([0-9A-F]+):/m.exec(gpg(E, ['--with-colons', '--list-secret-keys', 'locked@example.invalid']).toString())![1]!;
    writeFileSync(join(E.dir, 'pp-wrong'), 'wrong\n');
    writeFileSync(join(E.dir, 'pp'), 'secret words\nsecond line ignored\n');
    const bad = run(E, ['--registries.d', E.regd, '--insecure-policy', 'sync', '-q', '--src', 'docker', '--dest', 'docker', ...TLS, '--sign-by', locked, '--sign-passphrase-file', join(E.dir, 'pp-wrong'), `${E.reg}/app/unsigned`, `${E.reg2}/bad`]);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /bad passphrase|Bad passphrase/i);
    const s = run(E, ['--registries.d', E.regd, '--insecure-policy', 'sync', '-q', '--src', 'docker', '--dest', 'docker', ...TLS, '--sign-by', locked, '--sign-passphrase-file', join(E.dir, 'pp'), `${E.reg}/app/unsigned`, `${E.reg2}/synced`]);
    assert.equal(s.status, 0, s.stderr);
    writeFileSync(join(E.dir, 'locked.gpg'), gpg(E, ['--export', locked]));
    const lp = policy(E, 'locked', { type: 'signedBy', keyType: 'GPGKeys', keyPath: join(E.dir, 'locked.gpg') });
    const v = skopeo(E, ['--registries.d', E.regd, '--policy', lp, 'copy', '-q', '--src-tls-verify=false', `docker://${E.reg2}/synced/unsigned:v1`, `dir:${E.dir}/synced-dir`]);
    assert.equal(v.status, 0, v.stderr);
  });

  it('an http lookaside is read through the registry client; writes go to lookaside-staging; http without staging is refused before writing', async () => {
    const r = await runAsync(E, 'tscopy', ['--registries.d', E.regd, '--insecure-policy', 'copy', '-q', ...TLS, '--sign-by', E.fpr, `docker://${E.reg}/app/unsigned:v1`, `docker://${E.reg}/web/app:v1`]);
    assert.equal(r.status, 0, r.stderr);
    const staged = join(E.staging, `web/app@${E.digest.replace(':', '=')}`, 'signature-1');
    assert.ok(existsSync(staged), 'written to lookaside-staging');
    const pol = policy(E, 'web', { type: 'signedBy', keyType: 'GPGKeys', keyPath: E.pub });
    const v = await runAsync(E, 'tscopy', ['--registries.d', E.regd, '--policy', pol, 'copy', '-q', ...TLS, `docker://${E.reg}/web/app:v1`, `dir:${E.dir}/web-dir`]);
    assert.equal(v.status, 0, v.stderr);
    assert.ok(readFileSync(join(E.dir, 'web-dir', 'signature-1')).equals(readFileSync(staged)), 'read back over http');
    assert.equal((await runAsync(E, 'skopeo', ['--registries.d', E.regd, '--policy', pol, 'copy', '-q', '--src-tls-verify=false', `docker://${E.reg}/web/app:v1`, `dir:${E.dir}/web-sk`])).status, 0);
    // writing to an http lookaside: refused before anything is written
    const ro = await runAsync(E, 'tscopy', ['--registries.d', E.regd, '--insecure-policy', 'copy', '-q', ...TLS, '--sign-by', E.fpr, `docker://${E.reg}/app/unsigned:v1`, `docker://${E.reg}/ro/app:v1`]);
    assert.notEqual(ro.status, 0);
    assert.match(ro.stderr, /Writing directly to a http lookaside .* is not supported .*Configure a lookaside-staging: location/);
    assert.equal((await fetch(`http://${E.reg}/v2/ro/app/manifests/v1`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).status, 404);
    // without signatures to write the copy goes through; the http server has none for it (404 = no signatures)
    const plain = await runAsync(E, 'tscopy', ['--registries.d', E.regd, '--insecure-policy', 'copy', '-q', ...TLS, `docker://${E.reg}/app/unsigned:v1`, `docker://${E.reg}/ro/app:v1`]);
    assert.equal(plain.status, 0, plain.stderr);
    const none = await runAsync(E, 'tscopy', ['--registries.d', E.regd, '--policy', pol, 'copy', '-q', ...TLS, `docker://${E.reg}/ro/app:v1`, `dir:${E.dir}/ro-dir`]);
    assert.equal(none.status, 1);
    assert.match(none.stderr, /A signature was required, but no signature exists/);
  });

  it('registries.d: namespace precedence, staging for writes, old key names, errors naming the file', async () => {
    const d = mkdtempSync(join(tmpdir(), 'tsimage-regd-'));
    try {
      writeFileSync(join(d, 'a.yaml'), 'default-docker:\n  lookaside: https://sigs.example.com/default\ndocker:\n  reg.example.com:\n    lookaside: file:///reg\n    use-sigstore-attachments: true\n');
      writeFileSync(join(d, 'b.yaml'), 'docker:\n  reg.example.com/team:\n    sigstore: file:///team\n    sigstore-staging: file:///staging\n  reg.example.com/team/app:v1:\n    use-sigstore-attachments: false\n');
      writeFileSync(join(d, 'ignored.yml'), 'not: [valid');
      const cfg = await loadRegistriesD(d);
      const scope = (identity: string, ns: string[]) => ({ identity, namespaces: ns });
      const app = scope('reg.example.com/team/app:v1', ['reg.example.com/team/app', 'reg.example.com/team', 'reg.example.com', '*.example.com', '*.com']);
      assert.equal(lookasideFor(cfg, app, false).url, 'file:///team');
      assert.equal(lookasideFor(cfg, app, true).url, 'file:///staging');
      assert.equal(lookasideFor(cfg, scope('reg.example.com/other:v1', ['reg.example.com/other', 'reg.example.com']), true).url, 'file:///reg');
      assert.equal(lookasideFor(cfg, scope('elsewhere.io/x:v1', ['elsewhere.io/x', 'elsewhere.io']), false).url, 'https://sigs.example.com/default');
      assert.equal(useSigstoreAttachments(cfg, app), false);
      assert.equal(useSigstoreAttachments(cfg, scope('reg.example.com/other:v1', ['reg.example.com/other', 'reg.example.com'])), true);
      writeFileSync(join(d, 'c.yaml'), 'docker:\n  reg.example.com:\n    lookaside: file:///again\n');
      await assert.rejects(loadRegistriesD(d), (e: Error) => /"docker" namespace "reg.example.com" defined both in ".*a.yaml" and ".*c.yaml"/.test(e.message));
      writeFileSync(join(d, 'c.yaml'), 'docker:\n  x.io:\n    lookaside: 42\n');
      await assert.rejects(loadRegistriesD(d), (e: Error) => e.message.includes(join(d, 'c.yaml')) && /lookaside: must be a URL string/.test(e.message));
      writeFileSync(join(d, 'c.yaml'), 'docker: [oops');
      await assert.rejects(loadRegistriesD(d), (e: Error) => e.message.startsWith(`parsing ${join(d, 'c.yaml')}`));
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('payload bytes and strict parsing (unit)', () => {
    const p = makeSimplePayload('example.com/a<b>:v1', `sha256:${'a'.repeat(64)}` as Digest, { creator: 'x', timestamp: 17 });
    assert.equal(p.toString(), `{"critical":{"identity":{"docker-reference":"example.com/a\\u003cb\\u003e:v1"},"image":{"docker-manifest-digest":"sha256:${'a'.repeat(64)}"},"type":"atomic container signature"},"optional":{"creator":"x","timestamp":17}}`);
    assert.deepEqual(parseSimplePayload(p), { dockerReference: 'example.com/a<b>:v1', digest: `sha256:${'a'.repeat(64)}`, creator: 'x', timestamp: 17 });
    const bad = (s: string, re: RegExp) => assert.throws(() => parseSimplePayload(Buffer.from(s)), re);
    const crit = `{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"sha256:${'a'.repeat(64)}"},"type":"atomic container signature"}`;
    bad(`{"critical":${crit},"optional":null}`, /optional is not a JSON object/);
    bad(`{"critical":${crit},"optional":{"timestamp":1.5}}`, /timestamp is not an integer/);
    bad(`{"critical":${crit}}`, /key "optional" missing/);
    bad(`{"critical":${crit},"optional":{},"x":1}`, /unknown key "x"/);
    bad(`{"critical":${crit.replace('"r"}', '"r","extra":"y"}')},"optional":{}}`, /unknown key "extra" in critical.identity/);
    bad(`{"critical":${crit.replace('"image"', '"image":{},"image"')},"optional":{}}`, /duplicate key "image" in critical/);
    bad(`{"critical":${crit},"optional":{}} x`, /not valid JSON/);
    // unknown optional keys are ignored (containers/image)
    assert.equal(parseSimplePayload(Buffer.from(`{"critical":${crit},"optional":{"other":[1,{"a":2}]}}`)).dockerReference, 'r');
  });
});
