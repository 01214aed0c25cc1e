/**
 * Online GC under load: a real tsregistry process runs GC (with deleteUntagged) every 200 ms
 * with a 2 s grace period while 10 clients push images (shared and own layers, blobs pushed
 * a little before their manifest, existing blobs skipped after a HEAD as real clients do)
 * and delete their older tags, making garbage all the time. Nothing any live tag references
 * is ever lost, and garbage is really collected.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { ACCEPT_ALL, OCI_MANIFEST, errCode, req, sha256 } from '../registry/util.js';
import { startTsregistry } from './util.js';

async function ensureBlob(base: string, repo: string, data: Buffer): Promise<string> {
  const d = sha256(data);
  if ((await req(base, 'HEAD', `/v2/${repo}/blobs/${d}`)).status === 200) return d;
  const s = await req(base, 'POST', `/v2/${repo}/blobs/uploads/`);
  const loc = s.headers.get('location')!;
  const p = await req(base, 'PUT', `${loc}${loc.includes('?') ? '&' : '?'}digest=${d}`, { body: data, headers: { 'Content-Type': 'application/octet-stream' } });
  if (p.status !== 201) throw new Error(`PUT blob ${p.status} ${p.text}`);
  return d;
}

describe('online GC under load', () => {
  it('GC every 200 ms during 10 concurrent pushers that also delete tags: nothing referenced is lost', async (t) => {
    const reg = await startTsregistry(t, { log: { access: false }, gc: { interval: '200ms', gracePeriod: '2s', deleteUntagged: true } });
    const base = reg.url;
    const sharedAll = randomBytes(50_000);
    const live = new Map<string, { repo: string; tag: string; digest: string; blobs: string[] }>();
    let refused = 0;
    let pushed = 0;
    const deadline = Date.now() + 5000;
    const client = async (i: number): Promise<void> => {
      const repo = `load/c${i % 5}`;
      const own = randomBytes(30_000); // reused by this client's images
      const mine: string[] = [];
      let n = 0;
      while (Date.now() < deadline) {
        n++;
        const tag = `c${i}-${n}`;
        const fresh = randomBytes(randomInt(1000, 20_000));
        const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, i, n }));
        for (let attempt = 0; ; attempt++) {
          const layers = [];
          for (const data of [sharedAll, own, fresh]) layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: await ensureBlob(base, repo, data), size: data.length });
          const cd = await ensureBlob(base, repo, cfg);
          await new Promise((r) => setTimeout(r, randomInt(0, 300))); // blobs ahead of the manifest (well within the grace period)
          const m = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cd, size: cfg.length }, layers }));
          const r = await req(base, 'PUT', `/v2/${repo}/manifests/${tag}`, { body: m, headers: { 'Content-Type': OCI_MANIFEST } });
          if (r.status === 201) {
            pushed++;
            live.set(`${repo}:${tag}`, { repo, tag, digest: sha256(m), blobs: [cd, ...layers.map((l) => l.digest)] });
            mine.push(tag);
            break;
          }
          // a blob HEAD said present and GC took it before the PUT: refused cleanly, push again
          assert.equal(errCode(r), 'MANIFEST_BLOB_UNKNOWN', `PUT manifest: ${r.status} ${r.text}`);
          refused++;
          assert.ok(attempt < 5, 'a push keeps being refused');
        }
        // keep the two newest tags; the rest becomes garbage
        while (mine.length > 2) {
          const old = mine.shift()!;
          const d = await req(base, 'DELETE', `/v2/${repo}/manifests/${old}`);
          assert.equal(d.status, 202);
          live.delete(`${repo}:${old}`);
        }
      }
    };
    await Promise.all(Array.from({ length: 10 }, (_, i) => client(i)));
    await new Promise((r) => setTimeout(r, 2500)); // garbage from the last pushes passes the grace period; GC runs again

    for (const img of live.values()) {
      const m = await req(base, 'GET', `/v2/${img.repo}/manifests/${img.tag}`, { headers: { Accept: ACCEPT_ALL } });
      assert.equal(m.status, 200, `${img.repo}:${img.tag}`);
      assert.equal(sha256(m.body), img.digest);
      for (const b of img.blobs) {
        const g = await req(base, 'GET', `/v2/${img.repo}/blobs/${b}`);
        assert.equal(g.status, 200, `${img.repo}:${img.tag} blob ${b}`);
        assert.equal(sha256(g.body), b);
      }
    }
    const metrics = (await req(base, 'GET', '/metrics')).text;
    const runs = Number(/tsregistry_gc_runs_total\{result="ok"\} (\d+)/.exec(metrics)?.[1] ?? 0);
    const deleted = Number(/tsregistry_gc_blobs_deleted_total (\d+)/.exec(metrics)?.[1] ?? 0);
    const mdeleted = Number(/tsregistry_gc_manifests_deleted_total (\d+)/.exec(metrics)?.[1] ?? 0);
    t.diagnostic(`${pushed} images pushed, ${live.size} live, ${runs} GC runs, ${deleted} blobs and ${mdeleted} manifests collected, ${refused} pushes refused and retried`);
    assert.ok(runs >= 10, `GC ran during the load (${runs})`);
    assert.ok(deleted > 0 && mdeleted > 0, 'garbage was collected');
    assert.doesNotMatch(metrics, /tsregistry_gc_runs_total\{result="error"\} [1-9]/);
  });
});
