/**
 * Memory stays flat for big blobs: a generated stream (never held in memory by the test
 * either) is pushed monolithically and in PATCH chunks into a real `tsregistry serve`
 * process and read back, while the server's peak RSS (VmHWM) is watched. The size is
 * 256 MiB by default (the test must stay short on a shared machine); TSIMAGE_BIG_BLOB_MIB=2048
 * runs the 2 GiB case (see notes/registry.md for the figures).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { tempDir } from '../helpers.js';
import { spawnRegistry } from './util.js';

const MIB = 1024 * 1024;

/** Deterministic pseudo-random chunks (cheap to make, not compressible by accident). */
function* chunks(total: number, seed: number): Generator<Buffer> {
  const block = Buffer.alloc(MIB);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < block.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    block.writeUInt32LE(x >>> 0, i);
  }
  for (let off = 0; off < total; off += MIB) {
    const b = Buffer.from(block);
    b.writeUInt32LE(off / MIB, 0); // every MiB differs
    yield b.subarray(0, Math.min(MIB, total - off));
  }
}

function digestOf(total: number, seed: number): string {
  const h = createHash('sha256');
  for (const c of chunks(total, seed)) h.update(c);
  return `sha256:${h.digest('hex')}`;
}

function hwmKiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

describe('memory', () => {
  it('a big blob streams through push (monolithic and chunked) and pull with flat server memory', async (t) => {
    const size = Number(process.env.TSIMAGE_BIG_BLOB_MIB ?? 256) * MIB;
    const reg = await spawnRegistry(t, tempDir(t, 'reg-mem'));
    const base = reg.url;
    // warm up (first requests load code), then take the baseline
    await request(`${base}/v2/`).then((r) => r.body.dump());
    const baseline = hwmKiB(reg.pid);

    // monolithic POST ?digest= with a streamed body
    const d1 = digestOf(size, 1);
    const r1 = await request(`${base}/v2/big/one/blobs/uploads/?digest=${d1}`, {
      method: 'POST',
      body: Readable.from(chunks(size, 1)),
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    });
    await r1.body.dump();
    assert.equal(r1.statusCode, 201);

    // chunked: PATCH 64 MiB pieces, then PUT
    const d2 = digestOf(size, 2);
    const s = await request(`${base}/v2/big/two/blobs/uploads/`, { method: 'POST' });
    await s.body.dump();
    let loc = String(s.headers.location);
    const piece = 64 * MIB;
    const all = chunks(size, 2);
    for (let off = 0; off < size; off += piece) {
      const len = Math.min(piece, size - off);
      const part = (function* () {
        let n = 0;
        while (n < len) {
          const c = all.next().value as Buffer;
          n += c.length;
          yield c;
        }
      })();
      const p = await request(base + loc, {
        method: 'PATCH',
        body: Readable.from(part),
        headers: { 'content-type': 'application/octet-stream', 'content-range': `${off}-${off + len - 1}`, 'content-length': String(len) },
      });
      await p.body.dump();
      assert.equal(p.statusCode, 202);
      loc = String(p.headers.location);
    }
    const f = await request(`${base}${loc}${loc.includes('?') ? '&' : '?'}digest=${d2}`, { method: 'PUT' });
    await f.body.dump();
    assert.equal(f.statusCode, 201);

    // pull both back, hashing as they come
    for (const [repo, d] of [
      ['big/one', d1],
      ['big/two', d2],
    ] as const) {
      const g = await request(`${base}/v2/${repo}/blobs/${d}`);
      assert.equal(g.statusCode, 200);
      assert.equal(Number(g.headers['content-length']), size);
      const h = createHash('sha256');
      for await (const c of g.body) h.update(c as Buffer);
      assert.equal(`sha256:${h.digest('hex')}`, d);
    }
    const peak = hwmKiB(reg.pid);
    const growthMiB = (peak - baseline) / 1024;
    t.diagnostic(`blob ${size / MIB} MiB x2 in and out: server peak RSS ${(peak / 1024).toFixed(0)} MiB, growth over baseline ${growthMiB.toFixed(0)} MiB`);
    assert.ok(growthMiB < 96, `server memory grew by ${growthMiB.toFixed(0)} MiB while streaming ${size / MIB} MiB blobs`);
  });
});
