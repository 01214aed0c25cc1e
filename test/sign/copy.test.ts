/**
 * policy.json enforced by `tscopy copy` (each rule type, accepted and refused, nothing written at the
 * destination on refusal), signatures and referrers carried by copy (registry -> registry with and
 * without the referrers API, -> OCI layout, --remove-signatures, archives), and copy --sign-by-key.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Digest } from '../../src/oci/index.js';
import { signatureTag, referrersFallbackTag } from '../../src/copy/sign/index.js';
import { baseLayout, pushBase } from '../fixtures/base.js';
import { tempDir } from '../helpers.js';
import { keyPair, ok, tscopy } from './util.js';
import { spawnRegistry, startDistribution } from '../registry/util.js';

async function status(url: string, accept = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json'): Promise<number> {
  const r = await fetch(url, { method: 'HEAD', headers: { accept } });
  return r.status;
}

async function getJson(url: string): Promise<any> {
  const r = await fetch(url, { headers: { accept: 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json' } });
  assert.equal(r.status, 200, url);
  return r.json();
}

const TLS = ['--src-tls-verify=false', '--dest-tls-verify=false'];

function policyFile(dir: string, name: string, doc: unknown): string {
  const p = join(dir, `${name}.json`);
  writeFileSync(p, JSON.stringify(doc, null, 2));
  return p;
}

describe('policy.json on copy', () => {
  it('each rule type accepted and refused; refusal names the rule and writes nothing at the destination', async (t) => {
    const dir = tempDir(t, 'sign-policy');
    const src = await spawnRegistry(t, join(dir, 'src'));
    const dst = await startDistribution(t);
    const digest = (await pushBase(src.addr, 'team/app', 'v1')) as Digest;
    await pushBase(src.addr, 'team/app', 'v2'); // the same manifest under another tag
    await pushBase(src.addr, 'team/unsigned', 'v1');
    const k = keyPair(dir, 'k');
    const wrong = keyPair(dir, 'wrong');
    ok(['sign', '--tls-verify=false', '--key', k.key, '--password-file', k.pw, `docker://${src.addr}/team/app:v1`]);
    const base = await baseLayout();
    const manifest = JSON.parse(readFileSync(join(base.dir, 'blobs', 'sha256', base.manifestDigest.slice(7)), 'utf8'));
    const blobs: string[] = [manifest.config.digest, ...manifest.layers.map((l: { digest: string }) => l.digest)];

    let n = 0;
    const copy = (policy: string, from: string, extra: string[] = []): { status: number; stdout: string; stderr: string; dest: string } => {
      const dest = `out${n++}`;
      const r = tscopy(['copy', ...TLS, '--quiet', '--policy', policy, ...extra, `docker://${src.addr}/${from}`, `docker://${dst.addr}/${dest}:x`]);
      return { ...r, dest };
    };
    const accepted = async (policy: string, from: string): Promise<void> => {
      const r = copy(policy, from);
      assert.equal(r.status, 0, `${from} should be accepted by ${policy}: ${r.stderr}`);
      assert.equal(await status(`${dst.url}/v2/${r.dest}/manifests/x`), 200);
    };
    const refused = async (policy: string, from: string, re: RegExp): Promise<void> => {
      const r = copy(policy, from);
      assert.equal(r.status, 1, `${from} should be refused by ${policy}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.match(r.stderr, /rejected by policy /);
      // nothing written: no tag, no manifest, no blob in the destination repository
      assert.equal(await status(`${dst.url}/v2/${r.dest}/manifests/x`), 404);
      assert.equal(await status(`${dst.url}/v2/${r.dest}/manifests/${digest}`), 404);
      for (const b of blobs) assert.equal(await status(`${dst.url}/v2/${r.dest}/blobs/${b}`), 404, `blob ${b} written despite the refusal`);
    };
    const scope = (reqs: unknown[], repo = `${src.addr}/team/app`) => ({ default: [{ type: 'reject' }], transports: { docker: { [repo]: reqs } } });

    // insecureAcceptAnything / reject (default and scoped)
    await accepted(policyFile(dir, 'any', { default: [{ type: 'insecureAcceptAnything' }] }), 'team/unsigned:v1');
    const rej = policyFile(dir, 'reject', { default: [{ type: 'insecureAcceptAnything' }], transports: { docker: { [`${src.addr}/team`]: [{ type: 'reject' }] } } });
    await refused(rej, 'team/unsigned:v1', new RegExp(`transports\\.docker\\["${src.addr}/team"\\]\\[0\\] \\(reject\\)`));
    // --insecure-policy accepts what the policy would refuse (as skopeo); skopeo's global placement works too
    const ins = tscopy(['copy', ...TLS, '--quiet', '--insecure-policy', `docker://${src.addr}/team/unsigned:v1`, `docker://${dst.addr}/insecure:x`]);
    assert.equal(ins.status, 0, ins.stderr);
    const gins = tscopy(['--insecure-policy', 'copy', ...TLS, '--quiet', `docker://${src.addr}/team/unsigned:v1`, `docker://${dst.addr}/insecure2:x`], { HOME: dir });
    assert.equal(gins.status, 0, gins.stderr);
    const grej = tscopy(['--policy', rej, 'copy', ...TLS, '--quiet', `docker://${src.addr}/team/unsigned:v1`, `docker://${dst.addr}/insecure3:x`]);
    assert.equal(grej.status, 1);
    assert.match(grej.stderr, /\(reject\)/);

    // sigstoreSigned keyPath: signed accepted; unsigned, wrong key refused
    const kp = policyFile(dir, 'keypath', scope([{ type: 'sigstoreSigned', keyPath: k.pub }]));
    await accepted(kp, 'team/app:v1');
    const kpu = policyFile(dir, 'keypath-unsigned', scope([{ type: 'sigstoreSigned', keyPath: k.pub }], `${src.addr}/team/unsigned`));
    await refused(kpu, 'team/unsigned:v1', /A signature was required, but no signature exists/);
    const kw = policyFile(dir, 'keypath-wrong', scope([{ type: 'sigstoreSigned', keyPath: wrong.pub }]));
    await refused(kw, 'team/app:v1', /sigstoreSigned\): no valid signature among 1: tag sha256-[0-9a-f]{64}\.sig, layer 1: cryptographic signature verification failed/);
    // the unscoped repository falls to default (reject)
    await refused(kp, 'team/unsigned:v1', /default\[0\] \(reject\)/);

    // keyData + signedIdentity rules: the signature names team/app:v1
    const kd = Buffer.from(k.pem).toString('base64');
    const exact = policyFile(dir, 'exact', scope([{ type: 'sigstoreSigned', keyData: kd, signedIdentity: { type: 'matchExact' } }]));
    await accepted(exact, 'team/app:v1');
    await refused(exact, 'team/app:v2', /does not match .*team\/app:v2 \(matchExact\)/);
    const rde = policyFile(dir, 'rde', scope([{ type: 'sigstoreSigned', keyData: kd }])); // default matchRepoDigestOrExact
    await refused(rde, 'team/app:v2', /matchRepoDigestOrExact/);
    await accepted(rde, `team/app@${digest}`);
    const repo = policyFile(dir, 'repo', scope([{ type: 'sigstoreSigned', keyData: kd, signedIdentity: { type: 'matchRepository' } }]));
    await accepted(repo, 'team/app:v2');
    const exRepo = policyFile(dir, 'exrepo', scope([{ type: 'sigstoreSigned', keyData: kd, signedIdentity: { type: 'exactRepository', dockerRepository: 'other.example/app' } }]));
    await refused(exRepo, 'team/app:v1', /does not match other\.example\/app \(exactRepository\)/);
    // signedBy (GPG): a cosign signature is not a simple signature (test/copy/gpg.test.ts has the GPG cases)
    const gpg = policyFile(dir, 'gpg', scope([{ type: 'signedBy', keyType: 'GPGKeys', keyPath: k.pub }]));
    await refused(gpg, 'team/app:v1', /\(signedBy\): A signature was required, but no signature exists/);
    // every requirement must accept
    const both = policyFile(dir, 'both', scope([{ type: 'sigstoreSigned', keyPath: k.pub }, { type: 'reject' }]));
    await refused(both, 'team/app:v1', /\[1\] \(reject\)/);
  });

  it('remapIdentity: a mirror accepted by the signature made for the original repository; the default policy file is $HOME/.config/containers/policy.json', async (t) => {
    const dir = tempDir(t, 'sign-remap');
    const a = await spawnRegistry(t, join(dir, 'a'));
    const b = await spawnRegistry(t, join(dir, 'b'));
    await pushBase(a.addr, 'team/app', 'v1');
    const k = keyPair(dir, 'k');
    ok(['sign', '--tls-verify=false', '--key', k.key, '--password-file', k.pw, `docker://${a.addr}/team/app:v1`]);
    ok(['copy', ...TLS, '--quiet', '--insecure-policy', `docker://${a.addr}/team/app:v1`, `docker://${b.addr}/mirror/app:v1`]);
    const remap = policyFile(dir, 'remap', {
      default: [{ type: 'reject' }],
      transports: {
        docker: {
          [`${b.addr}/mirror`]: [
            { type: 'sigstoreSigned', keyPath: k.pub, signedIdentity: { type: 'remapIdentity', prefix: `${b.addr}/mirror`, signedPrefix: `${a.addr}/team` } },
          ],
        },
      },
    });
    ok(['copy', ...TLS, '--quiet', '--policy', remap, `docker://${b.addr}/mirror/app:v1`, `oci:${join(dir, 'out')}:v1`]);
    const plain = policyFile(dir, 'plain', { default: [{ type: 'sigstoreSigned', keyPath: k.pub }] });
    const r = tscopy(['copy', ...TLS, '--quiet', '--policy', plain, `docker://${b.addr}/mirror/app:v1`, `oci:${join(dir, 'out2')}:v1`]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /matchRepoDigestOrExact/);
    assert.ok(!existsSync(join(dir, 'out2')) || readdirSync(join(dir, 'out2', 'blobs', 'sha256')).length === 0, 'nothing written to the layout');
    // no --policy: $HOME/.config/containers/policy.json is read first
    const home = join(dir, 'home');
    mkdirSync(join(home, '.config', 'containers'), { recursive: true });
    writeFileSync(join(home, '.config', 'containers', 'policy.json'), JSON.stringify({ default: [{ type: 'reject' }] }));
    const h = tscopy(['copy', ...TLS, '--quiet', `docker://${a.addr}/team/app:v1`, `oci:${join(dir, 'out3')}:v1`], { HOME: home });
    assert.equal(h.status, 1);
    assert.ok(h.stderr.includes(join(home, '.config', 'containers', 'policy.json')), h.stderr);
  });
});

describe('copy carries signatures and referrers', () => {
  it('registry -> registry without referrers API (tag fallback), -> OCI layout, --remove-signatures, --sign-by-key', async (t) => {
    const dir = tempDir(t, 'sign-carry');
    const src = await spawnRegistry(t, join(dir, 'src'));
    const dst = await startDistribution(t);
    const digest = (await pushBase(src.addr, 'app', 'v1')) as Digest;
    const k = keyPair(dir, 'k');
    const image = `docker://${src.addr}/app:v1`;
    ok(['sign', '--tls-verify=false', '--key', k.key, '--password-file', k.pw, '--referrer', image]);
    writeFileSync(join(dir, 'sbom.json'), '{"sbom":true}');
    const sbom = ok(['attach', '--tls-verify=false', '--artifact-type', 'application/spdx+json', join(dir, 'sbom.json'), image]).stdout.trim();
    const srcSig = await getJson(`${src.url}/v2/app/manifests/${signatureTag(digest)}`);

    ok(['copy', ...TLS, '--quiet', '--insecure-policy', image, `docker://${dst.addr}/mirror/app:v1`]);
    // the .sig manifest verbatim, the referrers in the fallback index (distribution has no referrers API)
    assert.deepEqual(await getJson(`${dst.url}/v2/mirror/app/manifests/${signatureTag(digest)}`), srcSig);
    const fb = await getJson(`${dst.url}/v2/mirror/app/manifests/${referrersFallbackTag(digest)}`);
    assert.equal(fb.manifests.length, 2);
    assert.ok(fb.manifests.some((m: { digest: string }) => m.digest === sbom));
    const v = JSON.parse(ok(['verify', '--tls-verify=false', '--key', k.pub, '--identity', `${src.addr}/app:v1`, '--format', 'json', `docker://${dst.addr}/mirror/app:v1`]).stdout);
    assert.equal(v.verified, true);
    assert.equal(v.signatures.length, 2);
    // policy at the destination accepts the carried signature
    const pol = policyFile(dir, 'pol', { default: [{ type: 'sigstoreSigned', keyPath: k.pub, signedIdentity: { type: 'matchRepository' } }] });
    // (matchRepository: signature names src/app; the mirror is another repository -> refused, as it should be)
    const r = tscopy(['copy', ...TLS, '--quiet', '--policy', pol, `docker://${dst.addr}/mirror/app:v1`, `oci:${join(dir, 'x')}:v1`]);
    assert.equal(r.status, 1);

    // -> OCI layout: .sig tag and referrers in index.json; verify there
    ok(['copy', ...TLS, '--quiet', '--insecure-policy', image, `oci:${join(dir, 'layout')}:v1`]);
    const idx = JSON.parse(readFileSync(join(dir, 'layout', 'index.json'), 'utf8'));
    assert.ok(idx.manifests.some((m: { annotations?: Record<string, string> }) => m.annotations?.['org.opencontainers.image.ref.name'] === signatureTag(digest)));
    assert.ok(idx.manifests.some((m: { digest: string }) => m.digest === sbom));
    ok(['verify', '--key', k.pub, `oci:${join(dir, 'layout')}:v1`]);
    assert.match(ok(['referrers', `oci:${join(dir, 'layout')}:v1`]).stdout, /application\/spdx\+json/);

    // --remove-signatures: nothing carried
    ok(['copy', ...TLS, '--quiet', '--insecure-policy', '--remove-signatures', image, `docker://${dst.addr}/bare/app:v1`]);
    assert.equal(await status(`${dst.url}/v2/bare/app/manifests/${signatureTag(digest)}`), 404);
    assert.equal(await status(`${dst.url}/v2/bare/app/manifests/${referrersFallbackTag(digest)}`), 404);

    // an archive cannot hold signatures: a notice, not a failure
    const arch = tscopy(['copy', ...TLS, '--insecure-policy', image, `oci-archive:${join(dir, 'a.tar')}:v1`]);
    assert.equal(arch.status, 0, arch.stderr);
    assert.match(arch.stderr + arch.stdout, /not copied: .* cannot store them/);
    // ...no notice when there is nothing to lose; --sign-by-key to an archive is refused before anything is written
    const plain = tscopy(['copy', ...TLS, '--insecure-policy', `oci-archive:${join(dir, 'a.tar')}:v1`, `docker-archive:${join(dir, 'b.tar')}:app:v1`]);
    assert.equal(plain.status, 0, plain.stderr);
    assert.doesNotMatch(plain.stderr + plain.stdout, /not copied/);
    const sa = tscopy(['copy', ...TLS, '--insecure-policy', '--sign-by-key', k.key, '--sign-passphrase-file', k.pw, image, `oci-archive:${join(dir, 'c.tar')}:v1`]);
    assert.equal(sa.status, 2, sa.stderr);
    assert.match(sa.stderr, /cannot store signatures/);
    assert.ok(!existsSync(join(dir, 'c.tar')));

    // --sign-by-key signs the destination (identity = the destination reference)
    const k2 = keyPair(dir, 'k2');
    ok(['copy', ...TLS, '--quiet', '--insecure-policy', '--remove-signatures', '--sign-by-key', k2.key, '--sign-passphrase-file', k2.pw, image, `docker://${dst.addr}/signed/app:v2`]);
    const sv = JSON.parse(ok(['verify', '--tls-verify=false', '--key', k2.pub, '--format', 'json', `docker://${dst.addr}/signed/app:v2`]).stdout);
    assert.equal(sv.verified, true);
    assert.equal(sv.signatures.length, 1);
    assert.equal(sv.signatures[0].dockerReference, `${dst.addr}/signed/app:v2`);
  });
});

describe('sync carries signatures and enforces the policy', () => {
  it('signed repository synced with its .sig and referrers; an unsigned one refused by policy with nothing written', async (t) => {
    const dir = tempDir(t, 'sign-sync');
    const src = await spawnRegistry(t, join(dir, 'src'));
    const dst = await startDistribution(t);
    const digest = (await pushBase(src.addr, 'signed/app', 'v1')) as Digest;
    await pushBase(src.addr, 'unsigned/app', 'v1');
    const k = keyPair(dir, 'k');
    ok(['sign', '--tls-verify=false', '--key', k.key, '--password-file', k.pw, '--referrer', `docker://${src.addr}/signed/app:v1`]);
    const pol = policyFile(dir, 'pol', { default: [{ type: 'sigstoreSigned', keyPath: k.pub, signedIdentity: { type: 'matchRepository' } }] });
    const r = tscopy(['sync', ...TLS, '--quiet', '--src', 'docker', '--dest', 'docker', '--policy', pol, `${src.addr}/signed/app`, `${dst.addr}/mirror`]);
    assert.equal(r.status, 0, r.stderr + r.stdout);
    assert.equal(await status(`${dst.url}/v2/mirror/app/manifests/v1`), 200);
    assert.equal(await status(`${dst.url}/v2/mirror/app/manifests/${signatureTag(digest)}`), 200);
    const fb = await getJson(`${dst.url}/v2/mirror/app/manifests/${referrersFallbackTag(digest)}`);
    assert.equal(fb.manifests.length, 1);
    ok(['verify', '--tls-verify=false', '--key', k.pub, '--identity', `${src.addr}/signed/app`, `docker://${dst.addr}/mirror/app:v1`]);
    const u = tscopy(['sync', ...TLS, '--quiet', '--src', 'docker', '--dest', 'docker', '--policy', pol, `${src.addr}/unsigned/app`, `${dst.addr}/mirror2`]);
    assert.equal(u.status, 1);
    assert.match(u.stderr, /rejected by policy .*default\[0\] \(sigstoreSigned\): A signature was required, but no signature exists/);
    // nothing written for the refused image: no repository, no tag, no blob
    assert.equal((await fetch(`${dst.url}/v2/mirror2/app/tags/list`)).status, 404);
    assert.equal(await status(`${dst.url}/v2/mirror2/app/manifests/v1`), 404);
    const m = await getJson(`${dst.url}/v2/mirror/app/manifests/v1`);
    for (const b of [m.config.digest, ...m.layers.map((l: { digest: string }) => l.digest)]) assert.equal(await status(`${dst.url}/v2/mirror2/app/blobs/${b}`), 404);
    // the attachment tags were carried, not synced as images of their own (and the policy did not judge them)
    const tags = (await fetch(`${dst.url}/v2/mirror/app/tags/list`).then((x) => x.json())) as { tags: string[] };
    assert.deepEqual(tags.tags.sort(), [referrersFallbackTag(digest), signatureTag(digest), 'v1'].sort());
    // a signature added at the source after the image was mirrored travels with the next sync (image up to date)
    const k2 = keyPair(dir, 'k2');
    ok(['sign', '--tls-verify=false', '--key', k2.key, '--password-file', k2.pw, `docker://${src.addr}/signed/app:v1`]);
    const again = ok(['sync', ...TLS, '--src', 'docker', '--dest', 'docker', '--policy', pol, `${src.addr}/signed/app`, `${dst.addr}/mirror`]);
    assert.match(again.stdout, /up to date/);
    assert.match(again.stderr, /Merged signatures into sha256-[0-9a-f]{64}\.sig/);
    assert.equal((await getJson(`${dst.url}/v2/mirror/app/manifests/${signatureTag(digest)}`)).layers.length, 2);
    ok(['verify', '--tls-verify=false', '--key', k2.pub, '--identity', `${src.addr}/signed/app`, `docker://${dst.addr}/mirror/app:v1`]);
    // --prune leaves attachment tags alone
    ok(['sync', ...TLS, '--quiet', '--src', 'docker', '--dest', 'docker', '--policy', pol, '--prune', `${src.addr}/signed/app`, `${dst.addr}/mirror`]);
    assert.equal(await status(`${dst.url}/v2/mirror/app/manifests/${signatureTag(digest)}`), 200);
    assert.equal(await status(`${dst.url}/v2/mirror/app/manifests/${referrersFallbackTag(digest)}`), 200);
  });
});
