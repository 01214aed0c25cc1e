/**
 * Pull-through mirror against real upstreams: distribution (behind a small fault-injecting
 * HTTP relay that can answer 429 or drop connections) and a second tsregistry process with
 * token auth, tried in order; skopeo pulls through the mirror; tags revalidated after the
 * TTL; serve-stale on 429 and on a dead upstream (logged); an upstream killed mid-blob
 * leaves nothing in the cache and the next pull comes from the next upstream.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, runAsync, tempDir, sh, requireTool } from '../helpers.js';
import { ACCEPT_ALL, blob, pushBlob, pushImage, req, sha256 } from '../registry/util.js';
import { startDistribution } from '../registry/util.js';
import { startTsregistry } from './util.js';

type Mode = 'pass' | '429' | 'drop';

/**
 * A relay in front of an upstream: passes requests through (or trickles bodies, 64 KiB every
 * 5 ms), or answers 429, or drops connections.
 */
async function relay(t: { after(fn: () => Promise<void> | void): void }, target: string): Promise<{ url: string; mode: Mode; trickle: boolean; hits: number; server: Server }> {
  const st = { url: '', mode: 'pass' as Mode, trickle: false, hits: 0, server: undefined as unknown as Server };
  const tu = new URL(target);
  st.server = createServer((inReq, inRes) => {
    st.hits++;
    if (st.mode === '429') {
      inRes.writeHead(429, { 'Content-Type': 'application/json', 'Retry-After': '60' });
      inRes.end(JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: 'rate limited' }] }));
      return;
    }
    if (st.mode === 'drop') {
      inReq.socket.destroy();
      return;
    }
    const out = httpRequest({ host: tu.hostname, port: tu.port, method: inReq.method, path: inReq.url, headers: inReq.headers }, (r) => {
      inRes.writeHead(r.statusCode ?? 502, r.headers);
      if (!st.trickle) {
        r.pipe(inRes);
        return;
      }
      void (async () => {
        try {
          for await (const c of r) {
            for (let i = 0; i < (c as Buffer).length; i += 65536) {
              if (inRes.destroyed) return;
              inRes.write((c as Buffer).subarray(i, i + 65536));
              await wait(5);
            }
          }
          inRes.end();
        } catch {
          inRes.destroy();
        }
      })();
    });
    out.on('error', () => inRes.destroy());
    inReq.pipe(out);
  });
  await new Promise<void>((r) => st.server.listen(0, '127.0.0.1', r));
  st.url = `http://127.0.0.1:${(st.server.address() as AddressInfo).port}`;
  t.after(
    () =>
      new Promise<void>((r) => {
        st.server.closeAllConnections();
        st.server.close(() => r());
      }),
  );
  return st;
}


const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('pull-through mirror', () => {
  it('distribution and a token-auth tsregistry as upstreams, in order; skopeo pulls through; TTL revalidation; serve-stale on 429 and on a dead upstream', async (t) => {
    for (const tool of ['skopeo', 'htpasswd']) requireTool(tool);
    const dir = tempDir(t, 'regprod-mirror');
    const dist = await startDistribution(t);
    const front = await relay(t, dist.url);
    sh('htpasswd', ['-cbB', join(dir, 'htpasswd'), 'mirror', 'mirror-secret']);
    const up2 = await startTsregistry(
      t,
      {
        auth: { htpasswd: join(dir, 'htpasswd'), token: { service: 'up2' }, access: { rules: [{ repos: ['**'], users: ['mirror'], actions: ['pull', 'push'] }] } },
        log: { access: false },
      },
      { dir: join(dir, 'up2') },
    );
    // content: lib/a only in distribution, lib/b only in the token-auth tsregistry
    const a = await pushImage(dist.url, 'lib/a', 'v1', { layers: 2 });
    const cred = { username: 'mirror', password: 'mirror-secret' };
    const b1 = await runAsync('skopeo', ['copy', '--src-tls-verify=false', '--dest-tls-verify=false', '--dest-creds', 'mirror:mirror-secret', `docker://${dist.addr}/lib/a:v1`, `docker://${up2.addr}/lib/b:v1`]);
    assert.equal(b1.code, 0, b1.err);
    const bDigest = (await runAsync('skopeo', ['inspect', '--tls-verify=false', '--creds', 'mirror:mirror-secret', '--format', '{{.Digest}}', `docker://${up2.addr}/lib/b:v1`])).out.trim();

    const mirror = await startTsregistry(
      t,
      {
        log: { access: false },
        storage: { cache: { ttl: '0s' } },
        mirror: {
          tagTtl: '1s',
          timeout: '5s',
          namespaces: [{ prefix: 'hub', upstreams: [{ url: front.url }, { url: up2.url, ...cred }] }],
        },
      },
      { dir: join(dir, 'mirror') },
    );
    const M = mirror.addr;

    // skopeo pulls both through the mirror; the bytes are the upstreams' bytes
    for (const [repo, digest] of [
      ['lib/a', a.digest],
      ['lib/b', bDigest],
    ] as const) {
      const out = join(dir, `pull-${repo.replace('/', '-')}`);
      const r = await runAsync('skopeo', ['copy', '--src-tls-verify=false', `docker://${M}/hub/${repo}:v1`, `oci:${out}:v1`]);
      if (r.code !== 0) {
        const dbg = await req(mirror.url, 'GET', `/v2/hub/${repo}/manifests/v1`, { headers: { Accept: ACCEPT_ALL } });
        assert.fail(`${repo}: ${r.err}\n${dbg.status} ${dbg.text}\n${mirror.stderr().slice(-2000)}`);
      }
      const got = (await runAsync('skopeo', ['inspect', '--tls-verify=false', '--format', '{{.Digest}}', `docker://${M}/hub/${repo}:v1`])).out.trim();
      assert.equal(got, digest, `${repo} served with the upstream digest`);
    }
    // everything is cached, verified (scrub is clean)
    const aDoc = JSON.parse(a.bytes.toString('utf8'));
    for (const l of [aDoc.config, ...aDoc.layers]) assert.ok(existsSync(join(mirror.root, 'blobs', 'sha256', l.digest.slice(7, 9), l.digest.slice(7))), `${l.digest} cached`);
    const scrub = spawnSync(process.execPath, [join(ROOT, 'bin', 'tsregistry.js'), 'scrub', '--root', mirror.root, '--quiet'], { encoding: 'utf8' });
    assert.equal(scrub.status, 0, scrub.stdout + scrub.stderr);

    // pushing into a mirrored namespace is refused
    const push = await req(mirror.url, 'POST', '/v2/hub/lib/a/blobs/uploads/');
    assert.equal(push.status, 405);

    // tag moved upstream: seen after the TTL
    const a2 = await pushImage(dist.url, 'lib/a', 'v1', { layers: 1 });
    await wait(1100);
    const moved = await req(mirror.url, 'GET', '/v2/hub/lib/a/manifests/v1', { headers: { Accept: ACCEPT_ALL } });
    assert.equal(moved.status, 200);
    assert.equal(moved.headers.get('docker-content-digest'), a2.digest);
    // the new config and layer are fetched and cached on their GETs
    const a2Doc = JSON.parse(a2.bytes.toString('utf8'));
    for (const l of [a2Doc.config, ...a2Doc.layers]) {
      const lg = await req(mirror.url, 'GET', `/v2/hub/lib/a/blobs/${l.digest}`);
      assert.equal(sha256(lg.body), l.digest);
    }

    // 429 upstream: the cached tag is served stale, and logged
    await wait(1100);
    front.mode = '429';
    const hitsBefore = front.hits;
    const stale = await req(mirror.url, 'GET', '/v2/hub/lib/a/manifests/v1', { headers: { Accept: ACCEPT_ALL } });
    assert.equal(stale.status, 200);
    assert.equal(sha256(stale.body), a2.digest);
    assert.ok(front.hits > hitsBefore, 'the upstream was asked');
    assert.match(mirror.stderr(), /serving stale manifest.*"status":429/);
    // nothing cached and the upstream limited: 429 passed on
    const none = await req(mirror.url, 'GET', '/v2/hub/lib/zzz/manifests/v9', { headers: { Accept: ACCEPT_ALL } });
    assert.equal(none.status, 429, `uncached + 429 upstream: ${none.status} ${none.text}`);
    assert.match(none.text, /TOOMANYREQUESTS/);

    // distribution gone: still stale-served, and a whole skopeo pull works from the cache
    front.mode = 'drop';
    await wait(1100);
    const r = await runAsync('skopeo', ['copy', '--src-tls-verify=false', `docker://${M}/hub/lib/a:v1`, `oci:${join(dir, 'stale')}:v1`]);
    assert.equal(r.code, 0, r.err);
    const metrics = (await req(mirror.url, 'GET', '/metrics')).text;
    assert.match(metrics, /tsregistry_mirror_requests_total\{kind="manifest",result="stale"\} [1-9]/);

    // the second upstream still answers for what the first does not have (lib/b via up2 with a token)
    await wait(1100);
    const b = await req(mirror.url, 'GET', '/v2/hub/lib/b/manifests/v1', { headers: { Accept: ACCEPT_ALL } });
    assert.equal(b.status, 200);
    assert.equal(b.headers.get('docker-content-digest'), bDigest);
  });

  it('an upstream killed mid-blob leaves nothing cached; the next upstream serves the retry; then the cache serves it alone', async (t) => {
    const dir = tempDir(t, 'regprod-mirror-kill');
    const dist = await startDistribution(t);
    const up1 = await startTsregistry(t, { log: { access: false } }, { dir: join(dir, 'up1') });
    // the mirror fills at the upstream's pace: the relay makes that slow enough to die mid-blob
    const front1 = await relay(t, up1.url);
    front1.trickle = true;
    const big = blob(8 * 1024 * 1024);
    for (const u of [up1.url, dist.url]) assert.equal(await pushBlob(u, 'big/x', big.data), big.digest);
    const mirror = await startTsregistry(
      t,
      { log: { access: false }, mirror: { tagTtl: '1m', timeout: '5s', namespaces: [{ prefix: '', upstreams: [{ url: front1.url }, { url: dist.url }] }] } },
      { dir: join(dir, 'mirror') },
    );
    const blobPath = join(mirror.root, 'blobs', 'sha256', big.digest.slice(7, 9), big.digest.slice(7));

    // read the first bytes, kill the first upstream (and cut its connections), then the response must break
    const res = await fetch(`${mirror.url}/v2/big/x/blobs/${big.digest}`);
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    let got = 0;
    const first = await reader.read();
    got += first.value?.length ?? 0;
    await up1.stop('SIGKILL');
    front1.mode = 'drop';
    front1.server.closeAllConnections();
    let broke = false;
    try {
      for (;;) {
        const c = await reader.read();
        if (c.done) break;
        got += c.value.length;
      }
    } catch {
      broke = true;
    }
    assert.ok(broke || got < big.data.length, `the client must not see a complete response (${got} of ${big.data.length})`);
    await wait(300);
    assert.ok(!existsSync(blobPath), 'nothing half-fetched is in the blob store');
    const uploads = join(mirror.root, 'repositories', 'big', 'x', '_uploads');
    assert.deepEqual(existsSync(uploads) ? readdirSync(uploads) : [], [], 'the partial download was removed');
    assert.match(mirror.stderr(), /blob fetch failed, nothing cached/);

    // retry: the dead upstream is skipped, distribution serves, the blob is cached
    const again = await req(mirror.url, 'GET', `/v2/big/x/blobs/${big.digest}`);
    assert.equal(again.status, 200);
    assert.equal(sha256(again.body), big.digest);
    for (let i = 0; i < 50 && !existsSync(blobPath); i++) await wait(100);
    assert.ok(existsSync(blobPath));

    // every upstream gone: served from the cache, byte for byte
    spawnSync('kill', ['-9', String(dist.pid)]);
    const cached = await req(mirror.url, 'GET', `/v2/big/x/blobs/${big.digest}`);
    assert.equal(cached.status, 200);
    assert.equal(sha256(cached.body), big.digest);
    const range = await req(mirror.url, 'GET', `/v2/big/x/blobs/${big.digest}`, { headers: { Range: 'bytes=10-19' } });
    assert.equal(range.status, 206);
    assert.deepEqual(range.body, big.data.subarray(10, 20));
  });

  it('config validation names the bad key', async () => {
    const { validateMirror } = await import('../../src/registry/mirror/config.js');
    const { parseDuration } = await import('../../src/registry/config.js');
    assert.throws(() => validateMirror({ namespaces: [{ prefix: 'hub', upstreams: [{ url: 'ftp://x' }] }] }, parseDuration), /config mirror\.namespaces\[0\]\.upstreams\[0\]\.url/);
    assert.throws(() => validateMirror({ namespaces: [{ prefix: 'hub', upstreams: [{ url: 'http://x', user: 'a' }] }] }, parseDuration), /upstreams\[0\]\.user: unknown key/);
    assert.throws(() => validateMirror({ tagTtl: 'soon', namespaces: [] }, parseDuration), /config mirror\.namespaces/);
    assert.throws(() => validateMirror({ tagTtl: 'soon', namespaces: [{ upstreams: [{ url: 'http://x' }] }] }, parseDuration), /config mirror\.tagTtl/);
  });
});
