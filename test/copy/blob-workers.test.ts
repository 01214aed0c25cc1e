/**
 * Blob download workers (src/copy/registry/blob-workers.ts): a registry -> OCI layout pull downloads blobs of
 * 4 MiB and more in worker threads (hash + write there). Real distribution processes, skopeo as the oracle, and a
 * small node:http proxy in front of the registry for the faults: a corrupted body (the copy fails naming the blob,
 * nothing left behind), a connection closed mid-body (the main thread continues with Range from the bytes the
 * worker wrote), a redirect to another host (followed, without the Authorization header), an abort.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { fileHashes, listenLoopback, makeTestPki, requireTool, runAsync, sh, startDistribution, tempDir } from '../helpers.js';
import { RegistryClient } from '../../src/copy/index.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import { startTsregistry, startWithUsers } from '../registry-prod/util.js';
import { BIN, NOTLS } from './engine-util.js';

type T = Parameters<typeof tempDir>[0];
const MiB = 1024 * 1024;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** Push an image with a small config, two 5 MiB layers and a 100 KiB one; returns its parts. */
async function pushImage(addr: string, repo: string) {
  const c = new RegistryClient(addr, { tlsVerify: false });
  try {
    const layers = [randomBytes(5 * MiB), randomBytes(100 * 1024), randomBytes(5 * MiB + 7)];
    const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => digestOf(l)) } }));
    for (const b of [cfg, ...layers]) await c.putBlob(repo, { digest: digestOf(b), size: b.length }, Readable.from([b]));
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digestOf(cfg), size: cfg.length },
        layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: digestOf(l), size: l.length })),
      }),
    );
    await c.putManifest(repo, 'v1', manifest, OCI_MANIFEST);
    return { layers, manifest, big: [digestOf(layers[0]!), digestOf(layers[2]!)] };
  } finally {
    await c.close();
  }
}

interface Logged {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
}

/** A proxy in front of `target`; `fault` may answer a request itself (true) instead of forwarding it. */
async function proxy(t: T, target: string, fault: (req: IncomingMessage, res: ServerResponse) => boolean = () => false) {
  const log: Logged[] = [];
  const server = createServer((req, res) => {
    log.push({ method: req.method!, url: req.url!, headers: req.headers });
    if (fault(req, res)) return;
    forward(target, req, res);
  });
  const url = await listenLoopback(t, server);
  return { addr: url.slice('http://'.length), log };
}

function forward(target: string, req: IncomingMessage, res: ServerResponse, transform?: (chunk: Buffer, offset: number) => Buffer): void {
  const up = httpRequest(`http://${target}${req.url}`, { method: req.method, headers: { ...req.headers, host: target } }, (r) => {
    res.writeHead(r.statusCode!, r.headers);
    let offset = 0;
    r.on('data', (c: Buffer) => {
      res.write(transform ? transform(c, offset) : c);
      offset += c.length;
    });
    r.on('end', () => res.end());
  });
  up.on('error', () => res.destroy());
  req.pipe(up);
}

function tmpFiles(layout: string): string[] {
  const dir = join(layout, 'blobs', 'sha256');
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.startsWith('.tmp-')) : [];
}

describe('blob download workers', () => {
  it('pull into an OCI layout: large blobs in workers; skopeo reads the layout with the same digests; same files without workers; dir: too', async (t) => {
    requireTool('skopeo');
    const reg = await startDistribution(t);
    const img = await pushImage(reg.addr, 'w/img');
    const d = tempDir(t, 'bw');
    // runAsync: a spawnSync would be as good here, but keeps the pattern of the proxy tests below
    const r = await runAsync('env', ['TSIMAGE_DEBUG_HTTP=1', process.execPath, BIN, 'copy', '-q', ...NOTLS, `docker://${reg.addr}/w/img:v1`, `oci:${join(d, 'w')}:v1`]);
    assert.equal(r.code, 0, r.err);
    const workerGets = r.err.split('\n').filter((l) => / worker GET .* -> ok /.test(l));
    assert.equal(workerGets.length, 2, `the two 5 MiB layers in workers:\n${r.err}`);
    for (const dg of img.big) assert.ok(workerGets.some((l) => l.includes(dg)), `${dg} by a worker`);
    assert.equal(sh('skopeo', ['inspect', '--raw', `oci:${join(d, 'w')}:v1`]), img.manifest.toString());
    // skopeo verifies every blob's digest while copying out of the layout
    sh('skopeo', ['copy', '-q', `oci:${join(d, 'w')}:v1`, `dir:${join(d, 'sk')}`]);
    for (const l of img.layers) assert.ok(readFileSync(join(d, 'sk', digestOf(l).slice(7))).equals(l));
    assert.deepEqual(tmpFiles(join(d, 'w')), []);

    const r0 = await runAsync('env', ['TSIMAGE_DEBUG_HTTP=1', 'TSIMAGE_BLOB_WORKERS=0', process.execPath, BIN, 'copy', '-q', ...NOTLS, `docker://${reg.addr}/w/img:v1`, `oci:${join(d, 'm')}:v1`]);
    assert.equal(r0.code, 0, r0.err);
    assert.doesNotMatch(r0.err, / worker GET /);
    assert.deepEqual(fileHashes(join(d, 'm')), fileHashes(join(d, 'w')));

    // dir: the same way; the same files as skopeo's own pull into a dir:
    const rd = await runAsync('env', ['TSIMAGE_DEBUG_HTTP=1', process.execPath, BIN, 'copy', '-q', ...NOTLS, `docker://${reg.addr}/w/img:v1`, `dir:${join(d, 'dir')}`]);
    assert.equal(rd.code, 0, rd.err);
    assert.equal(rd.err.split('\n').filter((l) => / worker GET .* -> ok /.test(l)).length, 2, rd.err);
    sh('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${reg.addr}/w/img:v1`, `dir:${join(d, 'skdir')}`]);
    assert.deepEqual(fileHashes(join(d, 'dir')), fileHashes(join(d, 'skdir')));
  });

  it('a corrupted blob (digest mismatch) fails the copy naming the blob; no tag, no blob, no temp file left', async (t) => {
    const reg = await startDistribution(t);
    const img = await pushImage(reg.addr, 'w/img');
    const bad = img.big[1]!;
    const px = await proxy(t, reg.addr, (req, res) => {
      if (req.method !== 'GET' || !req.url!.endsWith(`/blobs/${bad}`)) return false;
      // one byte flipped at 3 MiB, same length
      forward(reg.addr, req, res, (c, off) => {
        const at = 3 * MiB - off;
        if (at < 0 || at >= c.length) return c;
        const x = Buffer.from(c);
        x[at] = x[at]! ^ 0xff;
        return x;
      });
      return true;
    });
    const d = tempDir(t, 'bw');
    const r = await runAsync('env', ['TSIMAGE_DEBUG_HTTP=1', process.execPath, BIN, 'copy', '-q', ...NOTLS, `docker://${px.addr}/w/img:v1`, `oci:${join(d, 'o')}:v1`]);
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, new RegExp(`worker GET \\S+/blobs/${bad} -> ok`), 'downloaded by a worker');
    assert.match(r.err, new RegExp(`digest mismatch for blob ${bad}: expected ${bad}, got sha256:[0-9a-f]{64}`));
    const idx = JSON.parse(readFileSync(join(d, 'o', 'index.json'), 'utf8')) as { manifests: unknown[] };
    assert.deepEqual(idx.manifests, []);
    assert.ok(!existsSync(join(d, 'o', 'blobs', 'sha256', bad.slice(7))));
    assert.deepEqual(tmpFiles(join(d, 'o')), []);
  });

  it('a connection closed mid-body: the main thread continues with Range from the bytes the worker wrote', async (t) => {
    const reg = await startDistribution(t);
    const data = randomBytes(6 * MiB);
    const dg = digestOf(data);
    const seed = new RegistryClient(reg.addr, { tlsVerify: false });
    t.after(() => seed.close());
    await seed.putBlob('w/blob', { digest: dg, size: data.length }, Readable.from([data]));
    let cut = 0;
    const px = await proxy(t, reg.addr, (req, res) => {
      if (req.method !== 'GET' || !req.url!.endsWith(`/blobs/${dg}`) || cut++ > 0) return false;
      // the whole length announced, 3 MiB sent, then the connection closed (FIN: the bytes sent arrive)
      res.writeHead(200, { 'content-length': String(data.length), 'content-type': 'application/octet-stream' });
      res.write(data.subarray(0, 3 * MiB), () => res.socket?.end());
      return true;
    });
    const c = new RegistryClient(px.addr, { tlsVerify: false, workerMinSize: 1, retryDelayMs: 20 });
    t.after(() => c.close());
    const file = join(tempDir(t, 'bw'), 'blob');
    const fd = openSync(file, 'wx+');
    let progress = 0;
    try {
      const got = await c.getBlobToFile('w/blob', { digest: dg, size: data.length }, fd, { onProgress: (n) => (progress += n) });
      assert.deepEqual(got, { digest: dg, size: data.length });
    } finally {
      closeSync(fd);
    }
    assert.ok(readFileSync(file).equals(data), 'same bytes');
    assert.equal(c.stats.workerDownloads, 1, 'started in a worker');
    assert.equal(c.stats.workerFallbacks, 1, 'finished on the main thread');
    assert.equal(c.stats.resumedDownloads, 1, JSON.stringify(c.stats));
    const gets = px.log.filter((l) => l.method === 'GET' && l.url.endsWith(`/blobs/${dg}`));
    assert.equal(gets.length, 2);
    assert.equal(gets[0]!.headers.range, undefined);
    assert.equal(gets[1]!.headers.range, `bytes=${3 * MiB}-`, 'resumed at the bytes on disk');
    assert.equal(progress, data.length, 'progress counts each byte once');
  });

  it('a redirect to another host is followed by the worker, without the Authorization header', async (t) => {
    const reg = await startDistribution(t);
    const data = randomBytes(5 * MiB);
    const dg = digestOf(data);
    const seed = new RegistryClient(reg.addr, { tlsVerify: false });
    t.after(() => seed.close());
    await seed.putBlob('w/blob', { digest: dg, size: data.length }, Readable.from([data]));
    const storage = await proxy(t, reg.addr);
    const front = await proxy(t, reg.addr, (req, res) => {
      if (req.method !== 'GET' || !req.url!.includes('/blobs/')) return false;
      res.writeHead(307, { location: `http://${storage.addr}${req.url}` });
      res.end();
      return true;
    });
    const c = new RegistryClient(front.addr, { tlsVerify: false, workerMinSize: 1, registryToken: 'tok' });
    t.after(() => c.close());
    const file = join(tempDir(t, 'bw'), 'blob');
    const fd = openSync(file, 'wx+');
    try {
      assert.deepEqual(await c.getBlobToFile('w/blob', { digest: dg, size: data.length }, fd), { digest: dg, size: data.length });
    } finally {
      closeSync(fd);
    }
    assert.ok(readFileSync(file).equals(data));
    const first = front.log.find((l) => l.url.includes('/blobs/'))!;
    assert.equal(first.headers.authorization, 'Bearer tok');
    const moved = storage.log.filter((l) => l.url.includes('/blobs/'));
    assert.equal(moved.length, 1, 'one GET at the redirect target');
    assert.equal(moved[0]!.headers.authorization, undefined, 'no credentials sent to another host');
    assert.equal(c.stats.workerDownloads, 1, 'in a worker');
    assert.equal(c.stats.workerFallbacks, 0, 'no fallback to the main thread');
  });

  it('an abort stops the worker download and rejects with the reason', async (t) => {
    const reg = await startDistribution(t);
    const dg = digestOf('never') as Digest;
    const size = 8 * MiB;
    // a registry that sends 1 MiB and then nothing
    const px = await proxy(t, reg.addr, (req, res) => {
      if (req.method !== 'GET' || !req.url!.includes('/blobs/')) return false;
      res.writeHead(200, { 'content-length': String(size) });
      res.write(Buffer.alloc(MiB));
      return true;
    });
    const c = new RegistryClient(px.addr, { tlsVerify: false, workerMinSize: 1 });
    t.after(() => c.close());
    const file = join(tempDir(t, 'bw'), 'blob');
    const fd = openSync(file, 'wx+');
    const ac = new AbortController();
    try {
      const p = c.getBlobToFile('w/blob', { digest: dg, size }, fd, { signal: ac.signal, onProgress: () => ac.abort(new Error('stop here')) });
      await assert.rejects(p, /stop here/);
    } finally {
      closeSync(fd);
    }
    assert.equal(c.stats.workerDownloads, 1, 'in a worker');
    assert.equal(px.log.filter((l) => l.url.includes('/blobs/')).length, 1, 'no retry after the abort');
  });

  it('HTTPS: the worker trusts what the client trusts (--cert-dir CA, --tls-verify=false)', async (t) => {
    const dir = tempDir(t, 'bwtls');
    makeTestPki(dir);
    const reg = await startTsregistry(t, { tls: { cert: join(dir, 'srv.pem'), key: join(dir, 'srv.key') }, log: { access: false } }, { dir: tempDir(t, 'bwtlsreg') });
    const certs = join(dir, 'certs');
    mkdirSync(certs);
    copyFileSync(join(dir, 'ca.pem'), join(certs, 'ca.crt'));
    const env = { ...process.env, CONTAINERS_REGISTRIES_CONF: '/nonexistent' };
    const data = randomBytes(5 * MiB);
    const dg = digestOf(data);
    for (const opts of [{ certDir: certs }, { tlsVerify: false }]) {
      const c = new RegistryClient(reg.addr, { ...opts, env, workerMinSize: 1, retryTimes: 0 });
      t.after(() => c.close());
      await c.putBlob('a/b', { digest: dg, size: data.length }, Readable.from([data]));
      const file = join(dir, `blob-${Object.keys(opts)[0]}`);
      const fd = openSync(file, 'wx+');
      try {
        assert.deepEqual(await c.getBlobToFile('a/b', { digest: dg, size: data.length }, fd), { digest: dg, size: data.length });
      } finally {
        closeSync(fd);
      }
      assert.equal(c.baseUrl, `https://${reg.addr}`);
      assert.equal(c.stats.workerDownloads, 1, 'in a worker');
      assert.equal(c.stats.workerFallbacks, 0, 'no fallback to the main thread');
      assert.ok(readFileSync(file).equals(data));
    }
  });

  for (const mode of ['token', 'basic'] as const) {
    it(`${mode} auth: the worker sends the main thread's Authorization; a refused user gets the registry's error`, async (t) => {
      const { reg, dir } = await startWithUsers(t, mode, [{ repos: ['team/**'], users: ['alice'], actions: ['pull', 'push'] }], 'bwauth');
      const env = { ...process.env, HOME: join(dir, 'home'), XDG_RUNTIME_DIR: join(dir, 'run'), REGISTRY_AUTH_FILE: '', DOCKER_CONFIG: '' };
      const data = randomBytes(5 * MiB);
      const dg = digestOf(data);
      const alice = new RegistryClient(reg.addr, { tlsVerify: false, creds: 'alice:alice-secret', env, workerMinSize: 1 });
      t.after(() => alice.close());
      await alice.putBlob('team/app', { digest: dg, size: data.length }, Readable.from([data]));
      const file = join(tempDir(t, 'bw'), 'blob');
      let fd = openSync(file, 'wx+');
      try {
        assert.deepEqual(await alice.getBlobToFile('team/app', { digest: dg, size: data.length }, fd), { digest: dg, size: data.length });
      } finally {
        closeSync(fd);
      }
      assert.ok(readFileSync(file).equals(data));
      assert.equal(alice.stats.workerDownloads, 1, 'in a worker');
      assert.equal(alice.stats.workerFallbacks, 0, 'the worker was let in');
      // anonymous: the worker gets a 401, the main thread asks again and reports the registry's refusal
      const anon = new RegistryClient(reg.addr, { tlsVerify: false, creds: {}, env, workerMinSize: 1, retryDelayMs: 10 });
      t.after(() => anon.close());
      fd = openSync(`${file}-anon`, 'wx+');
      try {
        await assert.rejects(anon.getBlobToFile('team/app', { digest: dg, size: data.length }, fd), (e: any) => /UNAUTHORIZED|DENIED|401|403/.test(e.message) && e.message.includes(dg));
      } finally {
        closeSync(fd);
      }
      assert.equal(anon.stats.workerFallbacks, 1);
    });
  }
});
