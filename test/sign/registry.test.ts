/**
 * Signing, verification, attachments and referrers against real registries: tsregistry (a process,
 * with the OCI 1.1 referrers API) and distribution 2.8 (no referrers API: the `sha256-<hex>` tag
 * fallback); skopeo as the independent carrier of cosign `.sig` attachments.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Digest } from '../../src/oci/index.js';
import { signatureTag, referrersFallbackTag, COSIGN_SIG_ARTIFACT_TYPE } from '../../src/copy/sign/index.js';
import { pushBase } from '../fixtures/base.js';
import { requireTool, sh, tempDir } from '../helpers.js';
import { keyPair, ok, tscopy } from './util.js';
import { spawnRegistry, startDistribution } from '../registry/util.js';

async function get(url: string, accept = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json'): Promise<{ status: number; json: any; text: string }> {
  const r = await fetch(url, { headers: { accept } });
  const text = await r.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.status, json, text };
}

const T = ['--tls-verify=false'];

describe('sign / verify / attach / referrers on registries', () => {
  it('tsregistry (referrers API): .sig tag + referrer signature, attach, referrers; verify passes, tampering fails', async (t) => {
    const dir = tempDir(t, 'sign-reg');
    const reg = await spawnRegistry(t, join(dir, 'root'));
    const digest = (await pushBase(reg.addr, 'app', 'v1')) as Digest;
    const k = keyPair(dir, 'k');
    const image = `docker://${reg.addr}/app:v1`;
    ok(['sign', ...T, '--key', k.key, '--password-file', k.pw, '--referrer', image]);
    // cosign's tag, served by the registry
    const sig = await get(`${reg.url}/v2/app/manifests/${signatureTag(digest)}`);
    assert.equal(sig.status, 200);
    assert.equal(sig.json.layers[0].mediaType, 'application/vnd.dev.cosign.simplesigning.v1+json');
    const payload = Buffer.from(await (await fetch(`${reg.url}/v2/app/blobs/${sig.json.layers[0].digest}`)).arrayBuffer()).toString();
    assert.match(payload, new RegExp(`"docker-reference":"${reg.addr}/app:v1"`));
    assert.match(payload, new RegExp(`"docker-manifest-digest":"${digest}"`));
    // the referrer is indexed by the registry's referrers API (no fallback tag needed)
    const refs = await get(`${reg.url}/v2/app/referrers/${digest}`);
    assert.equal(refs.status, 200);
    assert.equal(refs.json.manifests.length, 1);
    assert.equal(refs.json.manifests[0].artifactType, COSIGN_SIG_ARTIFACT_TYPE);
    assert.equal((await get(`${reg.url}/v2/app/manifests/${referrersFallbackTag(digest)}`)).status, 404);
    const v = JSON.parse(ok(['verify', ...T, '--key', k.pub, '--format', 'json', image]).stdout);
    assert.equal(v.verified, true);
    assert.equal(v.signatures.length, 2);
    assert.ok(v.signatures.every((s: { valid: boolean }) => s.valid));
    // by digest as well
    ok(['verify', ...T, '--key', k.pub, `docker://${reg.addr}/app@${digest}`]);
    // another tag of the same image: the signed identity names v1
    const other = tscopy(['verify', ...T, '--key', k.pub, `docker://${reg.addr}/app:v1`, '--identity', `${reg.addr}/app:v2`]);
    assert.equal(other.status, 1);
    assert.match(other.stdout, /is for tag v1, not v2/);
    // wrong key
    const w = keyPair(dir, 'w');
    const wr = tscopy(['verify', ...T, '--key', w.pub, image]);
    assert.equal(wr.status, 1);
    assert.match(wr.stdout, /FAIL .*cryptographic signature verification failed/);
    assert.match(wr.stderr, /no valid signature/);

    // attach an SBOM; referrers lists both
    writeFileSync(join(dir, 'sbom.spdx.json'), '{"spdxVersion":"SPDX-2.3","name":"app"}');
    const a = ok(['attach', ...T, '--artifact-type', 'application/spdx+json', '--annotation', 'org.opencontainers.image.created=2026-01-01T00:00:00Z', join(dir, 'sbom.spdx.json'), image]).stdout.trim();
    const list = ok(['referrers', ...T, image]).stdout;
    assert.match(list, new RegExp(`${a} +application/spdx\\+json`));
    assert.match(list, /application\/vnd\.dev\.cosign\.artifact\.sig\.v1\+json/);
    const only = JSON.parse(ok(['referrers', ...T, '--format', 'json', '--artifact-type', 'application/spdx+json', image]).stdout);
    assert.deepEqual(
      only.manifests.map((m: { digest: string }) => m.digest),
      [a],
    );
  });

  it('distribution 2.8 (no referrers API): attach and --referrer signatures go to the sha256-<hex> tag fallback and are found there', async (t) => {
    const dir = tempDir(t, 'sign-dist');
    const reg = await startDistribution(t);
    const digest = (await pushBase(reg.addr, 'app', 'v1')) as Digest;
    assert.equal((await get(`${reg.url}/v2/app/referrers/${digest}`)).status, 404, 'distribution 2.8 has no referrers API');
    const k = keyPair(dir, 'k');
    const image = `docker://${reg.addr}/app:v1`;
    writeFileSync(join(dir, 'att.json'), '{"_type":"https://in-toto.io/Statement/v1"}');
    const a = ok(['attach', ...T, '--artifact-type', 'application/vnd.in-toto+json', join(dir, 'att.json'), image]);
    assert.match(a.stderr, /referrers tag fallback/);
    ok(['sign', ...T, '--key', k.key, '--password-file', k.pw, '--referrer', '--no-tag-storage', image]);
    const fb = await get(`${reg.url}/v2/app/manifests/${referrersFallbackTag(digest)}`, 'application/vnd.oci.image.index.v1+json');
    assert.equal(fb.status, 200);
    assert.equal(fb.json.mediaType, 'application/vnd.oci.image.index.v1+json');
    assert.deepEqual(fb.json.manifests.map((m: { artifactType: string }) => m.artifactType).sort(), [COSIGN_SIG_ARTIFACT_TYPE, 'application/vnd.in-toto+json'].sort());
    assert.equal((await get(`${reg.url}/v2/app/manifests/${signatureTag(digest)}`)).status, 404);
    const refs = JSON.parse(ok(['referrers', ...T, '--format', 'json', image]).stdout);
    assert.equal(refs.manifests.length, 2);
    const v = ok(['verify', ...T, '--key', k.pub, image]).stdout;
    assert.match(v, /OK +referrer sha256:[0-9a-f]{64}, layer 1/);
  });

  it('skopeo copies our signed image and its .sig tag between two registries; our verify passes at the destination', async (t) => {
    requireTool('skopeo');
    const dir = tempDir(t, 'sign-skopeo');
    const a = await spawnRegistry(t, join(dir, 'root'));
    const b = await startDistribution(t);
    const digest = (await pushBase(a.addr, 'team/app', 'v1')) as Digest;
    const k = keyPair(dir, 'k');
    ok(['sign', ...T, '--key', k.key, '--password-file', k.pw, `docker://${a.addr}/team/app:v1`]);
    mkdirSync(join(dir, 'regd'));
    writeFileSync(join(dir, 'regd', 'sign.yaml'), `docker:\n  ${a.addr}:\n    use-sigstore-attachments: true\n  ${b.addr}:\n    use-sigstore-attachments: true\n`);
    sh('skopeo', ['--registries.d', join(dir, 'regd'), 'copy', '--quiet', '--src-tls-verify=false', '--dest-tls-verify=false', '--preserve-digests', `docker://${a.addr}/team/app:v1`, `docker://${b.addr}/mirror/app:v1`]);
    const sig = await get(`${b.url}/v2/mirror/app/manifests/${signatureTag(digest)}`);
    assert.equal(sig.status, 200, 'skopeo carried the .sig tag');
    // the signed identity is the original repository: verify at the mirror with --identity
    const v = JSON.parse(ok(['verify', ...T, '--key', k.pub, '--identity', `${a.addr}/team/app:v1`, '--format', 'json', `docker://${b.addr}/mirror/app:v1`]).stdout);
    assert.equal(v.verified, true);
    assert.equal(v.manifestDigest, digest);
    // without it, the identity check names the repositories
    const n = tscopy(['verify', ...T, '--key', k.pub, `docker://${b.addr}/mirror/app:v1`]);
    assert.equal(n.status, 1);
    assert.match(n.stdout, new RegExp(`is for repository ${a.addr}/team/app, not ${b.addr}/mirror/app`));
    // skopeo's own signature bytes: openssl checks what arrived
    const layer = sig.json.layers[0];
    const payload = Buffer.from(await (await fetch(`${b.url}/v2/mirror/app/blobs/${layer.digest}`)).arrayBuffer());
    writeFileSync(join(dir, 'payload'), payload);
    writeFileSync(join(dir, 'sig'), Buffer.from(layer.annotations['dev.cosignproject.cosign/signature'], 'base64'));
    assert.match(sh('openssl', ['dgst', '-sha256', '-verify', k.pub, '-signature', join(dir, 'sig'), join(dir, 'payload')]), /Verified OK/);
    assert.ok(readFileSync(k.pub, 'utf8').includes('PUBLIC KEY'));
  });
});
