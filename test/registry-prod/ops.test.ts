/**
 * TLS (openssl-made CA, server and client certificates; reload on SIGHUP; client-certificate
 * users), structured access logs and Prometheus metrics, over a real HTTPS/HTTP server.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync, copyFileSync } from 'node:fs';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import type { Server as TlsServer } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { Hono } from 'hono';
import { serve } from '@hono/node-server';
import { makeTestPki, tempDir, sh } from '../helpers.js';
import { httpsServerOptions, reloadTlsOnSighup, validateTlsConfig } from '../../src/registry/tls.js';
import { Logger } from '../../src/registry/log.js';
import { RegistryMetrics, observe, PROMETHEUS_CONTENT_TYPE } from '../../src/registry/metrics.js';
import { RegistryAuth, validateAuthConfig } from '../../src/registry/auth/index.js';

function openssl(args: string[], cwd: string): void {
  sh('openssl', args, { cwd });
}

/** A CA, a server cert for 127.0.0.1 (two of them, for rotation) and a client cert for CN=alice. */
function makePki(dir: string): void {
  makeTestPki(dir, ['server1', 'server2']);
  for (const [name, ca] of [['alice', 'ca'], ['mallory', 'self']] as const) {
    openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir);
    if (ca === 'ca') openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', `${name}.pem`], dir);
    else openssl(['x509', '-req', '-in', `${name}.csr`, '-signkey', `${name}.key`, '-days', '2', '-out', `${name}.pem`], dir);
  }
}

function get(port: number, path: string, opts: { ca: Buffer; cert?: Buffer; key?: Buffer }): Promise<{ status: number; body: string; peerCN: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path, ca: opts.ca, cert: opts.cert, key: opts.key, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        const cn = (res.socket as import('node:tls').TLSSocket).getPeerCertificate?.()?.subject?.CN;
        resolve({ status: res.statusCode ?? 0, body, peerCN: String(cn ?? '') });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('TLS', () => {
  it('serves the cert from files, reloads on SIGHUP, maps verified client certs to users', async (t) => {
    const dir = tempDir(t, 'regprod-tls');
    makePki(dir);
    copyFileSync(join(dir, 'server1.pem'), join(dir, 'tls.pem'));
    copyFileSync(join(dir, 'server1.key'), join(dir, 'tls.key'));
    const cfg = validateTlsConfig({ cert: join(dir, 'tls.pem'), key: join(dir, 'tls.key'), clientCA: join(dir, 'ca.pem') })!;
    assert.throws(() => validateTlsConfig({ cert: 'x' }), /tls\.key: required/);
    assert.throws(() => httpsServerOptions({ cert: join(dir, 'server1.pem'), key: join(dir, 'server2.key') }), /cannot be used/);
    // htpasswd is not needed for certificate users
    const auth = new RegistryAuth(validateAuthConfig({ clientCertUsers: true, access: { rules: [{ repos: ['a/**'], users: ['alice'], actions: ['pull'] }] } })!, { root: dir });
    const app = new Hono();
    app.get('/v2/:name{.+}/tags/list', async (c) => {
      const r = await auth.authorize(c, [{ type: 'repository', name: c.req.param('name'), actions: ['pull'] }], 'tags');
      return r ?? c.json({ user: (c.var as { user?: string }).user });
    });
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1', createServer: createHttpsServer, serverOptions: httpsServerOptions(cfg) }) as unknown as TlsServer;
    t.after(() => new Promise<void>((r) => server.close(() => r())));
    await new Promise<void>((r) => (server.listening ? r() : server.once('listening', () => r())));
    const port = (server.address() as AddressInfo).port;
    const stop = reloadTlsOnSighup(server, cfg);
    t.after(stop);
    const ca = readFileSync(join(dir, 'ca.pem'));

    const anon = await get(port, '/v2/a/b/tags/list', { ca });
    assert.equal(anon.peerCN, 'server1');
    assert.equal(anon.status, 401);
    const alice = await get(port, '/v2/a/b/tags/list', { ca, cert: readFileSync(join(dir, 'alice.pem')), key: readFileSync(join(dir, 'alice.key')) });
    assert.equal(alice.status, 200);
    assert.deepEqual(JSON.parse(alice.body), { user: 'alice' });
    assert.equal((await get(port, '/v2/other/tags/list', { ca, cert: readFileSync(join(dir, 'alice.pem')), key: readFileSync(join(dir, 'alice.key')) })).status, 403);
    // a self-signed client cert does not authenticate
    const mallory = await get(port, '/v2/a/b/tags/list', { ca, cert: readFileSync(join(dir, 'mallory.pem')), key: readFileSync(join(dir, 'mallory.key')) });
    assert.equal(mallory.status, 401);

    // rotate: a broken pair first (kept old), then the real new pair
    copyFileSync(join(dir, 'server2.pem'), join(dir, 'tls.pem'));
    process.kill(process.pid, 'SIGHUP');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await get(port, '/v2/a/b/tags/list', { ca })).peerCN, 'server1', 'mismatched key: old cert kept');
    copyFileSync(join(dir, 'server2.key'), join(dir, 'tls.key'));
    process.kill(process.pid, 'SIGHUP');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await get(port, '/v2/a/b/tags/list', { ca })).peerCN, 'server2');
  });

  it('clientAuth: require refuses connections without a client certificate', async (t) => {
    const dir = tempDir(t, 'regprod-tls2');
    makePki(dir);
    const cfg = validateTlsConfig({ cert: join(dir, 'server1.pem'), key: join(dir, 'server1.key'), clientCA: join(dir, 'ca.pem'), clientAuth: 'require' })!;
    const app = new Hono().get('/', (c) => c.text('ok'));
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1', createServer: createHttpsServer, serverOptions: httpsServerOptions(cfg) }) as unknown as TlsServer;
    t.after(() => new Promise<void>((r) => server.close(() => r())));
    await new Promise<void>((r) => (server.listening ? r() : server.once('listening', () => r())));
    const port = (server.address() as AddressInfo).port;
    const ca = readFileSync(join(dir, 'ca.pem'));
    await assert.rejects(get(port, '/', { ca }));
    assert.equal((await get(port, '/', { ca, cert: readFileSync(join(dir, 'alice.pem')), key: readFileSync(join(dir, 'alice.key')) })).status, 200);
  });
});

describe('access log and metrics', () => {
  it('one JSON line per request with id, user, repo, status, bytes, duration; Prometheus counters', async (t) => {
    const lines: string[] = [];
    const logger = new Logger({}, { write: (l) => void lines.push(l) });
    const metrics = new RegistryMetrics();
    const app = new Hono();
    app.use('*', observe({ metrics, logger }));
    app.get('/metrics', (c) => c.body(metrics.render(), 200, { 'content-type': PROMETHEUS_CONTENT_TYPE }));
    app.put('/v2/:name{.+}/blobs/:d', async (c) => {
      c.set('route' as never, 'upload-finish' as never);
      c.set('repo' as never, c.req.param('name') as never);
      c.set('user' as never, 'alice' as never);
      const body = await c.req.arrayBuffer();
      return c.text(`got ${body.byteLength}`, 201);
    });
    app.get('/v2/:name{.+}/blobs/:d', (c) => {
      c.set('route' as never, 'blob' as never);
      c.set('repo' as never, c.req.param('name') as never);
      return c.text('not here', 404);
    });
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
    t.after(() => new Promise<void>((r) => server.close(() => r())));
    await new Promise<void>((r) => (server.listening ? r() : server.once('listening', () => r())));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const body = Buffer.alloc(100_000, 7);
    const put = await fetch(`${base}/v2/team/app/blobs/x`, { method: 'PUT', body, headers: { 'x-request-id': 'req-42' } });
    assert.equal(put.status, 201);
    assert.equal(put.headers.get('x-request-id'), 'req-42');
    await put.text();
    const miss = await fetch(`${base}/v2/team/app/blobs/y`);
    assert.equal(miss.status, 404);
    assert.match(miss.headers.get('x-request-id')!, /^[0-9a-f]{16}$/);
    await miss.text();
    await new Promise((r) => setTimeout(r, 50));
    const recs = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const p = recs.find((r) => r.id === 'req-42')!;
    assert.ok(p, 'access line for the PUT');
    assert.equal(p.msg, 'request');
    assert.equal(p.level, 'info');
    assert.equal(p.method, 'PUT');
    assert.equal(p.repo, 'team/app');
    assert.equal(p.user, 'alice');
    assert.equal(p.status, 201);
    assert.equal(p.route, 'upload-finish');
    assert.ok((p.bytesIn as number) >= body.length, `bytesIn ${p.bytesIn}`);
    assert.ok((p.bytesOut as number) > 0);
    assert.equal(typeof p.durationMs, 'number');
    assert.ok(recs.some((r) => r.status === 404 && r.route === 'blob'));

    const m = await fetch(`${base}/metrics`);
    assert.equal(m.headers.get('content-type'), PROMETHEUS_CONTENT_TYPE);
    const text = await m.text();
    assert.match(text, /^tsregistry_http_requests_total\{route="upload-finish",method="PUT",status="201"\} 1$/m);
    assert.match(text, /^tsregistry_http_requests_total\{route="blob",method="GET",status="404"\} 1$/m);
    const inBytes = Number(/^tsregistry_http_received_bytes_total\{route="upload-finish"\} (\d+)$/m.exec(text)?.[1]);
    assert.ok(inBytes >= body.length);
    assert.match(text, /^tsregistry_http_request_duration_seconds_count\{route="blob"\} 1$/m);
    assert.match(text, /^# TYPE tsregistry_gc_runs_total counter$/m);
    metrics.onEvent({ type: 'blob.pushed', durationMs: 1500 });
    assert.match(metrics.render(), /^tsregistry_upload_duration_seconds_bucket\{le="2.5"\} 1$/m);
    assert.match(metrics.render(), /^tsregistry_upload_duration_seconds_bucket\{le="1"\} 0$/m);
  });
});
