/** OciLayout: the content store (blobs, index.json, tags, gc), concurrency across processes. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { spawn } from 'node:child_process';
import { fileHashes, tempDir } from '../helpers.js';
import {
  OciLayout,
  OciError,
  DigestMismatchError,
  SizeMismatchError,
  UsageError,
  MediaTypes,
  digestOf,
  readAll,
  REF_NAME_ANNOTATION,
  type Descriptor,
  type Digest,
} from '../../src/oci/index.js';

function sha(b: Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(b).digest('hex')}` as Digest;
}

async function* chunks(buf: Buffer, size = 64 * 1024): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < buf.length; i += size) {
    yield buf.subarray(i, i + size);
    await new Promise((r) => setImmediate(r));
  }
}


function tempFiles(dir: string): string[] {
  return Object.keys(fileHashes(dir)).filter((p) => p.split('/').pop()!.startsWith('.tmp-'));
}

async function image(store: OciLayout, seed: string): Promise<{ manifest: Descriptor; config: Descriptor; layer: Descriptor }> {
  const layerBytes = Buffer.from(`layer ${seed}`);
  const layer = await store.ingest({ mediaType: MediaTypes.ociLayerGzip }, chunks(layerBytes));
  const config = await store.putBytes(
    MediaTypes.ociConfig,
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layer.digest] }, seed }),
  );
  const manifest = await store.putBytes(
    MediaTypes.ociManifest,
    JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config, layers: [layer] }),
  );
  return { manifest, config, layer };
}

describe('OciLayout open/create', () => {
  it('creates a layout skopeo-style and reopens it', async (t) => {
    const dir = join(tempDir(t, 'store'), 'layout');
    const s = await OciLayout.open(dir, { create: true });
    assert.equal(s.dir, dir);
    assert.equal(readFileSync(join(dir, 'oci-layout'), 'utf8'), '{"imageLayoutVersion": "1.0.0"}');
    assert.equal(readFileSync(join(dir, 'index.json'), 'utf8'), '{"schemaVersion":2,"manifests":[]}');
    assert.ok(existsSync(join(dir, 'blobs', 'sha256')));
    const again = await OciLayout.open(dir);
    assert.deepEqual((await again.readIndex()).manifests, []);
    // create on an existing layout keeps its content
    const d = await s.putBytes(MediaTypes.ociConfig, '{}');
    await s.tag('x', { ...d, mediaType: MediaTypes.ociManifest });
    await OciLayout.open(dir, { create: true });
    assert.equal((await again.list()).length, 1);
  });

  it('refuses a directory that is not a layout', async (t) => {
    const dir = tempDir(t, 'store');
    writeFileSync(join(dir, 'something'), 'x');
    await assert.rejects(OciLayout.open(dir), (e: Error) => e instanceof UsageError && /not an OCI image layout/.test(e.message));
    await assert.rejects(OciLayout.open(dir, { create: true }), (e: Error) => e instanceof UsageError && /not empty.*something/.test(e.message));
    assert.deepEqual(readdirSync(dir), ['something']);
    await assert.rejects(OciLayout.open(join(dir, 'missing')), /does not exist/);
    await assert.rejects(OciLayout.open(join(dir, 'something'), { create: true }), /not a directory/);
    writeFileSync(join(dir, 'oci-layout'), '{"imageLayoutVersion":"2.0.0"}');
    await assert.rejects(OciLayout.open(dir), /unsupported imageLayoutVersion/);
  });
});

describe('OciLayout blobs', () => {
  it('ingests a stream, verifies it and serves it back (whole and ranges)', async (t) => {
    const s = await OciLayout.open(tempDir(t, 'store'), { create: true });
    const data = randomBytes(300_000);
    let progress = 0;
    const desc = await s.ingest({ mediaType: MediaTypes.ociLayer, digest: sha(data), size: data.length }, chunks(data), {
      onProgress: (n) => (progress += n),
    });
    assert.deepEqual(desc, { mediaType: MediaTypes.ociLayer, digest: sha(data), size: data.length });
    assert.equal(progress, data.length);
    assert.deepEqual(await s.stat(desc.digest), { size: data.length });
    assert.equal(await s.has(desc.digest), true);
    assert.ok(readFileSync(s.blobPath(desc.digest)).equals(data));
    assert.ok((await readAll(await s.open(desc.digest), 1e9)).equals(data));
    assert.ok((await readAll(await s.open(desc.digest, { start: 10, end: 19 }))).equals(data.subarray(10, 20)));
    assert.ok((await readAll(await s.open(desc.digest, { start: 299_990 }))).equals(data.subarray(299_990)));
    // without an expected digest, the digest is computed
    const other = Buffer.from('hello');
    const d2 = await s.ingest({ mediaType: 'text/plain' }, Readable.from([other]));
    assert.equal(d2.digest, sha(other));
    assert.equal(d2.size, 5);
    assert.deepEqual(tempFiles(s.dir), []);
    const all: string[] = [];
    for await (const d of s.digests()) all.push(d);
    assert.deepEqual(all.sort(), [sha(data), sha(other)].sort());
  });

  it('a digest mismatch leaves nothing behind', async (t) => {
    const s = await OciLayout.open(tempDir(t, 'store'), { create: true });
    const before = fileHashes(s.dir);
    const data = randomBytes(200_000);
    const wrong = sha(Buffer.from('something else'));
    await assert.rejects(
      s.ingest({ mediaType: MediaTypes.ociLayer, digest: wrong }, chunks(data)),
      (e: Error) => e instanceof DigestMismatchError && e.message.includes(wrong) && e.message.includes(sha(data)),
    );
    assert.equal(await s.has(wrong), false);
    assert.equal(await s.has(sha(data)), false);
    assert.deepEqual(fileHashes(s.dir), before);
  });

  it('too many or too few bytes fail as size mismatches, leaving nothing', async (t) => {
    const s = await OciLayout.open(tempDir(t, 'store'), { create: true });
    const before = fileHashes(s.dir);
    const data = randomBytes(100_000);
    await assert.rejects(s.ingest({ mediaType: MediaTypes.ociLayer, digest: sha(data), size: 1000 }, chunks(data)), SizeMismatchError);
    await assert.rejects(s.ingest({ mediaType: MediaTypes.ociLayer, digest: sha(data), size: 200_000 }, chunks(data)), SizeMismatchError);
    assert.deepEqual(fileHashes(s.dir), before);
  });

  it('a failing or aborted source leaves no temp file', async (t) => {
    const s = await OciLayout.open(tempDir(t, 'store'), { create: true });
    const before = fileHashes(s.dir);
    async function* broken(): AsyncGenerator<Uint8Array> {
      yield randomBytes(70_000);
      throw new Error('connection reset');
    }
    await assert.rejects(s.ingest({ mediaType: MediaTypes.ociLayer }, broken()), /connection reset/);
    const ac = new AbortController();
    async function* slow(): AsyncGenerator<Uint8Array> {
      yield randomBytes(70_000);
      ac.abort();
      await new Promise((r) => setTimeout(r, 20));
      yield randomBytes(70_000);
    }
    await assert.rejects(s.ingest({ mediaType: MediaTypes.ociLayer }, slow(), { signal: ac.signal }), (e: Error) => e.name === 'AbortError');
    assert.deepEqual(fileHashes(s.dir), before);
  });

  it('an existing blob short-circuits without reading the body', async (t) => {
    const s = await OciLayout.open(tempDir(t, 'store'), { create: true });
    const data = Buffer.from('content');
    await s.ingest({ mediaType: 'text/plain', digest: sha(data) }, chunks(data));
    let read = false;
    const body = new Readable({
      read() {
        read = true;
        this.push(null);
      },
    });
    const d = await s.ingest({ mediaType: 'text/plain', digest: sha(data) }, body);
    assert.equal(d.size, data.length);
    assert.equal(read, false);
    assert.equal(body.destroyed, true);
    // drain: the body is consumed
    const body2 = Readable.from([Buffer.from('xx')]);
    await s.ingest({ mediaType: 'text/plain', digest: sha(data) }, body2, { drain: true });
    assert.equal(body2.readableEnded, true);
    // a size that contradicts the stored blob is an error
    await assert.rejects(s.ingest({ mediaType: 'text/plain', digest: sha(data), size: 3 }, chunks(data)), SizeMismatchError);
  });

  it('concurrent ingests of the same blob all succeed with one intact blob', async (t) => {
    const s = await OciLayout.open(tempDir(t, 'store'), { create: true });
    const s2 = await OciLayout.open(s.dir); // another instance of the same layout
    const data = randomBytes(1_000_000);
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        (i % 2 ? s : s2).ingest({ mediaType: MediaTypes.ociLayer, ...(i % 3 ? { digest: sha(data) } : {}) }, chunks(data, 10_000 + i * 1000)),
      ),
    );
    for (const r of results) assert.deepEqual(r, { mediaType: MediaTypes.ociLayer, digest: sha(data), size: data.length });
    assert.ok(readFileSync(s.blobPath(sha(data))).equals(data));
    assert.deepEqual(tempFiles(s.dir), []);
  });

  it('missing blobs are BLOB_UNKNOWN; readBytes enforces its limit and detects corruption; delete', async (t) => {
    const s = await OciLayout.open(tempDir(t, 'store'), { create: true });
    const missing = sha(Buffer.from('nope'));
    await assert.rejects(s.open(missing), (e: Error) => e instanceof OciError && e.code === 'BLOB_UNKNOWN' && e.message.includes(missing));
    await assert.rejects(s.readBytes(missing), (e: Error) => e instanceof OciError && e.code === 'BLOB_UNKNOWN');
    assert.equal(await s.stat(missing), undefined);
    await assert.rejects(s.stat('sha256:xyz' as Digest), /invalid sha256 digest|not algorithm:hex/);
    const d = await s.putBytes(MediaTypes.ociConfig, Buffer.alloc(1000, 1));
    assert.equal((await s.readBytes(d.digest)).length, 1000);
    await assert.rejects(s.readBytes(d.digest, 999), (e: Error) => e instanceof SizeMismatchError && e.kind === 'limit');
    writeFileSync(s.blobPath(d.digest), Buffer.alloc(1000, 2));
    await assert.rejects(s.readBytes(d.digest), DigestMismatchError);
    assert.equal(await s.delete(d.digest), true);
    assert.equal(await s.delete(d.digest), false);
    assert.equal(await s.has(d.digest), false);
  });

  it('putBytes returns the descriptor with extra fields and is idempotent', async (t) => {
    const s = await OciLayout.open(tempDir(t, 'store'), { create: true });
    const bytes = '{"a":1}';
    const d = await s.putBytes(MediaTypes.ociConfig, bytes, { annotations: { k: 'v' } });
    assert.deepEqual(d, { mediaType: MediaTypes.ociConfig, digest: digestOf(bytes), size: 7, annotations: { k: 'v' } });
    const again = await s.putBytes(MediaTypes.ociConfig, bytes);
    assert.equal(again.digest, d.digest);
    assert.equal(readFileSync(s.blobPath(d.digest), 'utf8'), bytes);
  });
});

describe('OciLayout index and tags', () => {
  it('tag, resolve, list, untag (skopeo-compatible index.json)', async (t) => {
    const s = await OciLayout.open(tempDir(t, 'store'), { create: true });
    const a = await image(s, 'a');
    const b = await image(s, 'b');
    await s.tag('latest', a.manifest);
    assert.equal(
      readFileSync(join(s.dir, 'index.json'), 'utf8'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [{ mediaType: MediaTypes.ociManifest, digest: a.manifest.digest, size: a.manifest.size, annotations: { [REF_NAME_ANNOTATION]: 'latest' } }],
      }),
    );
    await s.tag('v1', a.manifest);
    await s.tag('latest', b.manifest); // replaces the entry named latest
    assert.deepEqual(
      (await s.list()).map((e) => [e.name, e.descriptor.digest]),
      [
        ['latest', b.manifest.digest],
        ['v1', a.manifest.digest],
      ],
    );
    assert.equal((await s.resolve('latest')).digest, b.manifest.digest);
    assert.equal((await s.resolve(a.manifest.digest)).digest, a.manifest.digest);
    // a manifest not in index.json resolves by digest with its type from its JSON
    const c = await image(s, 'c');
    assert.deepEqual(await s.resolve(c.manifest.digest), { mediaType: MediaTypes.ociManifest, digest: c.manifest.digest, size: c.manifest.size });
    await assert.rejects(s.resolve('nope'), (e: Error) => e instanceof OciError && e.code === 'MANIFEST_UNKNOWN' && /nope/.test(e.message));
    await assert.rejects(s.resolve(), /holds 2 images/);
    await assert.rejects(s.tag('bad name', a.manifest), UsageError);
    await assert.rejects(s.tag('-x', a.manifest), UsageError);
    await s.tag('example.com/repo:tag', a.manifest);
    assert.equal(await s.untag('latest'), true);
    assert.equal(await s.untag('latest'), false);
    assert.deepEqual(
      (await s.list()).map((e) => e.name),
      ['v1', 'example.com/repo:tag'],
    );
    assert.equal(await s.find('latest'), undefined);
    // readIndex returns a copy
    const idx = await s.readIndex();
    idx.manifests.length = 0;
    assert.equal((await s.readIndex()).manifests.length, 2);
  });

  it('sees index.json changes made by another writer', async (t) => {
    const s = await OciLayout.open(tempDir(t, 'store'), { create: true });
    const other = await OciLayout.open(s.dir);
    const a = await image(s, 'a');
    assert.equal(await s.find('x'), undefined);
    await other.tag('x', a.manifest);
    assert.equal((await s.resolve('x')).digest, a.manifest.digest);
  });

  it('concurrent tag updates from several processes lose nothing', async (t) => {
    const s = await OciLayout.open(tempDir(t, 'store'), { create: true });
    const a = await image(s, 'a');
    const storeUrl = new URL('../../src/oci/store.js', import.meta.url).href;
    const procs = 4;
    const per = 15;
    const script = `
      const { OciLayout } = await import(${JSON.stringify(storeUrl)});
      const [dir, id, n, desc] = process.argv.slice(1);
      const s = await OciLayout.open(dir);
      const d = JSON.parse(desc);
      await Promise.all(Array.from({ length: Number(n) }, (_, i) => s.tag('p' + id + '-' + i, d)));
      await s.untag('p' + id + '-0');
    `;
    const runs = Array.from(
      { length: procs },
      (_, id) =>
        new Promise<void>((resolve, reject) => {
          const c = spawn(process.execPath, ['--input-type=module', '-e', script, s.dir, String(id), String(per), JSON.stringify(a.manifest)], {
            stdio: ['ignore', 'ignore', 'pipe'],
          });
          let err = '';
          c.stderr.on('data', (b) => (err += b));
          c.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`child ${id} exited ${code}: ${err}`))));
        }),
    );
    // and this process updates at the same time
    const mine = Promise.all(Array.from({ length: per }, (_, i) => s.tag(`main-${i}`, a.manifest)));
    await Promise.all([...runs, mine]);
    const names = new Set((await s.list()).map((e) => e.name));
    assert.equal(names.size, procs * (per - 1) + per);
    for (let id = 0; id < procs; id++) {
      assert.equal(names.has(`p${id}-0`), false);
      for (let i = 1; i < per; i++) assert.ok(names.has(`p${id}-${i}`), `p${id}-${i} lost`);
    }
    assert.deepEqual(tempFiles(s.dir), []);
    assert.equal(existsSync(join(s.dir, '.index.json.lock')), false);
  });
});

describe('OciLayout gc', () => {
  it('keeps everything reachable (manifests, index children, configs, layers, referrers) and removes the rest', async (t) => {
    const s = await OciLayout.open(tempDir(t, 'store'), { create: true });
    const a = await image(s, 'a');
    const b = await image(s, 'b'); // child of an index
    const c = await image(s, 'c'); // unreferenced
    const idx = await s.putBytes(
      MediaTypes.ociIndex,
      JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [{ ...b.manifest, platform: { os: 'linux', architecture: 'arm64' } }] }),
    );
    // a referrer of a (kept) and a referrer of c (swept), and a referrer of the referrer
    const sigLayer = await s.putBytes('application/vnd.example.sig', 'signature-a');
    const referrer = await s.putBytes(
      MediaTypes.ociManifest,
      JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, artifactType: 'application/vnd.example.sig', config: { mediaType: MediaTypes.ociEmpty, digest: digestOf('{}'), size: 2 }, layers: [sigLayer], subject: a.manifest }),
    );
    const emptyCfg = await s.putBytes(MediaTypes.ociEmpty, '{}');
    const ref2Layer = await s.putBytes('application/vnd.example.sbom', 'sbom of the signature');
    const referrer2 = await s.putBytes(
      MediaTypes.ociManifest,
      JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: emptyCfg, layers: [ref2Layer], subject: referrer }),
    );
    const cLayer = await s.putBytes('application/vnd.example.sig', 'signature-c');
    const referrerC = await s.putBytes(
      MediaTypes.ociManifest,
      JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: emptyCfg, layers: [cLayer], subject: c.manifest }),
    );
    const junk = await s.ingest({ mediaType: 'application/octet-stream' }, chunks(randomBytes(5000)));
    // a stale temp file of a crashed writer
    mkdirSync(join(s.dir, 'blobs', 'sha256'), { recursive: true });
    const stale = join(s.dir, 'blobs', 'sha256', '.tmp-123-abc');
    writeFileSync(stale, 'partial');
    const { utimesSync } = await import('node:fs');
    utimesSync(stale, new Date(Date.now() - 2 * 3600_000), new Date(Date.now() - 2 * 3600_000));

    await s.tag('a', a.manifest);
    await s.tag('multi', idx);

    const gone = [c.manifest, c.config, c.layer, referrerC, cLayer, junk].map((d) => d.digest).sort();
    const keep = [a.manifest, a.config, a.layer, b.manifest, b.config, b.layer, idx, referrer, sigLayer, referrer2, ref2Layer, emptyCfg].map((d) => d.digest);
    const bytes = [c.manifest, c.config, c.layer, referrerC, cLayer, junk].reduce((n, d) => n + d.size, 0);

    const dry = await s.gc({ dryRun: true });
    assert.deepEqual([...dry.removed].sort(), gone);
    assert.equal(dry.bytes, bytes);
    assert.equal(dry.tempFiles, 1);
    for (const d of gone) assert.equal(await s.has(d), true, `dry run removed ${d}`);
    assert.ok(existsSync(stale));

    const res = await s.gc();
    assert.deepEqual([...res.removed].sort(), gone);
    assert.equal(res.bytes, bytes);
    assert.equal(res.kept, keep.length);
    for (const d of gone) assert.equal(await s.has(d), false, `${d} not removed`);
    for (const d of keep) assert.equal(await s.has(d), true, `${d} removed`);
    assert.equal(existsSync(stale), false);
    // second run: nothing left to remove
    assert.deepEqual((await s.gc()).removed, []);
    // untag a: its image and referrers go
    await s.untag('a');
    const res2 = await s.gc();
    assert.deepEqual(
      [...res2.removed].sort(),
      [a.manifest, a.config, a.layer, referrer, sigLayer, referrer2, ref2Layer, emptyCfg].map((d) => d.digest).sort(),
    );
    assert.equal(await s.has(emptyCfg.digest), false); // only referrers used it
  });
});
