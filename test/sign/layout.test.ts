/**
 * tscopy sign / verify / attach / referrers on OCI layouts (the CLI end to end), cosign's storage
 * layout checked field by field, signatures checked by openssl, tampering refused with clear reasons,
 * and carrying signatures + referrers between layouts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { digestOf, OciLayout, type Descriptor, type Digest } from '../../src/oci/index.js';
import {
  carryAttachments,
  layoutRepo,
  loadPrivateKey,
  makePayload,
  signatureTag,
  signPayload,
  referrersFallbackTag,
  COSIGN_SIG_ARTIFACT_TYPE,
} from '../../src/copy/sign/index.js';
import { baseLayoutCopy } from '../fixtures/base.js';
import { requireTool, sh, tempDir } from '../helpers.js';
import { keyPair, ok, tscopy } from './util.js';

async function manifestJson(layout: OciLayout, ref: string): Promise<{ digest: Digest; doc: any; bytes: Buffer }> {
  const d = await layout.resolve(ref);
  const bytes = await layout.readBytes(d.digest);
  return { digest: d.digest, doc: JSON.parse(bytes.toString()), bytes };
}

async function setup(t: any): Promise<{ dir: string; layout: OciLayout; image: string; digest: Digest; keys: ReturnType<typeof keyPair> }> {
  const dir = tempDir(t, 'sign-layout');
  const layout = await baseLayoutCopy(join(dir, 'img'));
  const keys = keyPair(dir, 'k');
  const digest = (await layout.resolve('latest')).digest;
  return { dir, layout, image: `oci:${join(dir, 'img')}:latest`, digest, keys };
}

describe('tscopy sign on an OCI layout', () => {
  it('writes cosign\'s .sig manifest (simplesigning layer, signature annotation, go-containerregistry config); openssl verifies the stored signature', async (t) => {
    requireTool('openssl');
    const { dir, layout, image, digest, keys } = await setup(t);
    ok(['sign', '--key', keys.key, '--password-file', keys.pw, '--identity', 'registry.example/app:1', image]);
    const sig = await manifestJson(layout, signatureTag(digest));
    assert.equal(signatureTag(digest), `sha256-${digest.slice(7)}.sig`);
    assert.equal(sig.doc.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    assert.equal(sig.doc.config.mediaType, 'application/vnd.oci.image.config.v1+json');
    assert.equal(sig.doc.layers.length, 1);
    const layer = sig.doc.layers[0] as Descriptor;
    assert.equal(layer.mediaType, 'application/vnd.dev.cosign.simplesigning.v1+json');
    const config = JSON.parse((await layout.readBytes(sig.doc.config.digest)).toString());
    assert.deepEqual(config.rootfs, { type: 'layers', diff_ids: [layer.digest] });
    const payload = await layout.readBytes(layer.digest);
    assert.equal(
      payload.toString(),
      `{"critical":{"identity":{"docker-reference":"registry.example/app:1"},"image":{"docker-manifest-digest":"${digest}"},"type":"cosign container image signature"},"optional":null}`,
    );
    // openssl, an independent implementation, checks the stored signature over the stored bytes
    writeFileSync(join(dir, 'payload'), payload);
    writeFileSync(join(dir, 'sig'), Buffer.from(layer.annotations!['dev.cosignproject.cosign/signature']!, 'base64'));
    assert.match(sh('openssl', ['dgst', '-sha256', '-verify', keys.pub, '-signature', join(dir, 'sig'), join(dir, 'payload')]), /Verified OK/);
    // verify passes, text and json
    const v = ok(['verify', '--key', keys.pub, image]);
    assert.match(v.stdout, /OK +tag sha256-[0-9a-f]{64}\.sig, layer 1: signed by key 1, identity registry\.example\/app:1/);
    const j = JSON.parse(ok(['verify', '--key', keys.pub, '--format', 'json', image]).stdout);
    assert.equal(j.verified, true);
    assert.equal(j.manifestDigest, digest);
    assert.equal(j.signatures[0].dockerManifestDigest, digest);
  });

  it('a second signature appends a layer; signing the same again adds nothing; --referrer also stores a referrer', async (t) => {
    const { dir, layout, image, digest, keys } = await setup(t);
    const k2 = keyPair(dir, 'k2');
    ok(['sign', '--key', keys.key, '--password-file', keys.pw, '--identity', 'registry.example/app', image]);
    const first = await manifestJson(layout, signatureTag(digest));
    ok(['sign', '--key', k2.key, '--password-file', k2.pw, '--identity', 'registry.example/app', '--referrer', '-a', 'build=42', image]);
    const second = await manifestJson(layout, signatureTag(digest));
    assert.equal(second.doc.layers.length, 2);
    assert.deepEqual(second.doc.layers[0], first.doc.layers[0], 'the first signature layer is kept verbatim');
    const payload2 = (await layout.readBytes(second.doc.layers[1].digest)).toString();
    assert.match(payload2, /"optional":\{"build":"42"\}/);
    // ECDSA signatures are randomised: signing again gives a new layer only when the bytes differ;
    // a signature with an identical payload *and* signature is not added twice
    const refs = await layoutRepo(layout).referrers(digest);
    assert.equal(refs.length, 1);
    assert.equal(refs[0]!.artifactType, COSIGN_SIG_ARTIFACT_TYPE);
    const ref = JSON.parse((await layout.readBytes(refs[0]!.digest)).toString());
    assert.equal(ref.subject.digest, digest);
    assert.equal(ref.config.mediaType, 'application/vnd.oci.empty.v1+json');
    // verify with both keys: 3 signatures (2 in the tag, 1 referrer), all valid
    const j = JSON.parse(ok(['verify', '--key', keys.pub, '--key', k2.pub, '--format', 'json', image]).stdout);
    assert.equal(j.signatures.length, 3);
    assert.ok(j.signatures.every((s: { valid: boolean }) => s.valid), JSON.stringify(j.signatures));
    assert.ok(j.signatures.some((s: { where: string }) => s.where.startsWith('referrer ')));
    // only key 1: one valid, two fail naming the reason, exit 0 (one valid is enough)
    const j1 = JSON.parse(ok(['verify', '--key', keys.pub, '--format', 'json', image]).stdout);
    assert.equal(j1.signatures.filter((s: { valid: boolean }) => s.valid).length, 1);
    assert.ok(j1.signatures.filter((s: { valid: boolean }) => !s.valid).every((s: { reason: string }) => /signature verification failed/.test(s.reason)));
  });

  it('--no-tag-storage --referrer stores only the referrer, which verify finds', async (t) => {
    const { dir, layout, image, digest, keys } = await setup(t);
    ok(['sign', '--key', keys.key, '--password-file', keys.pw, '--identity', 'r.example/a', '--referrer', '--no-tag-storage', image]);
    assert.equal(await layout.find(signatureTag(digest)), undefined);
    assert.match(ok(['verify', '--key', keys.pub, image]).stdout, /OK +referrer sha256:/);
    // the layout named without a tag is still its one image (signatures and referrers do not count)
    ok(['sign', '--key', keys.key, '--password-file', keys.pw, '--identity', 'r.example/a', `oci:${join(dir, 'img')}`]);
    const j = JSON.parse(ok(['verify', '--key', keys.pub, '--format', 'json', `oci:${join(dir, 'img')}`]).stdout);
    assert.equal(j.manifestDigest, digest);
    assert.equal(j.signatures.length, 2);
  });

  it('needs an identity for a layout image, a password for an encrypted key; an unsigned image fails verify with exit 1', async (t) => {
    const { image, keys } = await setup(t);
    const r = tscopy(['sign', '--key', keys.key, '--password-file', keys.pw, image]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /no registry identity: give the reference to sign for with --identity/);
    const w = tscopy(['sign', '--key', keys.key, '--identity', 'r.example/a', image], { COSIGN_PASSWORD: 'wrong' });
    assert.equal(w.status, 1);
    assert.match(w.stderr, /wrong password/);
    const v = tscopy(['verify', '--key', keys.pub, image]);
    assert.equal(v.status, 1);
    assert.match(v.stdout, /no signatures found/);
    assert.match(v.stdout, /FAILED/);
  });
});

describe('tampering fails verify with a clear reason', () => {
  it('a changed payload, a signature for another digest, a wrong key, a replaced layer', async (t) => {
    const { dir, layout, image, digest, keys } = await setup(t);
    ok(['sign', '--key', keys.key, '--password-file', keys.pw, '--identity', 'registry.example/app', image]);
    const good = await manifestJson(layout, signatureTag(digest));
    const goodLayer = good.doc.layers[0] as Descriptor;
    const putSig = async (layers: Descriptor[]): Promise<void> => {
      const bytes = Buffer.from(JSON.stringify({ ...good.doc, layers }));
      const d = await layout.putBytes('application/vnd.oci.image.manifest.v1+json', bytes);
      await layout.tag(signatureTag(digest), d);
    };
    const verifyFails = (re: RegExp, img = image): void => {
      const r = tscopy(['verify', '--key', keys.pub, '--format', 'json', img]);
      assert.equal(r.status, 1, r.stdout + r.stderr);
      const j = JSON.parse(r.stdout);
      assert.equal(j.verified, false);
      assert.ok(j.signatures.length >= 1);
      assert.ok(j.signatures.every((s: { reason: string }) => re.test(s.reason)), `${re}: ${JSON.stringify(j.signatures)}`);
    };

    // 1. a changed payload (other identity), same signature annotation
    const payload = await layout.readBytes(goodLayer.digest);
    const changed = Buffer.from(payload.toString().replace('registry.example/app', 'registry.example/evil'));
    const cd = await layout.putBytes(goodLayer.mediaType, changed);
    await putSig([{ ...goodLayer, digest: cd.digest, size: cd.size }]);
    verifyFails(/signature does not match the payload and key/);

    // 2. a valid signature, but for another manifest digest
    const key = loadPrivateKey(readFileSync(keys.key, 'utf8'), 'pw');
    const other = makePayload('registry.example/app', digestOf('another manifest'));
    const od = await layout.putBytes(goodLayer.mediaType, other);
    await putSig([{ ...goodLayer, digest: od.digest, size: od.size, annotations: { 'dev.cosignproject.cosign/signature': signPayload(key, other) } }]);
    verifyFails(/signature is for manifest sha256:[0-9a-f]{64}, not for this image's sha256:/);

    // 3. the wrong key
    await putSig([goodLayer]);
    const wrong = keyPair(dir, 'wrong');
    const r3 = tscopy(['verify', '--key', wrong.pub, image]);
    assert.equal(r3.status, 1);
    assert.match(r3.stdout, /FAIL +tag .*: cryptographic signature verification failed/);
    ok(['verify', '--key', keys.pub, image]);

    // 4. a replaced layer: the image's manifest changes, so its digest does; the old signature does not apply
    const img = await manifestJson(layout, 'latest');
    const evil = await layout.putBytes('application/vnd.oci.image.layer.v1.tar', Buffer.from('not busybox'));
    const doc = { ...img.doc, layers: [evil] };
    const nd = await layout.putBytes(img.doc.mediaType, Buffer.from(JSON.stringify(doc)));
    await layout.tag('latest', nd);
    const r4 = tscopy(['verify', '--key', keys.pub, image]);
    assert.equal(r4.status, 1);
    assert.match(r4.stdout, /no signatures found/);
    // ...and moving the old .sig manifest to the new digest's tag names the digest mismatch
    await layout.tag(signatureTag(nd.digest), (await layout.resolve(signatureTag(digest))));
    const r5 = tscopy(['verify', '--key', keys.pub, image]);
    assert.equal(r5.status, 1);
    assert.match(r5.stdout, new RegExp(`signature is for manifest ${digest}, not for this image's ${nd.digest}`));

    // 5. a payload blob whose bytes do not match the layer digest
    await layout.tag('latest', img.doc.mediaType ? { mediaType: img.doc.mediaType, digest, size: img.bytes.length } : (await layout.resolve(digest)));
    await putSig([{ ...goodLayer, digest: digestOf('x'), size: 1 }]);
    const r6 = tscopy(['verify', '--key', keys.pub, image]);
    assert.equal(r6.status, 1);
    assert.match(r6.stdout, /payload blob unreadable/);
  });
});

describe('tscopy attach / referrers on an OCI layout', () => {
  it('attaches an artifact with subject and lists it (text, json, --artifact-type filter)', async (t) => {
    const { dir, layout, image, digest } = await setup(t);
    writeFileSync(join(dir, 'sbom.json'), '{"spdxVersion":"SPDX-2.3"}');
    writeFileSync(join(dir, 'att.json'), '{"predicate":{}}');
    const a = ok(['attach', '--artifact-type', 'application/spdx+json', '--annotation', 'org.example/kind=sbom', join(dir, 'sbom.json'), image]).stdout.trim();
    ok(['attach', '--artifact-type', 'application/vnd.in-toto+json', join(dir, 'att.json'), image]);
    const m = JSON.parse((await layout.readBytes(a as Digest)).toString());
    assert.equal(m.artifactType, 'application/spdx+json');
    assert.equal(m.subject.digest, digest);
    assert.equal(m.annotations['org.example/kind'], 'sbom');
    assert.equal(m.layers[0].digest, digestOf('{"spdxVersion":"SPDX-2.3"}'));
    assert.equal(m.layers[0].annotations['org.opencontainers.image.title'], 'sbom.json');
    assert.equal((await layout.readBytes(m.layers[0].digest)).toString(), '{"spdxVersion":"SPDX-2.3"}');
    const text = ok(['referrers', image]).stdout;
    assert.match(text, /^DIGEST +ARTIFACT TYPE +SIZE\n/);
    assert.match(text, new RegExp(`${a} +application/spdx\\+json`));
    assert.match(text, /application\/vnd\.in-toto\+json/);
    const j = JSON.parse(ok(['referrers', '--format', 'json', '--artifact-type', 'application/spdx+json', image]).stdout);
    assert.equal(j.manifests.length, 1);
    assert.equal(j.manifests[0].digest, a);
    assert.equal(j.manifests[0].annotations['org.example/kind'], 'sbom');
  });
});

describe('carrying signatures and referrers', () => {
  it('copies the .sig manifest, referrers and their signatures verbatim; merges into an existing .sig', async (t) => {
    const { dir, layout, image, digest, keys } = await setup(t);
    ok(['sign', '--key', keys.key, '--password-file', keys.pw, '--identity', 'r.example/a', '--referrer', image]);
    writeFileSync(join(dir, 'sbom.json'), '{"sbom":1}');
    const sbom = ok(['attach', '--artifact-type', 'application/spdx+json', join(dir, 'sbom.json'), image]).stdout.trim() as Digest;
    // the SBOM is signed too (its own .sig tag)
    ok(['sign', '--key', keys.key, '--password-file', keys.pw, '--identity', 'r.example/a', `oci:${join(dir, 'img')}@${sbom}`]);

    const dst = await OciLayout.open(join(dir, 'dst'), { create: true });
    // the image itself (as the engine would copy it)
    const top = await manifestJson(layout, 'latest');
    for (const b of [top.doc.config, ...top.doc.layers]) await dst.ingest(b, await layout.open(b.digest));
    await dst.tag('latest', await dst.putBytes(top.doc.mediaType, top.bytes));
    // a signature already at the destination (another signer): merged, not replaced
    const k2 = keyPair(dir, 'k2');
    ok(['sign', '--key', k2.key, '--password-file', k2.pw, '--identity', 'r.example/a', `oci:${join(dir, 'dst')}:latest`]);

    const log: string[] = [];
    const res = await carryAttachments(layoutRepo(layout), layoutRepo(dst), digest, { log: (m) => log.push(m) });
    assert.equal(res.sigTag, true);
    assert.equal(res.referrers.length, 2);
    const srcSig = await manifestJson(layout, signatureTag(digest));
    const dstSig = await manifestJson(dst, signatureTag(digest));
    assert.equal(dstSig.doc.layers.length, 2);
    assert.deepEqual(dstSig.doc.layers[1], srcSig.doc.layers[0]);
    for (const r of res.referrers) assert.deepEqual(await dst.readBytes(r), await layout.readBytes(r), 'referrer bytes verbatim');
    assert.deepEqual(await dst.readBytes((await dst.resolve(signatureTag(sbom))).digest), await layout.readBytes((await layout.resolve(signatureTag(sbom))).digest));
    const j = JSON.parse(ok(['verify', '--key', keys.pub, '--key', k2.pub, '--format', 'json', `oci:${join(dir, 'dst')}:latest`]).stdout);
    assert.equal(j.signatures.length, 3);
    assert.ok(j.signatures.every((s: { valid: boolean }) => s.valid));
    ok(['verify', '--key', keys.pub, `oci:${join(dir, 'dst')}@${sbom}`]);
    // a second carry changes nothing
    const before = readFileSync(join(dir, 'dst', 'index.json'), 'utf8');
    await carryAttachments(layoutRepo(layout), layoutRepo(dst), digest);
    assert.equal(readFileSync(join(dir, 'dst', 'index.json'), 'utf8'), before);
    assert.equal(referrersFallbackTag(digest), `sha256-${digest.slice(7)}`);
  });
});

describe('policy on copy from an OCI layout', () => {
  it('a referrer-only signature in the layout satisfies sigstoreSigned (exactReference); an unsigned layout is refused and the destination stays empty', async (t) => {
    const { dir, image, keys } = await setup(t);
    const pol = join(dir, 'policy.json');
    writeFileSync(
      pol,
      JSON.stringify({
        default: [{ type: 'reject' }],
        transports: { oci: { '': [{ type: 'sigstoreSigned', keyPath: keys.pub, signedIdentity: { type: 'exactReference', dockerReference: 'r.example/app:1' } }] } },
      }),
    );
    const refused = tscopy(['copy', '--quiet', '--policy', pol, image, `oci:${join(dir, 'out')}:v1`]);
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /transports\.oci\[""\]\[0\] \(sigstoreSigned\): A signature was required, but no signature exists/);
    const blobsOut = join(dir, 'out', 'blobs', 'sha256');
    assert.ok(!existsSync(blobsOut) || readdirSync(blobsOut).length === 0, 'nothing written');
    ok(['sign', '--key', keys.key, '--password-file', keys.pw, '--identity', 'r.example/app:1', '--referrer', '--no-tag-storage', image]);
    ok(['copy', '--quiet', '--policy', pol, image, `oci:${join(dir, 'out')}:v1`]);
    // the signature travelled with it (as a referrer in the destination layout)
    ok(['verify', '--key', keys.pub, '--identity', 'r.example/app:1', `oci:${join(dir, 'out')}:v1`]);
    // signed for another identity: refused
    const pol2 = join(dir, 'policy2.json');
    writeFileSync(pol2, readFileSync(pol, 'utf8').replace('r.example/app:1', 'r.example/app:2'));
    const r2 = tscopy(['copy', '--quiet', '--policy', pol2, image, `oci:${join(dir, 'out2')}:v1`]);
    assert.equal(r2.status, 1);
    assert.match(r2.stderr, /does not match r\.example\/app:2 \(exactReference\)/);
  });
});

describe('carrying with manifest lists', () => {
  it('--all carries the list\'s and each instance\'s signatures; a single instance copied from a list carries the instance\'s', async (t) => {
    const { dir, layout, digest, keys } = await setup(t);
    const img = await manifestJson(layout, 'latest');
    const cfg = JSON.parse((await layout.readBytes(img.doc.config.digest)).toString());
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [{ mediaType: img.doc.mediaType ?? 'application/vnd.oci.image.manifest.v1+json', digest, size: img.bytes.length, platform: { os: cfg.os, architecture: cfg.architecture } }],
      }),
    );
    const idx = await layout.putBytes('application/vnd.oci.image.index.v1+json', index);
    await layout.tag('multi', idx);
    const src = join(dir, 'img');
    // --recursive: the list and each instance
    const sr = ok(['sign', '--recursive', '--key', keys.key, '--password-file', keys.pw, '--identity', 'r.example/app:multi', `oci:${src}:multi`]);
    assert.match(sr.stderr, new RegExp(`stored in tag ${signatureTag(idx.digest)}`));
    assert.match(sr.stderr, new RegExp(`stored in tag ${signatureTag(digest)}`));
    ok(['copy', '--quiet', '--insecure-policy', '--all', `oci:${src}:multi`, `oci:${join(dir, 'all')}:m`]);
    const all = await OciLayout.open(join(dir, 'all'));
    assert.ok(await all.find(signatureTag(idx.digest)), 'the list\'s signature');
    assert.ok(await all.find(signatureTag(digest)), 'the instance\'s signature');
    ok(['copy', '--quiet', '--insecure-policy', `oci:${src}:multi`, `oci:${join(dir, 'one')}:m`]);
    const one = await OciLayout.open(join(dir, 'one'));
    assert.equal((await one.resolve('m')).digest, digest, 'the instance was copied');
    assert.ok(await one.find(signatureTag(digest)), 'the instance\'s signature came along');
    assert.equal(await one.find(signatureTag(idx.digest)), undefined);
    ok(['verify', '--key', keys.pub, `oci:${join(dir, 'one')}:m`]);
  });
});

describe('copy from a signed layout named without a tag', () => {
  it('oci:DIR is the one image even with .sig tags and referrers in index.json; they travel', async (t) => {
    const { dir, image, digest, keys } = await setup(t);
    ok(['sign', '--key', keys.key, '--password-file', keys.pw, '--identity', 'r.example/a', '--referrer', image]);
    ok(['copy', '--quiet', '--insecure-policy', `oci:${join(dir, 'img')}`, `oci:${join(dir, 'out')}:v1`]);
    const out = await OciLayout.open(join(dir, 'out'));
    assert.equal((await out.resolve('v1')).digest, digest);
    assert.ok(await out.find(signatureTag(digest)));
    ok(['verify', '--key', keys.pub, `oci:${join(dir, 'out')}:v1`]);
  });
});
