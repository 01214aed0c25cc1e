/**
 * Fault tests with real processes: the registry (tsregistry, distribution) is SIGKILLed and restarted on the
 * same port and storage in the middle of a large blob download (which resumes with Range from the bytes
 * received) and of a chunked upload (which resumes from the registry's upload status); a 429 with Retry-After
 * (and a reset connection, and a 503) from a small node:http proxy in front of the registry are retried and
 * the waits honoured.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { tempDir, freePort, requireTool, PEERS } from '../helpers.js';
import { startTsregistry } from '../registry-prod/util.js';
import { RegistryClient } from '../../src/copy/index.js';
import type { Digest } from '../../src/oci/index.js';
import { digestOf } from '../../src/oci/digest.js';

const sha = (b: Buffer | string) => digestOf(b);
type T = Parameters<typeof tempDir>[0];

interface Restartable {
  addr: string;
  kill(): Promise<void>;
  start(): Promise<void>;
}

async function tsregistry(t: T): Promise<Restartable> {
  const dir = tempDir(t, 'fault-ts');
  const root = join(dir, 'data');
  let p = await startTsregistry(t, { log: { access: false } }, { dir, root });
  const addr = p.addr;
  return {
    addr,
    kill: () => p.stop('SIGKILL'),
    start: async () => {
      p = await startTsregistry(t, { log: { access: false } }, { dir, root, addr });
    },
  };
}

/** distribution with a fixed HTTP secret (as any real deployment has), so upload state survives a restart. */
async function distribution(t: T): Promise<Restartable> {
  requireTool('docker-registry');
  const store = tempDir(t, 'fault-dist');
  mkdirSync(store, { recursive: true });
  const addr = `127.0.0.1:${await freePort()}`;
  const secret = randomBytes(16).toString('hex');
  let child: ReturnType<typeof spawn> | undefined;
  const start = async () => {
    child = spawn('docker-registry', ['serve', join(PEERS, 'distribution.yml')], {
      stdio: 'ignore',
      env: { ...process.env, REGISTRY_HTTP_ADDR: addr, REGISTRY_HTTP_SECRET: secret, REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: store },
    });
    for (let i = 0; i < 100; i++) {
      const ok = await fetch(`http://${addr}/v2/`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('distribution did not start');
  };
  const kill = async () => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await exited;
  };
  t.after(kill);
  await start();
  return { addr, kill, start };
}

const kinds = { tsregistry, distribution } as const;

for (const [kind, make] of Object.entries(kinds)) {
  describe(`registry killed and restarted mid-transfer (${kind})`, () => {
    it('a large blob download resumes with Range and completes, verified', async (t) => {
      const reg = await make(t);
      const c = new RegistryClient(reg.addr, { tlsVerify: false, retryTimes: 8, retryDelayMs: 100 });
      t.after(() => c.close());
      const data = randomBytes(40 * 1024 * 1024);
      const d = sha(data);
      await c.putBlob('big/blob', { digest: d, size: data.length }, Readable.from([data]));
      const s = await c.getBlob('big/blob', { digest: d, size: data.length });
      const it = s[Symbol.asyncIterator]();
      const got: Buffer[] = [];
      let n = 0;
      while (n < 4 * 1024 * 1024) {
        const r = await it.next();
        assert.ok(!r.done);
        got.push(r.value);
        n += r.value.length;
      }
      await reg.kill();
      const restarted = (async () => {
        await new Promise((r) => setTimeout(r, 300));
        await reg.start();
      })();
      for (;;) {
        const r = await it.next();
        if (r.done) break;
        got.push(r.value);
      }
      await restarted;
      const all = Buffer.concat(got);
      assert.equal(all.length, data.length);
      assert.ok(all.equals(data), 'same bytes after the resume');
      assert.ok(c.stats.resumedDownloads >= 1, `resumed (${JSON.stringify(c.stats)})`);
    });

    for (const mode of kind === 'tsregistry' ? (['streaming', 'chunked'] as const) : (['streaming'] as const)) {
      it(`an interrupted upload (${mode === 'streaming' ? 'one streaming PATCH, source reopened at the offset' : 'PATCH chunks retained until acknowledged'}) resumes from the upload status`, async (t) => {
        const reg = await make(t);
        const c = new RegistryClient(reg.addr, { tlsVerify: false, retryTimes: 8, retryDelayMs: 100, chunkSize: 4 * 1024 * 1024 });
        t.after(() => c.close());
        const data = randomBytes(24 * 1024 * 1024);
        const d = sha(data);
        let release!: () => void;
        const gate = new Promise<void>((r) => (release = r));
        let reached!: () => void;
        const atGate = new Promise<void>((r) => (reached = r));
        async function* body() {
          const piece = 512 * 1024;
          for (let i = 0; i < data.length; i += piece) {
            if (i === 10 * 1024 * 1024) {
              reached();
              await gate;
            }
            yield data.subarray(i, i + piece);
          }
        }
        const reopened: number[] = [];
        const io =
          mode === 'streaming'
            ? {
                reopen: async (start: number) => {
                  reopened.push(start);
                  return Readable.from([data.subarray(start)]);
                },
              }
            : {};
        const upload = c.putBlob('big/up', { digest: d, size: data.length }, body(), io);
        await atGate;
        await new Promise((r) => setTimeout(r, 100)); // let the in-flight PATCH carry some bytes
        await reg.kill();
        await new Promise((r) => setTimeout(r, 300));
        await reg.start();
        release();
        const info = await upload;
        assert.deepEqual(info, { digest: d, size: data.length });
        if (kind === 'tsregistry') {
          assert.ok(c.stats.resumedUploads >= 1 && c.stats.restartedUploads === 0, `resumed (${JSON.stringify(c.stats)})`);
          if (mode === 'streaming') {
            assert.equal(c.stats.patches, 2, 'one PATCH, one more after the resume');
            assert.ok(reopened[0]! > 0 && reopened[0]! <= 10 * 1024 * 1024, `reopened at the registry's offset (${reopened.join(',')})`);
          }
        } else {
          // distribution cancels a session whose file holds more than its last acknowledged state: start again
          assert.ok(c.stats.resumedUploads + c.stats.restartedUploads >= 1, `resumed or restarted (${JSON.stringify(c.stats)})`);
        }
        const back = await c.getBlobBytes('big/up', { digest: d, size: data.length }, { limit: data.length });
        assert.ok(back.equals(data));
      });
    }
  });
}

/** A proxy in front of a registry whose `fault(req, n)` may answer instead of forwarding. */
async function proxy(t: T, target: string, fault: (req: IncomingMessage, res: ServerResponse, n: number) => boolean) {
  let n = 0;
  const log: { t: number; method: string; url: string; faulted: boolean }[] = [];
  const server = createServer((req, res) => {
    const faulted = fault(req, res, n++);
    log.push({ t: Date.now(), method: req.method!, url: req.url!, faulted });
    if (faulted) return;
    const up = httpRequest(`http://${target}${req.url}`, { method: req.method, headers: { ...req.headers, host: target } }, (r) => {
      res.writeHead(r.statusCode!, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  t.after(() => server.closeAllConnections());
  const a = server.address() as { port: number };
  return { addr: `127.0.0.1:${a.port}`, log };
}

describe('retries through a misbehaving proxy', () => {
  it('honours Retry-After on 429, backs off on 503, retries a reset connection', async (t) => {
    const reg = await startTsregistry(t, { log: { access: false } });
    const seed = new RegistryClient(reg.addr, { tlsVerify: false });
    t.after(() => seed.close());
    const cfg = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
    await seed.putBlob('p/app', { digest: sha(cfg), size: cfg.length }, Readable.from([cfg]));
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(cfg), size: cfg.length }, layers: [] }));
    await seed.putManifest('p/app', 'v1', manifest, 'application/vnd.oci.image.manifest.v1+json');

    let manifestGets = 0;
    let blobGets = 0;
    let tagGets = 0;
    const px = await proxy(t, reg.addr, (req, res) => {
      if (req.method === 'GET' && req.url!.includes('/manifests/') && manifestGets++ < 2) {
        res.writeHead(429, { 'retry-after': '1', 'content-type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: 'slow down' }] }));
        return true;
      }
      if (req.method === 'GET' && req.url!.includes('/blobs/') && blobGets++ < 1) {
        req.socket.destroy(); // connection reset
        return true;
      }
      if (req.method === 'GET' && req.url!.includes('/tags/') && tagGets++ < 2) {
        res.writeHead(503);
        res.end('maintenance');
        return true;
      }
      return false;
    });
    const c = new RegistryClient(px.addr, { tlsVerify: false, retryTimes: 3, retryDelayMs: 50 });
    t.after(() => c.close());
    const t0 = Date.now();
    const m = await c.getManifest('p/app', 'v1');
    const took = Date.now() - t0;
    assert.ok(m.bytes.equals(manifest));
    assert.ok(took >= 1900, `two Retry-After: 1 waits honoured (took ${took} ms)`);
    const mlog = px.log.filter((l) => l.url.includes('/manifests/'));
    assert.equal(mlog.length, 3);
    assert.ok(mlog[1]!.t - mlog[0]!.t >= 950 && mlog[2]!.t - mlog[1]!.t >= 950, 'each retry waited the asked second');

    const cfgBack = await c.getBlobBytes('p/app', { digest: sha(cfg), size: cfg.length });
    assert.ok(cfgBack.equals(cfg), 'blob read after a reset connection');
    assert.deepEqual(await c.listTags('p/app'), ['v1']);
    assert.equal(tagGets, 3);

    // more 429s than retryTimes: the error says so and is marked temporary
    manifestGets = -10;
    const c2 = new RegistryClient(px.addr, { tlsVerify: false, retryTimes: 1, maxRetryDelayMs: 50 });
    t.after(() => c2.close());
    await assert.rejects(c2.getManifest('p/app', 'v1'), (e: any) => e.code === 'TOOMANYREQUESTS' && e.temporary === true && /429/.test(e.message));
  });
});
