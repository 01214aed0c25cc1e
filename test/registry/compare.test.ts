/**
 * The same request sequence against tsregistry and distribution (docker-registry 2.8):
 * tsregistry must answer what the OCI distribution spec says; distribution must answer the
 * same except in the listed places where it breaks the spec (each one checked to still differ).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { OCI_MANIFEST, OCI_INDEX, blob, errCode, req, sha256, startDistribution, startRegistry, type Res } from './util.js';

type Step = { step: string; status: number; code?: string | undefined };

/** Where distribution 2.8.2 deviates from the OCI distribution spec v1.1 (step -> why). */
const DISTRIBUTION_DEVIATIONS: Record<string, string> = {
  'PATCH out of order': 'distribution 2.8 ignores Content-Range on PATCH and appends (spec: 416)',
  'POST ?digest= monolithic': 'distribution 2.8 opens a session (202) instead of completing a single-POST upload (spec: 201)',
  'mount without from': 'distribution 2.8 does not mount without from= (202 session); the spec allows 201 here',
  'GET OCI manifest without Accept': 'distribution 2.8 answers 404 MANIFEST_UNKNOWN for an OCI manifest unless Accept lists the OCI type',
  'referrers': 'distribution 2.8 has no referrers API (404)',
  'referrers of unknown subject': 'distribution 2.8 has no referrers API (404)',
  'DELETE tag': 'distribution 2.8 refuses DELETE by tag (400 DIGEST_INVALID); spec v1.1: 202',
  'GET after DELETE tag': 'follows from DELETE tag being refused (the tag is still there)',
  'invalid repository name': 'distribution 2.8 answers 500 for an upper-case repository name (spec: 400 NAME_INVALID)',
  'PUT manifest over size limit': 'distribution 2.8 answers 400 MANIFEST_INVALID for a manifest over 4 MiB (spec: 413)',
};

async function scenario(base: string): Promise<Step[]> {
  const out: Step[] = [];
  const rec = (step: string, r: Res) => out.push({ step, status: r.status, code: r.status >= 400 ? errCode(r) : undefined });
  const repo = `cmp/r${randomBytes(3).toString('hex')}`;
  const octet = { 'Content-Type': 'application/octet-stream' };
  rec('GET /v2/', await req(base, 'GET', '/v2/'));
  rec('HEAD unknown blob', await req(base, 'HEAD', `/v2/${repo}/blobs/${sha256('none')}`));
  rec('GET unknown blob', await req(base, 'GET', `/v2/${repo}/blobs/${sha256('none')}`));
  const b = blob(20_000);
  const s = await req(base, 'POST', `/v2/${repo}/blobs/uploads/`);
  rec('POST start upload', s);
  const loc = new URL(s.headers.get('location')!, base);
  const path = loc.pathname + loc.search;
  const sep = loc.search ? '&' : '?';
  const p1 = await req(base, 'PATCH', path, { body: b.data.subarray(0, 10_000), headers: { ...octet, 'Content-Range': '0-9999' } });
  rec('PATCH chunk', p1);
  const loc2 = new URL(p1.headers.get('location')!, base);
  const path2 = loc2.pathname + loc2.search;
    rec('GET upload status', await req(base, 'GET', path2));
  const ooo = await req(base, 'PATCH', path2, { body: b.data.subarray(15_000, 20_000), headers: { ...octet, 'Content-Range': '15000-19999' } });
  rec('PATCH out of order', ooo);
  void sep;
  const sw = await req(base, 'POST', `/v2/${repo}/blobs/uploads/`);
  const lw = new URL(sw.headers.get('location')!, base);
  rec('PUT wrong digest', await req(base, 'PUT', `${lw.pathname}${lw.search}${lw.search ? '&' : '?'}digest=${sha256('wrong')}`, { body: b.data, headers: octet }));
  // a clean session
  const s2 = await req(base, 'POST', `/v2/${repo}/blobs/uploads/`);
  const l2 = new URL(s2.headers.get('location')!, base);
  const p2 = await req(base, 'PATCH', l2.pathname + l2.search, { body: b.data, headers: { ...octet, 'Content-Range': `0-${b.data.length - 1}` } });
  const l3 = new URL(p2.headers.get('location')!, base);
  rec('PUT finish', await req(base, 'PUT', `${l3.pathname}${l3.search}${l3.search ? '&' : '?'}digest=${b.digest}`, { headers: octet }));
  rec('HEAD blob', await req(base, 'HEAD', `/v2/${repo}/blobs/${b.digest}`));
  rec('GET blob range', await req(base, 'GET', `/v2/${repo}/blobs/${b.digest}`, { headers: { Range: 'bytes=0-99' } }));
  const mono = blob(3000);
  rec('POST ?digest= monolithic', await req(base, 'POST', `/v2/${repo}/blobs/uploads/?digest=${mono.digest}`, { body: mono.data, headers: octet }));
  rec('mount from', await req(base, 'POST', `/v2/${repo}-m/blobs/uploads/?mount=${b.digest}&from=${repo}`));
  rec('mount from missing', await req(base, 'POST', `/v2/${repo}-m/blobs/uploads/?mount=${sha256('nope')}&from=${repo}`));
  rec('mount without from', await req(base, 'POST', `/v2/${repo}-n/blobs/uploads/?mount=${b.digest}`));
  // manifests
  const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const cfgS = await req(base, 'POST', `/v2/${repo}/blobs/uploads/`);
  const cl = new URL(cfgS.headers.get('location')!, base);
  await req(base, 'PUT', `${cl.pathname}${cl.search}${cl.search ? '&' : '?'}digest=${sha256(cfg)}`, { body: cfg, headers: octet });
  const man = (layer: string) =>
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(cfg), size: cfg.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer, size: 20_000 }],
      }),
    );
  const mt = { 'Content-Type': OCI_MANIFEST };
  rec('PUT manifest missing blob', await req(base, 'PUT', `/v2/${repo}/manifests/v1`, { body: man(sha256('missing')), headers: mt }));
  rec('PUT manifest invalid', await req(base, 'PUT', `/v2/${repo}/manifests/v1`, { body: '{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST + '","layers":"x"}', headers: mt }));
  const good = man(b.digest);
  rec('PUT manifest by tag', await req(base, 'PUT', `/v2/${repo}/manifests/v1`, { body: good, headers: mt }));
  rec('PUT manifest wrong digest', await req(base, 'PUT', `/v2/${repo}/manifests/${sha256('x')}`, { body: good, headers: mt }));
  rec('GET manifest with Accept', await req(base, 'GET', `/v2/${repo}/manifests/v1`, { headers: { Accept: OCI_MANIFEST } }));
  rec('GET OCI manifest without Accept', await req(base, 'GET', `/v2/${repo}/manifests/v1`));
  rec('HEAD manifest by digest', await req(base, 'HEAD', `/v2/${repo}/manifests/${sha256(good)}`, { headers: { Accept: OCI_MANIFEST } }));
  rec('GET unknown manifest', await req(base, 'GET', `/v2/${repo}/manifests/nope`, { headers: { Accept: OCI_MANIFEST } }));
  rec('PUT manifest over size limit', await req(base, 'PUT', `/v2/${repo}/manifests/big`, { body: Buffer.alloc(4 * 1024 * 1024 + 10, 32), headers: mt }));
  rec('tags list', await req(base, 'GET', `/v2/${repo}/tags/list`));
  rec('tags list unknown repo', await req(base, 'GET', `/v2/${repo}-unknown/tags/list`));
  rec('catalog', await req(base, 'GET', '/v2/_catalog?n=10'));
  rec('referrers', await req(base, 'GET', `/v2/${repo}/referrers/${sha256(good)}`));
  rec('referrers of unknown subject', await req(base, 'GET', `/v2/${repo}/referrers/${sha256('nobody')}`));
  await req(base, 'PUT', `/v2/${repo}/manifests/v2`, { body: good, headers: mt });
  rec('DELETE tag', await req(base, 'DELETE', `/v2/${repo}/manifests/v2`));
  rec('GET after DELETE tag', await req(base, 'GET', `/v2/${repo}/manifests/v2`, { headers: { Accept: OCI_MANIFEST } }));
  rec('DELETE manifest by digest', await req(base, 'DELETE', `/v2/${repo}/manifests/${sha256(good)}`));
  rec('GET deleted manifest', await req(base, 'GET', `/v2/${repo}/manifests/${sha256(good)}`, { headers: { Accept: OCI_MANIFEST } }));
  rec('DELETE blob', await req(base, 'DELETE', `/v2/${repo}/blobs/${b.digest}`));
  rec('HEAD deleted blob', await req(base, 'HEAD', `/v2/${repo}/blobs/${b.digest}`));
  const s3 = await req(base, 'POST', `/v2/${repo}/blobs/uploads/`);
  const l4 = new URL(s3.headers.get('location')!, base);
  rec('DELETE upload', await req(base, 'DELETE', l4.pathname + l4.search));
  rec('GET cancelled upload', await req(base, 'GET', l4.pathname + l4.search));
  rec('invalid repository name', await req(base, 'GET', `/v2/UPPER/case/tags/list`));
  void OCI_INDEX;
  return out;
}

/** What the OCI distribution spec v1.1 says for each step. */
const SPEC: Record<string, number> = {
  'GET /v2/': 200,
  'HEAD unknown blob': 404,
  'GET unknown blob': 404,
  'POST start upload': 202,
  'PATCH chunk': 202,
  'GET upload status': 204,
  'PATCH out of order': 416,
  'PUT wrong digest': 400,
  'PUT finish': 201,
  'HEAD blob': 200,
  'GET blob range': 206,
  'POST ?digest= monolithic': 201,
  'mount from': 201,
  'mount from missing': 202,
  'mount without from': 201,
  'PUT manifest missing blob': 400,
  'PUT manifest invalid': 400,
  'PUT manifest by tag': 201,
  'PUT manifest wrong digest': 400,
  'GET manifest with Accept': 200,
  'GET OCI manifest without Accept': 200,
  'HEAD manifest by digest': 200,
  'GET unknown manifest': 404,
  'PUT manifest over size limit': 413,
  'tags list': 200,
  'tags list unknown repo': 404,
  catalog: 200,
  referrers: 200,
  'referrers of unknown subject': 200,
  'DELETE tag': 202,
  'GET after DELETE tag': 404,
  'DELETE manifest by digest': 202,
  'GET deleted manifest': 404,
  'DELETE blob': 202,
  'HEAD deleted blob': 404,
  'DELETE upload': 204,
  'GET cancelled upload': 404,
  'invalid repository name': 400,
};

describe('tsregistry vs distribution: same requests, same answers (except distribution spec deviations)', () => {
  it('status codes and error codes', async (t) => {
    const ours = await startRegistry(t);
    const dist = await startDistribution(t);
    const a = await scenario(ours.url);
    const b = await scenario(dist.url);
    assert.deepEqual(
      a.filter((s) => s.status !== SPEC[s.step]).map((s) => `${s.step}: ${s.status} ${s.code ?? ''}`),
      [],
      'tsregistry answers what the spec says',
    );
    assert.equal(a.length, Object.keys(SPEC).length);
    const differ: string[] = [];
    for (let i = 0; i < a.length; i++) {
      const x = a[i]!;
      const y = b[i]!;
      assert.equal(x.step, y.step);
      if (x.status !== y.status || (x.code !== y.code && x.status >= 400)) differ.push(x.step);
    }
    const report = differ.map((s) => `${s}: ours ${a.find((x) => x.step === s)!.status} ${a.find((x) => x.step === s)!.code ?? ''} / distribution ${b.find((x) => x.step === s)!.status} ${b.find((x) => x.step === s)!.code ?? ''}`);
    console.log(`differences from distribution 2.8:\n  ${report.join('\n  ')}`);
    assert.deepEqual(differ.sort(), Object.keys(DISTRIBUTION_DEVIATIONS).sort(), 'every difference is a known distribution deviation, and every listed deviation still differs');
  });
});
