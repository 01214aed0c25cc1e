/**
 * `tsregistry serve` as a process: prints where it listens, and on SIGTERM stops accepting
 * but finishes the request in flight (a slow chunked upload) before exiting 0.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { tempDir } from '../helpers.js';
import { sha256 } from './util.js';
import { spawnRegistry } from './util.js';

describe('tsregistry serve', () => {
  it('SIGTERM finishes the in-flight upload, refuses new connections, exits 0', async (t) => {
    const t0 = performance.now();
    const root = tempDir(t, 'reg-serve');
    const reg = await spawnRegistry(t, root);
    t.diagnostic(`listening after ${Math.round(performance.now() - t0)} ms (process start included)`);
    const s = await fetch(`${reg.url}/v2/slow/one/blobs/uploads/`, { method: 'POST' });
    assert.equal(s.status, 202);
    const loc = s.headers.get('location')!;
    const u = new URL(reg.url);
    const parts = [1, 2, 3, 4, 5, 6].map((n) => Buffer.alloc(100_000, n));
    const total = Buffer.concat(parts);

    // a PATCH whose body arrives slowly; SIGTERM lands in the middle of it
    const done = new Promise<{ status: number; range: string | undefined }>((resolve, reject) => {
      const rq = httpRequest(
        { host: u.hostname, port: u.port, method: 'PATCH', path: loc, headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': total.length } },
        (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, range: res.headers.range as string | undefined }));
        },
      );
      rq.on('error', reject);
      (async () => {
        for (const p of parts) {
          rq.write(p);
          await new Promise((r) => setTimeout(r, 400));
          if (p === parts[0]) process.kill(reg.pid, 'SIGTERM');
        }
        rq.end();
      })().catch(reject);
    });
    // new connections are refused while the upload finishes (polled: a loaded machine delays the signal)
    const tryConnect = () =>
      new Promise<boolean>((resolve) => {
        const g = httpRequest({ host: u.hostname, port: u.port, path: '/v2/', agent: false }, (res) => {
          res.resume();
          resolve(false);
        });
        g.on('error', () => resolve(true));
        g.end();
      });
    let refused = false;
    let finished = false;
    done.finally(() => (finished = true)).catch(() => {});
    while (!finished && !refused) {
      await new Promise((r) => setTimeout(r, 50));
      refused = await tryConnect();
    }
    assert.ok(refused, 'a new connection was refused while the in-flight upload was still running');
    const r = await done;
    assert.equal(r.status, 202, 'the in-flight request completed');
    assert.equal(r.range, `0-${total.length - 1}`);
    const code = await new Promise<number | null>((resolve) => {
      if (reg.child.exitCode !== null || reg.child.signalCode !== null) resolve(reg.child.exitCode);
      else reg.child.once('exit', (c) => resolve(c));
    });
    assert.equal(code, 0, 'clean exit');
    // the data is there after a restart, and the upload can be finished
    const again = await spawnRegistry(t, root);
    const d = sha256(total);
    const f = await fetch(`${again.url}${loc}${loc.includes('?') ? '&' : '?'}digest=${d}`, { method: 'PUT' });
    assert.equal(f.status, 201);
    const g = await fetch(`${again.url}/v2/slow/one/blobs/${d}`);
    assert.equal(sha256(Buffer.from(await g.arrayBuffer())), d);
  });
});
