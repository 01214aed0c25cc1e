/** The registry's HTTP API against the OCI distribution spec v1.1, endpoint by endpoint (in-process server). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ACCEPT_ALL, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, blob, errCode, pushBlob, pushImage, req, sha256, startRegistry } from './util.js';

describe('registry API: base and blobs', () => {
  it('GET /v2/ answers 200 with the API version header', async (t) => {
    const reg = await startRegistry(t);
    const r = await req(reg.url, 'GET', '/v2/');
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('docker-distribution-api-version'), 'registry/2.0');
    assert.deepEqual(r.json(), {});
  });

  it('monolithic POST ?digest= stores a blob; HEAD/GET/Range serve it', async (t) => {
    const reg = await startRegistry(t);
    const b = blob(100_000);
    const p = await req(reg.url, 'POST', `/v2/a/b/blobs/uploads/?digest=${b.digest}`, { body: b.data, headers: { 'Content-Type': 'application/octet-stream' } });
    assert.equal(p.status, 201, p.text);
    assert.equal(p.headers.get('location'), `/v2/a/b/blobs/${b.digest}`);
    assert.equal(p.headers.get('docker-content-digest'), b.digest);
    const h = await req(reg.url, 'HEAD', `/v2/a/b/blobs/${b.digest}`);
    assert.equal(h.status, 200);
    assert.equal(h.headers.get('content-length'), String(b.data.length));
    assert.equal(h.headers.get('docker-content-digest'), b.digest);
    assert.equal(h.body.length, 0);
    const g = await req(reg.url, 'GET', `/v2/a/b/blobs/${b.digest}`);
    assert.equal(g.status, 200);
    assert.ok(g.body.equals(b.data));
    const rg = await req(reg.url, 'GET', `/v2/a/b/blobs/${b.digest}`, { headers: { Range: 'bytes=10-19' } });
    assert.equal(rg.status, 206);
    assert.equal(rg.headers.get('content-range'), `bytes 10-19/${b.data.length}`);
    assert.ok(rg.body.equals(b.data.subarray(10, 20)));
    const suffix = await req(reg.url, 'GET', `/v2/a/b/blobs/${b.digest}`, { headers: { Range: 'bytes=-5' } });
    assert.ok(suffix.body.equals(b.data.subarray(b.data.length - 5)));
    const bad = await req(reg.url, 'GET', `/v2/a/b/blobs/${b.digest}`, { headers: { Range: `bytes=${b.data.length + 5}-` } });
    assert.equal(bad.status, 416);
    assert.equal(errCode(bad), 'RANGE_INVALID');
  });

  it('monolithic POST with the wrong digest is DIGEST_INVALID and stores nothing', async (t) => {
    const reg = await startRegistry(t);
    const b = blob(1000);
    const wrong = sha256('other');
    const p = await req(reg.url, 'POST', `/v2/x/blobs/uploads/?digest=${wrong}`, { body: b.data });
    assert.equal(p.status, 400);
    assert.equal(errCode(p), 'DIGEST_INVALID');
    assert.equal((await req(reg.url, 'HEAD', `/v2/x/blobs/${wrong}`)).status, 404);
    assert.equal((await req(reg.url, 'HEAD', `/v2/x/blobs/${b.digest}`)).status, 404);
  });

  it('unknown blobs, bad digests and bad names get the spec codes', async (t) => {
    const reg = await startRegistry(t);
    const g = await req(reg.url, 'GET', `/v2/x/blobs/${sha256('nope')}`);
    assert.equal(g.status, 404);
    assert.equal(errCode(g), 'BLOB_UNKNOWN');
    assert.equal(g.headers.get('content-type'), 'application/json');
    const d = await req(reg.url, 'GET', '/v2/x/blobs/sha256:1234');
    assert.equal(d.status, 400);
    assert.equal(errCode(d), 'DIGEST_INVALID');
    const n = await req(reg.url, 'GET', `/v2/Bad_Name/blobs/${sha256('x')}`);
    assert.equal(n.status, 400);
    assert.equal(errCode(n), 'NAME_INVALID');
    const n2 = await req(reg.url, 'POST', '/v2/a//b/blobs/uploads/');
    assert.equal(errCode(n2), 'NAME_INVALID');
  });

  it('chunked upload: PATCH with Content-Range, out-of-order 416, status, PUT to finish', async (t) => {
    const reg = await startRegistry(t);
    const b = blob(30_000);
    const s = await req(reg.url, 'POST', '/v2/c/blobs/uploads/');
    assert.equal(s.status, 202);
    const loc = s.headers.get('location')!;
    assert.match(loc, /^\/v2\/c\/blobs\/uploads\/[0-9a-f-]{36}$/);
    assert.equal(s.headers.get('range'), '0-0');
    assert.ok(s.headers.get('docker-upload-uuid'));
    const p1 = await req(reg.url, 'PATCH', loc, { body: b.data.subarray(0, 10_000), headers: { 'Content-Range': '0-9999', 'Content-Type': 'application/octet-stream' } });
    assert.equal(p1.status, 202, p1.text);
    assert.equal(p1.headers.get('range'), '0-9999');
    const ooo = await req(reg.url, 'PATCH', loc, { body: b.data.subarray(20_000), headers: { 'Content-Range': '20000-29999' } });
    assert.equal(ooo.status, 416);
    assert.equal(errCode(ooo), 'RANGE_INVALID');
    const st = await req(reg.url, 'GET', loc);
    assert.equal(st.status, 204);
    assert.equal(st.headers.get('range'), '0-9999');
    assert.equal(st.headers.get('location'), loc);
    const p2 = await req(reg.url, 'PATCH', loc, { body: b.data.subarray(10_000, 20_000), headers: { 'Content-Range': '10000-19999' } });
    assert.equal(p2.headers.get('range'), '0-19999');
    const fin = await req(reg.url, 'PUT', `${loc}?digest=${b.digest}`, { body: b.data.subarray(20_000), headers: { 'Content-Range': '20000-29999' } });
    assert.equal(fin.status, 201, fin.text);
    assert.equal(fin.headers.get('location'), `/v2/c/blobs/${b.digest}`);
    assert.ok((await req(reg.url, 'GET', `/v2/c/blobs/${b.digest}`)).body.equals(b.data));
    // the session is gone
    const gone = await req(reg.url, 'GET', loc);
    assert.equal(gone.status, 404);
    assert.equal(errCode(gone), 'BLOB_UPLOAD_UNKNOWN');
  });

  it('streamed PATCH without Content-Range, then PUT without body', async (t) => {
    const reg = await startRegistry(t);
    const b = blob(200_000);
    const s = await req(reg.url, 'POST', '/v2/s/blobs/uploads');
    const loc = s.headers.get('location')!;
    const stream = new ReadableStream({
      start(c) {
        for (let i = 0; i < b.data.length; i += 7000) c.enqueue(b.data.subarray(i, i + 7000));
        c.close();
      },
    });
    const r = await fetch(reg.url + loc, { method: 'PATCH', body: stream, duplex: 'half' } as RequestInit);
    assert.equal(r.status, 202);
    assert.equal(r.headers.get('range'), `0-${b.data.length - 1}`);
    const fin = await req(reg.url, 'PUT', `${loc}?digest=${b.digest}`);
    assert.equal(fin.status, 201);
    assert.equal((await req(reg.url, 'HEAD', `/v2/s/blobs/${b.digest}`)).headers.get('content-length'), String(b.data.length));
  });

  it('PUT with the wrong digest is DIGEST_INVALID and drops the session; PUT without digest too', async (t) => {
    const reg = await startRegistry(t);
    const b = blob(5000);
    const s = await req(reg.url, 'POST', '/v2/w/blobs/uploads/');
    const loc = s.headers.get('location')!;
    const nod = await req(reg.url, 'PUT', loc, { body: b.data });
    assert.equal(nod.status, 400);
    assert.equal(errCode(nod), 'DIGEST_INVALID');
    const bad = await req(reg.url, 'PUT', `${loc}?digest=${sha256('x')}`, { body: b.data });
    assert.equal(bad.status, 400);
    assert.equal(errCode(bad), 'DIGEST_INVALID');
    assert.equal((await req(reg.url, 'GET', loc)).status, 404);
    assert.equal((await req(reg.url, 'HEAD', `/v2/w/blobs/${b.digest}`)).status, 404);
  });

  it('PATCH whose body is longer than Content-Length/Content-Range says is SIZE_INVALID', async (t) => {
    const reg = await startRegistry(t);
    const s = await req(reg.url, 'POST', '/v2/w/blobs/uploads/');
    const loc = s.headers.get('location')!;
    const r = await req(reg.url, 'PATCH', loc, { body: randomBytes(100), headers: { 'Content-Range': '0-49', 'Content-Length': '100' } });
    assert.equal(r.status, 400);
    assert.equal(errCode(r), 'SIZE_INVALID');
  });

  it('DELETE cancels an upload; unknown uploads are BLOB_UPLOAD_UNKNOWN', async (t) => {
    const reg = await startRegistry(t);
    const s = await req(reg.url, 'POST', '/v2/d/blobs/uploads/');
    const loc = s.headers.get('location')!;
    await req(reg.url, 'PATCH', loc, { body: randomBytes(100) });
    assert.equal((await req(reg.url, 'DELETE', loc)).status, 204);
    const r = await req(reg.url, 'GET', loc);
    assert.equal(r.status, 404);
    assert.equal(errCode(r), 'BLOB_UPLOAD_UNKNOWN');
    assert.equal((await req(reg.url, 'DELETE', loc)).status, 404);
    assert.equal(errCode(await req(reg.url, 'PATCH', '/v2/d/blobs/uploads/00000000-0000-0000-0000-000000000000', { body: 'x' })), 'BLOB_UPLOAD_UNKNOWN');
    assert.equal(errCode(await req(reg.url, 'GET', '/v2/d/blobs/uploads/..%2f..%2fetc')), 'BLOB_UPLOAD_UNKNOWN');
  });

  it('cross-repository mount: 201 when readable in from, 202 session otherwise, and without from', async (t) => {
    const reg = await startRegistry(t);
    const b = blob(4000);
    await pushBlob(reg.url, 'src/repo', b.data);
    const m = await req(reg.url, 'POST', `/v2/dst/blobs/uploads/?mount=${b.digest}&from=src/repo`);
    assert.equal(m.status, 201);
    assert.equal(m.headers.get('location'), `/v2/dst/blobs/${b.digest}`);
    assert.equal(m.headers.get('docker-content-digest'), b.digest);
    assert.ok((await req(reg.url, 'GET', `/v2/dst/blobs/${b.digest}`)).body.equals(b.data));
    const miss = await req(reg.url, 'POST', `/v2/dst2/blobs/uploads/?mount=${b.digest}&from=elsewhere`);
    assert.equal(miss.status, 202);
    assert.match(miss.headers.get('location')!, /\/v2\/dst2\/blobs\/uploads\//);
    const nofrom = await req(reg.url, 'POST', `/v2/dst3/blobs/uploads/?mount=${b.digest}`);
    assert.equal(nofrom.status, 201);
    const unknown = await req(reg.url, 'POST', `/v2/dst3/blobs/uploads/?mount=${sha256('zz')}`);
    assert.equal(unknown.status, 202);
  });

  it('DELETE blob unlinks it from the repository only', async (t) => {
    const reg = await startRegistry(t);
    const b = blob(100);
    await pushBlob(reg.url, 'one', b.data);
    await pushBlob(reg.url, 'two', b.data);
    const d = await req(reg.url, 'DELETE', `/v2/one/blobs/${b.digest}`);
    assert.equal(d.status, 202);
    assert.equal((await req(reg.url, 'HEAD', `/v2/one/blobs/${b.digest}`)).status, 404);
    assert.equal((await req(reg.url, 'HEAD', `/v2/two/blobs/${b.digest}`)).status, 200);
    assert.equal(errCode(await req(reg.url, 'DELETE', `/v2/one/blobs/${b.digest}`)), 'BLOB_UNKNOWN');
  });
});

describe('registry API: manifests', () => {
  it('PUT by tag, GET/HEAD by tag and digest return the exact bytes and type', async (t) => {
    const reg = await startRegistry(t);
    const img = await pushImage(reg.url, 'app', 'v1', { layers: 2 });
    for (const ref of ['v1', img.digest]) {
      const g = await req(reg.url, 'GET', `/v2/app/manifests/${ref}`, { headers: { Accept: ACCEPT_ALL } });
      assert.equal(g.status, 200);
      assert.ok(g.body.equals(img.bytes));
      assert.equal(g.headers.get('content-type'), OCI_MANIFEST);
      assert.equal(g.headers.get('docker-content-digest'), img.digest);
      const h = await req(reg.url, 'HEAD', `/v2/app/manifests/${ref}`);
      assert.equal(h.status, 200);
      assert.equal(h.headers.get('content-length'), String(img.bytes.length));
      assert.equal(h.headers.get('docker-content-digest'), img.digest);
    }
    // an OCI manifest is served without an OCI Accept too (distribution 2.8 answers 404 here)
    assert.equal((await req(reg.url, 'GET', '/v2/app/manifests/v1')).status, 200);
    const miss = await req(reg.url, 'GET', '/v2/app/manifests/nope');
    assert.equal(miss.status, 404);
    assert.equal(errCode(miss), 'MANIFEST_UNKNOWN');
    assert.equal(errCode(await req(reg.url, 'GET', `/v2/app/manifests/${sha256('x')}`)), 'MANIFEST_UNKNOWN');
  });

  it('PUT response carries Location and Docker-Content-Digest; PUT by digest must match', async (t) => {
    const reg = await startRegistry(t);
    const img = await pushImage(reg.url, 'm', 'v1');
    const ok = await req(reg.url, 'PUT', `/v2/m/manifests/${img.digest}`, { body: img.bytes, headers: { 'Content-Type': OCI_MANIFEST } });
    assert.equal(ok.status, 201);
    assert.equal(ok.headers.get('location'), `/v2/m/manifests/${img.digest}`);
    assert.equal(ok.headers.get('docker-content-digest'), img.digest);
    const bad = await req(reg.url, 'PUT', `/v2/m/manifests/${sha256('other')}`, { body: img.bytes, headers: { 'Content-Type': OCI_MANIFEST } });
    assert.equal(bad.status, 400);
    assert.equal(errCode(bad), 'DIGEST_INVALID');
  });

  it('PUT validation: missing blobs, invalid body, wrong media type, bad tag, too large', async (t) => {
    const reg = await startRegistry(t, { limits: { manifestSize: '64KiB' } });
    const cfg = await pushBlob(reg.url, 'v', Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'));
    const missing = sha256('missing layer');
    const m = (layers: unknown[]) =>
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cfg, size: 77 }, layers });
    const r1 = await req(reg.url, 'PUT', '/v2/v/manifests/t', { body: m([{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: missing, size: 5 }]), headers: { 'Content-Type': OCI_MANIFEST } });
    assert.equal(r1.status, 400);
    assert.equal(errCode(r1), 'MANIFEST_BLOB_UNKNOWN');
    assert.equal(r1.json().errors[0].detail.digest, missing);
    const r2 = await req(reg.url, 'PUT', '/v2/v/manifests/t', { body: '{not json', headers: { 'Content-Type': OCI_MANIFEST } });
    assert.equal(errCode(r2), 'MANIFEST_INVALID');
    const r3 = await req(reg.url, 'PUT', '/v2/v/manifests/t', { body: m([]), headers: { 'Content-Type': OCI_INDEX } });
    assert.equal(r3.status, 400);
    assert.equal(errCode(r3), 'MANIFEST_INVALID');
    const r4 = await req(reg.url, 'PUT', '/v2/v/manifests/-bad', { body: m([]), headers: { 'Content-Type': OCI_MANIFEST } });
    assert.equal(errCode(r4), 'TAG_INVALID');
    const big = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: {}, layers: [], annotations: { x: 'y'.repeat(70_000) } });
    const r5 = await req(reg.url, 'PUT', '/v2/v/manifests/t', { body: big, headers: { 'Content-Type': OCI_MANIFEST } });
    assert.equal(r5.status, 413);
    assert.equal(errCode(r5), 'MANIFEST_INVALID');
    const schema1 = await req(reg.url, 'PUT', '/v2/v/manifests/t', { body: '{"schemaVersion":1,"name":"v","tag":"t","fsLayers":[]}', headers: { 'Content-Type': 'application/vnd.docker.distribution.manifest.v1+prettyjws' } });
    assert.equal(errCode(schema1), 'MANIFEST_INVALID');
    // nothing was tagged
    assert.equal((await req(reg.url, 'GET', '/v2/v/manifests/t')).status, 404);
  });

  it('Docker schema 2 manifests and manifest lists; index children must exist', async (t) => {
    const reg = await startRegistry(t);
    const a = await pushImage(reg.url, 'multi', 'amd', { docker: true });
    const b = await pushImage(reg.url, 'multi', 'arm', { docker: true });
    const list = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: DOCKER_LIST,
        manifests: [
          { mediaType: DOCKER_MANIFEST, digest: a.digest, size: a.bytes.length, platform: { architecture: 'amd64', os: 'linux' } },
          { mediaType: DOCKER_MANIFEST, digest: b.digest, size: b.bytes.length, platform: { architecture: 'arm64', os: 'linux' } },
        ],
      }),
    );
    const r = await req(reg.url, 'PUT', '/v2/multi/manifests/latest', { body: list, headers: { 'Content-Type': DOCKER_LIST } });
    assert.equal(r.status, 201, r.text);
    const g = await req(reg.url, 'GET', '/v2/multi/manifests/latest', { headers: { Accept: ACCEPT_ALL } });
    assert.equal(g.headers.get('content-type'), DOCKER_LIST);
    assert.ok(g.body.equals(list));
    // a client that accepts only image manifests gets the linux/amd64 one (as distribution does)
    const old = await req(reg.url, 'GET', '/v2/multi/manifests/latest', { headers: { Accept: DOCKER_MANIFEST } });
    assert.equal(old.status, 200);
    assert.equal(old.headers.get('docker-content-digest'), a.digest);
    assert.ok(old.body.equals(a.bytes));
    const orphan = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: sha256('nope'), size: 3 }] }));
    const bad = await req(reg.url, 'PUT', '/v2/multi/manifests/orphan', { body: orphan, headers: { 'Content-Type': OCI_INDEX } });
    assert.equal(bad.status, 400);
    assert.equal(errCode(bad), 'MANIFEST_BLOB_UNKNOWN');
  });

  it('DELETE by tag removes only the tag; DELETE by digest removes the manifest and its tags', async (t) => {
    const reg = await startRegistry(t);
    const img = await pushImage(reg.url, 'del', 'v1');
    await req(reg.url, 'PUT', '/v2/del/manifests/v2', { body: img.bytes, headers: { 'Content-Type': OCI_MANIFEST } });
    const dt = await req(reg.url, 'DELETE', '/v2/del/manifests/v1');
    assert.equal(dt.status, 202);
    assert.equal((await req(reg.url, 'GET', '/v2/del/manifests/v1')).status, 404);
    assert.equal((await req(reg.url, 'GET', `/v2/del/manifests/${img.digest}`)).status, 200);
    assert.deepEqual((await req(reg.url, 'GET', '/v2/del/tags/list')).json().tags, ['v2']);
    const dd = await req(reg.url, 'DELETE', `/v2/del/manifests/${img.digest}`);
    assert.equal(dd.status, 202);
    assert.equal(errCode(await req(reg.url, 'GET', `/v2/del/manifests/${img.digest}`)), 'MANIFEST_UNKNOWN');
    assert.equal((await req(reg.url, 'GET', '/v2/del/manifests/v2')).status, 404);
    assert.deepEqual((await req(reg.url, 'GET', '/v2/del/tags/list')).json().tags, []);
    assert.equal(errCode(await req(reg.url, 'DELETE', `/v2/del/manifests/${img.digest}`)), 'MANIFEST_UNKNOWN');
    assert.equal(errCode(await req(reg.url, 'DELETE', '/v2/del/manifests/nope')), 'MANIFEST_UNKNOWN');
  });

  it('with deletion disabled, DELETE answers 405 UNSUPPORTED', async (t) => {
    const reg = await startRegistry(t, { storage: { delete: { enabled: false } } });
    const img = await pushImage(reg.url, 'nd', 'v1');
    const r = await req(reg.url, 'DELETE', `/v2/nd/manifests/${img.digest}`);
    assert.equal(r.status, 405);
    assert.equal(errCode(r), 'UNSUPPORTED');
    assert.equal((await req(reg.url, 'GET', '/v2/nd/manifests/v1')).status, 200);
  });
});

describe('registry API: tags, catalog, referrers', () => {
  it('tags list is sorted and paginated with n, last and Link', async (t) => {
    const reg = await startRegistry(t);
    const img = await pushImage(reg.url, 'tl', 'c');
    for (const tag of ['a', 'b', 'd', 'e']) await req(reg.url, 'PUT', `/v2/tl/manifests/${tag}`, { body: img.bytes, headers: { 'Content-Type': OCI_MANIFEST } });
    const all = await req(reg.url, 'GET', '/v2/tl/tags/list');
    assert.deepEqual(all.json(), { name: 'tl', tags: ['a', 'b', 'c', 'd', 'e'] });
    const p1 = await req(reg.url, 'GET', '/v2/tl/tags/list?n=2');
    assert.deepEqual(p1.json().tags, ['a', 'b']);
    assert.equal(p1.headers.get('link'), '</v2/tl/tags/list?n=2&last=b>; rel="next"');
    const p2 = await req(reg.url, 'GET', '/v2/tl/tags/list?n=2&last=b');
    assert.deepEqual(p2.json().tags, ['c', 'd']);
    const p3 = await req(reg.url, 'GET', '/v2/tl/tags/list?n=2&last=d');
    assert.deepEqual(p3.json().tags, ['e']);
    assert.equal(p3.headers.get('link'), null);
    assert.deepEqual((await req(reg.url, 'GET', '/v2/tl/tags/list?n=0')).json().tags, []);
    const u = await req(reg.url, 'GET', '/v2/unknown/tags/list');
    assert.equal(u.status, 404);
    assert.equal(errCode(u), 'NAME_UNKNOWN');
  });

  it('catalog lists nested repositories, paginated', async (t) => {
    const reg = await startRegistry(t);
    for (const r of ['b/x', 'a', 'b/x/y', 'c']) await pushImage(reg.url, r, 'v');
    assert.deepEqual((await req(reg.url, 'GET', '/v2/_catalog')).json(), { repositories: ['a', 'b/x', 'b/x/y', 'c'] });
    const p1 = await req(reg.url, 'GET', '/v2/_catalog?n=3');
    assert.deepEqual(p1.json().repositories, ['a', 'b/x', 'b/x/y']);
    assert.equal(p1.headers.get('link'), '</v2/_catalog?n=3&last=b%2Fx%2Fy>; rel="next"');
    assert.deepEqual((await req(reg.url, 'GET', '/v2/_catalog?n=3&last=b%2Fx%2Fy')).json().repositories, ['c']);
  });

  it('referrers: OCI-Subject on PUT, listing with artifactType filter, removal on delete, pagination', async (t) => {
    const reg = await startRegistry(t, { limits: { pageSize: 2 } });
    const subject = await pushImage(reg.url, 'ref', 'v1');
    const subj = { mediaType: OCI_MANIFEST, digest: subject.digest, size: subject.bytes.length };
    const sig = await pushImage(reg.url, 'ref', 'sig', { subject: subj, artifactType: 'application/vnd.example.sig', annotations: { k: 'v' } });
    const sbom = await pushImage(reg.url, 'ref', 'sbom', { subject: subj });
    const third = await pushImage(reg.url, 'ref', 'third', { subject: subj, artifactType: 'application/vnd.example.sig' });
    const put = await req(reg.url, 'PUT', `/v2/ref/manifests/${sig.digest}`, { body: sig.bytes, headers: { 'Content-Type': OCI_MANIFEST } });
    assert.equal(put.headers.get('oci-subject'), subject.digest);
    const all: any[] = [];
    let next: string | null = `/v2/ref/referrers/${subject.digest}`;
    let pages = 0;
    while (next) {
      const r = await req(reg.url, 'GET', next);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('content-type'), OCI_INDEX);
      const doc = r.json();
      assert.equal(doc.mediaType, OCI_INDEX);
      all.push(...doc.manifests);
      next = r.headers.get('link')?.match(/^<([^>]+)>/)?.[1] ?? null;
      pages++;
    }
    assert.equal(pages, 2);
    assert.deepEqual(all.map((d) => d.digest).sort(), [sig.digest, sbom.digest, third.digest].sort());
    const sigDesc = all.find((d) => d.digest === sig.digest);
    assert.equal(sigDesc.artifactType, 'application/vnd.example.sig');
    assert.deepEqual(sigDesc.annotations, { k: 'v' });
    assert.equal(sigDesc.size, sig.bytes.length);
    // artifactType falls back to the config media type
    assert.equal(all.find((d) => d.digest === sbom.digest).artifactType, 'application/vnd.oci.image.config.v1+json');
    const f = await req(reg.url, 'GET', `/v2/ref/referrers/${subject.digest}?artifactType=application/vnd.example.sig`);
    assert.equal(f.headers.get('oci-filters-applied'), 'artifactType');
    assert.deepEqual(f.json().manifests.map((d: any) => d.digest).sort(), [sig.digest, third.digest].sort());
    await req(reg.url, 'DELETE', `/v2/ref/manifests/${sig.digest}`);
    const after = await req(reg.url, 'GET', `/v2/ref/referrers/${subject.digest}?artifactType=application/vnd.example.sig`);
    assert.deepEqual(after.json().manifests.map((d: any) => d.digest), [third.digest]);
    const none = await req(reg.url, 'GET', `/v2/ref/referrers/${sha256('no subject')}`);
    assert.equal(none.status, 200);
    assert.deepEqual(none.json().manifests, []);
    assert.equal(errCode(await req(reg.url, 'GET', '/v2/ref/referrers/sha256:zz')), 'DIGEST_INVALID');
  });

  it('a referrer may be pushed before its subject', async (t) => {
    const reg = await startRegistry(t);
    const ghost = { mediaType: OCI_MANIFEST, digest: sha256('later'), size: 5 };
    const r = await pushImage(reg.url, 'early', 'att', { subject: ghost, artifactType: 'application/x-test' });
    const l = await req(reg.url, 'GET', `/v2/early/referrers/${ghost.digest}`);
    assert.deepEqual(l.json().manifests.map((d: any) => d.digest), [r.digest]);
  });
});
