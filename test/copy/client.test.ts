/**
 * RegistryClient against real registries: tsregistry (in-process, OCI 1.1 with referrers) and distribution 2.8
 * (a docker-registry process, no referrers API): blobs (monolithic and chunked, streamed and verified),
 * manifests verbatim, HEAD, tags with Link pagination, cross-repository mount (201) and refused mounts,
 * referrers (API and the sha256-<hex> tag fallback), delete, catalog, and the errors a user sees.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import { Readable } from 'node:stream';
import { startDistribution } from '../helpers.js';
import { startRegistry } from '../registry/util.js';
import { RegistryClient } from '../../src/copy/index.js';
import { OciError, DigestMismatchError, type Digest } from '../../src/oci/index.js';
import { digestOf } from '../../src/oci/digest.js';

const sha = (b: Buffer | string) => digestOf(b);
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

async function readStream(s: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of s) out.push(c as Buffer);
  return Buffer.concat(out);
}

/** Split a buffer into a stream of odd-sized chunks (so chunk boundaries never line up with PATCH sizes). */
function chunks(b: Buffer, size = 100_003): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < b.length; i += size) parts.push(b.subarray(i, i + size));
  return Readable.from(parts);
}

async function pushImage(c: RegistryClient, repo: string, tag: string, o: { subject?: { digest: Digest; size: number }; artifactType?: string } = {}) {
  const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, n: randomBytes(4).toString('hex') }));
  await c.putBlob(repo, { digest: sha(cfg), size: cfg.length }, Readable.from([cfg]));
  const layer = randomBytes(3000);
  await c.putBlob(repo, { digest: sha(layer), size: layer.length }, Readable.from([layer]));
  const doc: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(cfg), size: cfg.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(layer), size: layer.length }],
  };
  if (o.artifactType) doc.artifactType = o.artifactType;
  if (o.subject) doc.subject = { mediaType: OCI_MANIFEST, ...o.subject };
  // deliberately odd formatting: bytes must travel verbatim
  const bytes = Buffer.from(JSON.stringify(doc, null, 3) + '\n');
  const digest = await c.putManifest(repo, tag, bytes, OCI_MANIFEST);
  return { bytes, digest, layer, cfg };
}

const kinds = ['tsregistry', 'distribution'] as const;

for (const kind of kinds) {
  describe(`RegistryClient against ${kind}`, () => {
    async function client(t: Parameters<typeof startRegistry>[0], o: ConstructorParameters<typeof RegistryClient>[1] = {}) {
      let host: string;
      if (kind === 'tsregistry') host = (await startRegistry(t)).address;
      else host = (await startDistribution(t)).addr;
      const c = new RegistryClient(host, { tlsVerify: false, ...o });
      t.after(() => c.close());
      return { c, host };
    }

    it('pushes and pulls blobs (monolithic and streamed in chunks) and manifests verbatim', async (t) => {
      const { c } = await client(t, { chunkSize: 1024 * 1024 });
      const big = randomBytes(3 * 1024 * 1024 + 12345);
      const d = sha(big);
      const info = await c.putBlob('app/one', { digest: d, size: big.length }, chunks(big));
      assert.deepEqual(info, { digest: d, size: big.length });
      assert.ok(c.stats.patches >= 4, `chunked upload in several PATCHes (got ${c.stats.patches})`);
      assert.deepEqual(await c.statBlob('app/one', d), { size: big.length });
      assert.equal(await c.statBlob('app/one', sha(Buffer.from('nope'))), undefined);
      const got = await readStream(await c.getBlob('app/one', { digest: d, size: big.length }));
      assert.ok(got.equals(big));
      // resume from an offset (what the engine asks after an interruption)
      const tail = await readStream(await c.getBlob('app/one', { digest: d, size: big.length }, { start: 1_000_000 }));
      assert.ok(tail.equals(big.subarray(1_000_000)));
      // unknown digest/size upload: digest computed while streaming
      const anon = randomBytes(2 * 1024 * 1024 + 7);
      const ai = await c.putBlob('app/one', {}, chunks(anon));
      assert.equal(ai.digest, sha(anon));

      const img = await pushImage(c, 'app/one', 'v1');
      const m = await c.getManifest('app/one', 'v1');
      assert.ok(m.bytes.equals(img.bytes), 'manifest bytes verbatim');
      assert.equal(m.digest, img.digest);
      assert.equal(m.mediaType, OCI_MANIFEST);
      const byDigest = await c.getManifest('app/one', img.digest);
      assert.ok(byDigest.bytes.equals(img.bytes));
      const h = await c.headManifest('app/one', 'v1');
      assert.equal(h?.digest, img.digest);
      assert.equal(h?.size, img.bytes.length);
      assert.equal(await c.headManifest('app/one', 'nope'), undefined);
      await assert.rejects(c.getManifest('app/one', 'nope'), (e: any) => e instanceof OciError && e.code === 'MANIFEST_UNKNOWN' && /app\/one:nope/.test(e.message));
    });

    it('keeps its connections across HEAD checks (sequential HEADs reuse one socket)', async (t) => {
      const { c } = await client(t);
      const img = await pushImage(c, 'app/keep', 'v1');
      // undici closes the socket after every HEAD unless told otherwise: count real connections
      let connections = 0;
      const onConnect = () => void connections++;
      diagnostics.subscribe('undici:client:connected', onConnect);
      t.after(() => diagnostics.unsubscribe('undici:client:connected', onConnect));
      for (let i = 0; i < 10; i++) {
        assert.equal((await c.headManifest('app/keep', 'v1'))?.digest, img.digest);
        assert.deepEqual(await c.statBlob('app/keep', sha(img.layer)), { size: img.layer.length });
        assert.equal(await c.statBlob('app/keep', sha(`absent ${i}`)), undefined);
      }
      assert.ok(connections <= 1, `30 sequential HEADs opened ${connections} connections`);
    });

    it('checks a blob it uploaded or saw once per repository, and asks again after deleting it', async (t) => {
      const { c } = await client(t);
      const blob = randomBytes(5000);
      const d = sha(blob);
      await c.putBlob('app/seen', { digest: d, size: blob.length }, Readable.from([blob]));
      let before = c.stats.requests;
      assert.deepEqual(await c.statBlob('app/seen', d), { size: blob.length });
      assert.equal(c.stats.requests, before, 'an uploaded blob is known present');
      // another repository of the registry is asked (and remembered)
      before = c.stats.requests;
      assert.equal(await c.statBlob('app/other', d), undefined);
      assert.equal(c.stats.requests, before + 1);
      assert.equal(await c.statBlob('app/other', d), undefined, 'absence is never remembered');
      assert.equal(c.stats.requests, before + 2);
      // a deleted blob is asked about again (tsregistry and distribution both delete per repository link)
      await c.deleteBlob('app/seen', d);
      before = c.stats.requests;
      assert.equal(await c.statBlob('app/seen', d), undefined);
      assert.equal(c.stats.requests, before + 1);
    });

    it('refuses a blob whose bytes do not match the digest, leaving nothing behind', async (t) => {
      const { c } = await client(t, { chunkSize: 1024 * 1024 });
      const data = randomBytes(2 * 1024 * 1024);
      const wrong = sha(Buffer.from('something else'));
      await assert.rejects(c.putBlob('app/bad', { digest: wrong, size: data.length }, chunks(data)), DigestMismatchError);
      assert.equal(await c.statBlob('app/bad', wrong), undefined);
      assert.equal(await c.statBlob('app/bad', sha(data)), undefined);
      // streaming mode (source reopenable): the registry's digest check refuses it at the final PUT
      const bad = Buffer.from(data);
      bad[777] = bad[777]! ^ 1;
      await assert.rejects(
        c.putBlob('app/bad', { digest: sha(data), size: data.length }, chunks(bad), { reopen: async (s) => chunks(bad.subarray(s)) }),
        (e: any) => e instanceof OciError && e.code === 'DIGEST_INVALID' && e.message.includes(sha(data)),
      );
      assert.equal(await c.statBlob('app/bad', sha(data)), undefined);
      // too short a stream for the declared size
      await assert.rejects(c.putBlob('app/bad', { digest: sha(data), size: data.length + 10 }, chunks(data)), /size mismatch|expected/);
      // small (monolithic) with a wrong digest
      await assert.rejects(c.putBlob('app/bad', { digest: wrong, size: 5 }, Readable.from([Buffer.from('hello')])), DigestMismatchError);
      // reading a blob verifies it: a manifest fetched by a digest it does not have fails
      const img = await pushImage(c, 'app/bad', 'v1');
      await assert.rejects(c.getBlob('app/bad', { digest: img.digest, size: img.bytes.length }), /BLOB_UNKNOWN|404/);
    });

    it('lists tags with Link pagination, mounts across repositories, deletes', async (t) => {
      const { c } = await client(t);
      const img = await pushImage(c, 'lib/src', 'a');
      for (const tag of ['b', 'c', 'd', 'e']) await c.putManifest('lib/src', tag, img.bytes, OCI_MANIFEST);
      const tags = await c.listTags('lib/src', { pageSize: 2 });
      assert.deepEqual([...tags].sort(), ['a', 'b', 'c', 'd', 'e']);
      assert.ok(c.stats.requests > 3);
      // mount: 201 for a blob the source repository has
      assert.equal(await c.mountBlob('lib/dst', sha(img.layer), 'lib/src'), true);
      assert.deepEqual(await c.statBlob('lib/dst', sha(img.layer)), { size: img.layer.length });
      // a blob nowhere: not mounted (202 session cancelled or refused), nothing created
      const ghost = sha(randomBytes(10));
      assert.equal(await c.mountBlob('lib/dst', ghost, 'lib/src'), false);
      assert.equal(await c.statBlob('lib/dst', ghost), undefined);
      const repos = await c.catalog({ pageSize: 1 });
      assert.ok(repos.includes('lib/src') && repos.includes('lib/dst'), repos.join(','));
      // delete by tag resolves the digest (all tags of it go)
      const deleted = await c.deleteManifest('lib/src', 'a');
      assert.equal(deleted, img.digest);
      assert.equal(await c.headManifest('lib/src', 'b'), undefined);
      await assert.rejects(c.deleteManifest('lib/src', 'a'), (e: any) => e instanceof OciError && e.code === 'MANIFEST_UNKNOWN');
    });

    it(`lists referrers (${kind === 'tsregistry' ? 'referrers API' : 'sha256-<hex> tag fallback'}) filtered by artifactType`, async (t) => {
      const { c } = await client(t);
      const img = await pushImage(c, 'ref/app', 'v1');
      const subject = { digest: img.digest, size: img.bytes.length };
      const sig = await pushImage(c, 'ref/app', 'sig', { subject, artifactType: 'application/vnd.test.sig' });
      const sbom = await pushImage(c, 'ref/app', 'sbom', { subject, artifactType: 'application/vnd.test.sbom' });
      if (kind === 'distribution') {
        // no referrers API: clients maintain the tag-scheme index (as oras/cosign do)
        const idx = Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: OCI_INDEX,
            manifests: [
              { mediaType: OCI_MANIFEST, digest: sig.digest, size: sig.bytes.length, artifactType: 'application/vnd.test.sig' },
              { mediaType: OCI_MANIFEST, digest: sbom.digest, size: sbom.bytes.length, artifactType: 'application/vnd.test.sbom' },
            ],
          }),
        );
        await c.putManifest('ref/app', `sha256-${img.digest.slice(7)}`, idx, OCI_INDEX);
      }
      let before = c.stats.requests;
      const all = await c.referrers('ref/app', img.digest);
      assert.deepEqual(all.map((d) => d.digest).sort(), [sig.digest, sbom.digest].sort());
      // distribution: the API's 404 (and the tag) the first time; then the tag only (the client remembers the
      // registry has no referrers API); tsregistry: the API every time
      assert.equal(c.stats.requests - before, kind === 'distribution' ? 2 : 1);
      before = c.stats.requests;
      const only = await c.referrers('ref/app', img.digest, { artifactType: 'application/vnd.test.sbom' });
      assert.deepEqual(only.map((d) => d.digest), [sbom.digest]);
      assert.equal(c.stats.requests - before, 1);
      assert.deepEqual(await c.referrers('ref/app', sig.digest), []);
    });
  });
}

describe('RegistryClient errors', () => {
  it('names the registry when nothing listens, after retrying', async (t) => {
    const reg = await startRegistry(t);
    const host = reg.address;
    await reg.close();
    const c = new RegistryClient(host, { tlsVerify: false, retryTimes: 2, retryDelayMs: 10 });
    t.after(() => c.close());
    await assert.rejects(c.getManifest('x/y', 'latest'), (e: unknown) => {
      assert.ok(e instanceof OciError, String(e));
      assert.match((e as Error).message, new RegExp(host.replace(/\./g, '\\.')));
      return true;
    });
    assert.equal(c.stats.retries, 2);
  });

  it('refuses plain HTTP unless the registry is insecure', async (t) => {
    const reg = await startRegistry(t);
    const c = new RegistryClient(reg.address, { retryTimes: 0, env: { CONTAINERS_REGISTRIES_CONF: '/nonexistent/registries.conf' } });
    t.after(() => c.close());
    await assert.rejects(c.getManifest('x/y', 'latest'), /https:\/\/127\.0\.0\.1:\d+\/v2\/.*--tls-verify=false/);
  });
});
