/**
 * Durability: 10 clients push concurrently (monolithic and chunked uploads, shared blobs,
 * shared and own tags) into a real `tsregistry serve` process that is `kill -9`ed at random
 * moments, three times, and restarted on the same storage. Afterwards every acknowledged
 * blob and manifest is readable with the right digest, every tag points to a whole image,
 * and `tsregistry scrub` finds nothing corrupt.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, tempDir } from '../helpers.js';
import { ACCEPT_ALL, OCI_MANIFEST, sha256 } from './util.js';
import { spawnRegistry } from './util.js';

type Acked = { blobs: Map<string, string>; manifests: Map<string, { repo: string; tag: string }>; tried: Set<string> };

async function put(base: string, path: string, body: Buffer, headers: Record<string, string>, signal: AbortSignal): Promise<Response> {
  return fetch(base + path, { method: 'PUT', body, headers, signal });
}

async function pushBlob(base: string, repo: string, data: Buffer, chunked: boolean, signal: AbortSignal): Promise<string> {
  const d = sha256(data);
  const s = await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST', signal });
  await s.arrayBuffer();
  if (s.status !== 202) throw new Error(`POST ${s.status}`);
  let loc = s.headers.get('location')!;
  if (chunked) {
    const half = data.length >> 1;
    for (const [a, b] of [
      [0, half],
      [half, data.length],
    ] as const) {
      const p = await fetch(base + loc, {
        method: 'PATCH',
        body: data.subarray(a, b),
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${a}-${b - 1}` },
        signal,
      });
      await p.arrayBuffer();
      if (p.status !== 202) throw new Error(`PATCH ${p.status}`);
      loc = p.headers.get('location')!;
    }
    const f = await put(base, `${loc}${loc.includes('?') ? '&' : '?'}digest=${d}`, Buffer.alloc(0), {}, signal);
    await f.arrayBuffer();
    if (f.status !== 201) throw new Error(`PUT ${f.status}`);
  } else {
    const f = await put(base, `${loc}${loc.includes('?') ? '&' : '?'}digest=${d}`, data, { 'Content-Type': 'application/octet-stream' }, signal);
    await f.arrayBuffer();
    if (f.status !== 201) throw new Error(`PUT ${f.status}`);
  }
  return d;
}

/** One client: push images until aborted; record what the registry acknowledged. */
async function client(base: () => string, i: number, shared: Buffer, acked: Acked, signal: AbortSignal): Promise<void> {
  let n = 0;
  while (!signal.aborted) {
    n++;
    const repo = i % 3 === 0 ? 'dur/shared' : `dur/c${i}`;
    try {
      const b = base();
      const layers: { mediaType: string; digest: string; size: number }[] = [];
      for (const data of [shared, randomBytes(randomInt(1000, 300_000))]) {
        const d = await pushBlob(b, repo, data, (n + i) % 2 === 0, signal);
        acked.blobs.set(`${repo}@${d}`, d);
        layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d, size: data.length });
      }
      const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, c: i, n }));
      const cd = await pushBlob(b, repo, cfg, false, signal);
      acked.blobs.set(`${repo}@${cd}`, cd);
      const m = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cd, size: cfg.length }, layers }));
      const md = sha256(m);
      const tag = n % 4 === 0 ? 'latest' : `c${i}-${n}`;
      acked.tried.add(md);
      const r = await put(b, `/v2/${repo}/manifests/${tag}`, m, { 'Content-Type': OCI_MANIFEST }, signal);
      await r.arrayBuffer();
      if (r.status !== 201) throw new Error(`PUT manifest ${r.status}`);
      acked.manifests.set(md, { repo, tag });
    } catch {
      // the server was killed under us: try again once it is back
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

describe('durability', () => {
  it('10 concurrent pushers and kill -9 at random moments: everything acknowledged survives, nothing corrupt is visible', async (t) => {
    const root = tempDir(t, 'reg-dur');
    const acked: Acked = { blobs: new Map(), manifests: new Map(), tried: new Set() };
    const shared = randomBytes(200_000);
    let reg = await spawnRegistry(t, root);
    const stop = new AbortController();
    const clients = Array.from({ length: 10 }, (_, i) => client(() => reg.url, i, shared, acked, stop.signal));
    for (let round = 0; round < 3; round++) {
      // kill at a random moment, but only once the load has made progress since the restart
      // (a loaded machine can take seconds to bring 10 clients back)
      const start = acked.manifests.size;
      const until = Date.now() + 30_000;
      while (acked.manifests.size < start + 4 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, randomInt(0, 1000)));
      const before = acked.manifests.size;
      process.kill(reg.pid, 'SIGKILL');
      await reg.stop('SIGKILL');
      reg = await spawnRegistry(t, root);
      t.diagnostic(`round ${round}: killed after ${before} acknowledged manifests`);
    }
    await new Promise((r) => setTimeout(r, 1500));
    stop.abort();
    await Promise.allSettled(clients);
    assert.ok(acked.manifests.size >= 10, `the load must have pushed something (${acked.manifests.size} manifests)`);

    // a fresh process on the same storage (nothing cached in memory)
    await reg.stop('SIGKILL');
    reg = await spawnRegistry(t, root);
    for (const [key, d] of acked.blobs) {
      const repo = key.slice(0, key.indexOf('@'));
      const r = await fetch(`${reg.url}/v2/${repo}/blobs/${d}`);
      const body = Buffer.from(await r.arrayBuffer());
      assert.equal(r.status, 200, `acknowledged blob ${key}`);
      assert.equal(sha256(body), d);
    }
    for (const [d, { repo }] of acked.manifests) {
      const r = await fetch(`${reg.url}/v2/${repo}/manifests/${d}`, { headers: { Accept: ACCEPT_ALL } });
      const body = Buffer.from(await r.arrayBuffer());
      assert.equal(r.status, 200, `acknowledged manifest ${repo}@${d}`);
      assert.equal(sha256(body), d);
    }
    // every tag points to a manifest some client sent, and that image is whole
    for (const repo of new Set([...acked.manifests.values()].map((m) => m.repo))) {
      const tags = ((await (await fetch(`${reg.url}/v2/${repo}/tags/list`)).json()) as { tags: string[] }).tags;
      for (const tag of tags) {
        const r = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, { headers: { Accept: ACCEPT_ALL } });
        const body = Buffer.from(await r.arrayBuffer());
        assert.equal(r.status, 200, `${repo}:${tag}`);
        assert.ok(acked.tried.has(sha256(body)), `${repo}:${tag} points to a manifest a client sent`);
        const doc = JSON.parse(body.toString('utf8'));
        for (const b of [doc.config, ...doc.layers]) assert.equal((await fetch(`${reg.url}/v2/${repo}/blobs/${b.digest}`, { method: 'HEAD' })).status, 200);
      }
    }
    await reg.stop();
    const scrub = spawnSync(process.execPath, [join(ROOT, 'bin', 'tsregistry.js'), 'scrub', '--root', root, '--format', 'json'], { encoding: 'utf8' });
    assert.equal(scrub.status, 0, scrub.stdout + scrub.stderr);
    t.diagnostic(`verified ${acked.blobs.size} blobs and ${acked.manifests.size} manifests; scrub: ${JSON.parse(scrub.stdout).blobsChecked} blobs clean`);
  });
});
