/**
 * Pull-through mirror: concurrent fills and tags/list, against distribution as the upstream,
 * with a small relay in between (real sockets) that counts the upstream requests and can hold
 * a blob's body half way, cut it, or corrupt it.
 *
 * - N skopeo pulls of an uncached image at once: one upstream GET per blob and per manifest,
 *   every pull gets the upstream's bytes.
 * - Clients joining a fill mid-blob get every byte (also those that arrived before they joined)
 *   while the upstream body is still held: nobody waits for the whole blob.
 * - A fill that fails (upstream cut mid-body, wrong digest) breaks every client's response,
 *   leaves nothing in the store, and the next request fetches again.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listenLoopback, runAsync, tempDir, requireTool, sh } from '../helpers.js';
import { ACCEPT_ALL, blob, errCode, pushBlob, pushImage, req, sha256, startDistribution } from './util.js';
import { startTsregistry, type Proc } from '../registry-prod/util.js';

type BlobPlan = { pauseAfter: number; gate: Promise<'release' | 'kill'>; corrupt?: boolean };

interface Relay {
  url: string;
  /** "GET /v2/lib/a/blobs/sha256:..." -> how many requests the upstream got */
  counts: Map<string, number>;
  count(method: string, path: string): number;
  /** Delay before each request is forwarded (ms). */
  delayMs: number;
  /** Upstream unreachable: connections are dropped. */
  down: boolean;
  /** How GETs of a blob (by digest) are answered: first bytes, then wait for the gate. */
  plans: Map<string, BlobPlan>;
  /** Bytes of a held body sent so far, by digest. */
  sent: Map<string, number>;
  /** Ask the upstream for tags/list pages of this size (when the request has no n). */
  tagPageSize: number | undefined;
  /** Answer blob GETs/HEADs with a 307 to this origin (a CDN), as Docker Hub does. */
  redirectBlobsTo: string | undefined;
  /** Requests that came with an Authorization header. */
  withAuth: number;
}

function gate(): { promise: Promise<'release' | 'kill'>; open(v: 'release' | 'kill'): void } {
  let open!: (v: 'release' | 'kill') => void;
  const promise = new Promise<'release' | 'kill'>((r) => (open = r));
  return { promise, open };
}

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function readAll(s: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** A counting relay in front of an upstream registry. */
async function relay(t: { after(fn: () => Promise<void> | void): void }, target: string): Promise<Relay> {
  const tu = new URL(target);
  const st: Relay = {
    url: '',
    counts: new Map(),
    count: (m, p) => st.counts.get(`${m} ${p}`) ?? 0,
    delayMs: 0,
    down: false,
    plans: new Map(),
    sent: new Map(),
    tagPageSize: undefined,
    redirectBlobsTo: undefined,
    withAuth: 0,
  };
  const server: Server = createServer((inReq, inRes) => {
    const path = new URL(inReq.url!, 'http://x').pathname;
    const key = `${inReq.method} ${path}`;
    st.counts.set(key, (st.counts.get(key) ?? 0) + 1);
    if (inReq.headers.authorization) st.withAuth++;
    const digest = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(path)?.[1];
    if (digest && st.redirectBlobsTo) {
      inRes.writeHead(307, { Location: `${st.redirectBlobsTo}/cdn${path}?X-Amz-Signature=0123abcd`, 'Content-Length': 0 });
      inRes.end();
      return;
    }
    const plan = inReq.method === 'GET' && digest ? st.plans.get(digest) : undefined;
    void (async () => {
      if (st.delayMs) await wait(st.delayMs);
      if (st.down) {
        inReq.socket.destroy();
        return;
      }
      let fwd = inReq.url!;
      if (st.tagPageSize !== undefined && path.endsWith('/tags/list') && !/[?&]n=/.test(fwd)) fwd += `${fwd.includes('?') ? '&' : '?'}n=${st.tagPageSize}`;
      const out = httpRequest({ host: tu.hostname, port: tu.port, method: inReq.method, path: fwd, headers: inReq.headers }, (r) => {
        if (!plan || r.statusCode !== 200) {
          inRes.writeHead(r.statusCode ?? 502, r.headers);
          r.pipe(inRes);
          return;
        }
        void (async () => {
          const body = await readAll(r);
          if (plan.corrupt) body.writeUInt8(body.readUInt8(body.length >> 1) ^ 0xff, body.length >> 1);
          inRes.writeHead(200, r.headers);
          inRes.write(body.subarray(0, plan.pauseAfter));
          st.sent.set(digest!, plan.pauseAfter);
          if ((await plan.gate) === 'kill') {
            inRes.socket?.destroy();
            return;
          }
          inRes.end(body.subarray(plan.pauseAfter));
          st.sent.set(digest!, body.length);
        })();
      });
      out.on('error', () => inRes.destroy());
      inReq.pipe(out);
    })();
  });
  st.url = await listenLoopback(t, server);
  return st;
}


async function metric(m: Proc, kind: string, result: string): Promise<number> {
  const text = (await req(m.url, 'GET', '/metrics')).text;
  const line = new RegExp(`^tsregistry_mirror_requests_total\\{kind="${kind}",result="${result}"\\} (\\d+)`, 'm').exec(text);
  return line ? Number(line[1]) : 0;
}

function blobFile(m: Proc, d: string): string {
  return join(m.root, 'blobs', 'sha256', d.slice(7, 9), d.slice(7));
}

function uploadsLeft(m: Proc, repo: string): string[] {
  const dir = join(m.root, 'repositories', ...repo.split('/'), '_uploads');
  return existsSync(dir) ? readdirSync(dir) : [];
}

/** A streaming GET: the response and a reader of its body. */
async function startGet(url: string): Promise<{ status: number; next(): Promise<Buffer | undefined>; rest(): Promise<Buffer> }> {
  const res = await fetch(url);
  const reader = res.body!.getReader();
  const got: Buffer[] = [];
  return {
    status: res.status,
    async next() {
      const c = await reader.read();
      if (c.done) return undefined;
      const b = Buffer.from(c.value);
      got.push(b);
      return b;
    },
    async rest() {
      for (;;) {
        const c = await reader.read();
        if (c.done) return Buffer.concat(got);
        got.push(Buffer.from(c.value));
      }
    },
  };
}

/**
 * A temp dir whose removal first stops the registries started in it (after-hooks run in
 * order: tempDir's rm would run while a mirror may still be linking a blob it just cached).
 */
type Scratch = { t: Parameters<typeof tempDir>[0]; dir: string; procs: Proc[] };
function scratch(t: Parameters<typeof tempDir>[0], label: string): Scratch {
  const s: Scratch = { t, dir: mkdtempSync(join(tmpdir(), `tsimage-${label}-`)), procs: [] };
  t.after(async () => {
    for (const p of s.procs) await p.stop();
    rmSync(s.dir, { recursive: true, force: true });
  });
  return s;
}

async function tsreg(s: Scratch, doc: Record<string, unknown>, sub: string): Promise<Proc> {
  const p = await startTsregistry(s.t, doc, { dir: join(s.dir, sub) });
  s.procs.push(p);
  return p;
}

async function mirrorOf(s: Scratch, upstream: string, extra: Record<string, unknown> = {}): Promise<Proc> {
  return tsreg(
    s,
    { log: { access: false }, mirror: { tagTtl: '1m', timeout: '10s', namespaces: [{ prefix: 'hub', upstreams: [{ url: upstream }] }], ...extra } },
    'mirror',
  );
}

/**
 * A blob of `size` bytes at lib/big of a distribution upstream, reached through a counting relay that holds its body
 * after `plan.pauseAfter` bytes (and corrupts it when asked) until `g` opens; a mirror of that upstream. `url` is the
 * blob through the mirror.
 */
async function heldBlob(t: Parameters<typeof tempDir>[0], label: string, size: number, plan: { pauseAfter: number; corrupt?: boolean }) {
  const sc = scratch(t, label);
  const dist = await startDistribution(t);
  const up = await relay(t, dist.url);
  const big = blob(size);
  await pushBlob(dist.url, 'lib/big', big.data);
  const m = await mirrorOf(sc, up.url);
  const g = gate();
  up.plans.set(big.digest, { ...plan, gate: g.promise });
  return { m, up, big, g, url: `${m.url}/v2/hub/lib/big/blobs/${big.digest}` };
}

describe('pull-through mirror: concurrent fills', () => {
  it('4 skopeo pulls of an uncached image at once: one upstream GET per blob and per manifest, every pull gets the upstream bytes', async (t) => {
    requireTool('skopeo');
    const sc = scratch(t, 'mirror-concurrent');
    const dir = sc.dir;
    const dist = await startDistribution(t);
    const up = await relay(t, dist.url);
    const img = await pushImage(dist.url, 'lib/app', 'v1', { layers: 3 });
    const doc = JSON.parse(img.bytes.toString('utf8'));
    const blobs: string[] = [doc.config.digest, ...doc.layers.map((l: { digest: string }) => l.digest)];
    const m = await mirrorOf(sc, up.url);
    up.counts.clear();
    // every upstream answer takes 300 ms: the pulls overlap on the manifest and on every blob
    up.delayMs = 300;
    const pulls = await Promise.all(
      [0, 1, 2, 3].map((i) => runAsync('skopeo', ['copy', '--preserve-digests', '--src-tls-verify=false', `docker://${m.addr}/hub/lib/app:v1`, `oci:${join(dir, `pull${i}`)}:v1`])),
    );
    for (const [i, p] of pulls.entries()) {
      assert.equal(p.code, 0, `pull ${i}: ${p.err}\n${m.stderr().slice(-2000)}`);
      const index = JSON.parse(readFileSync(join(dir, `pull${i}`, 'index.json'), 'utf8'));
      assert.equal(index.manifests[0].digest, img.digest, `pull ${i} has the upstream manifest: ${JSON.stringify(index)}`);
      for (const d of [img.digest, ...blobs]) {
        const data = readFileSync(join(dir, `pull${i}`, 'blobs', 'sha256', d.slice(7)));
        assert.equal(sha256(data), d, `pull ${i}: ${d}`);
      }
    }
    for (const d of blobs) assert.equal(up.count('GET', `/v2/lib/app/blobs/${d}`), 1, `one upstream GET of ${d}: ${JSON.stringify([...up.counts])}`);
    const manifestGets = [...up.counts].filter(([k]) => k.startsWith('GET /v2/lib/app/manifests/')).reduce((a, [, n]) => a + n, 0);
    assert.equal(manifestGets, 1, `one upstream manifest GET: ${JSON.stringify([...up.counts])}`);
    assert.equal(up.count('HEAD', '/v2/lib/app/manifests/v1'), 1, 'one tag lookup');
    assert.ok((await metric(m, 'blob', 'joined')) >= 1, 'the pulls overlapped (some requests joined a fill in progress)');
    assert.equal(await metric(m, 'blob', 'miss'), blobs.length, 'one fill per blob');
    for (const d of blobs) assert.ok(existsSync(blobFile(m, d)), `${d} cached`);
    assert.deepEqual(uploadsLeft(m, 'hub/lib/app'), []);
  });

  it('clients joining mid-blob get every byte while the upstream body is still held; one upstream GET', async (t) => {
    const { m, up, big, g, url } = await heldBlob(t, 'mirror-join', 3 * 1024 * 1024 + 17, { pauseAfter: 1024 * 1024 });

    // the first client gets its first bytes while the upstream body is held half way
    const a = await startGet(url);
    assert.equal(a.status, 200);
    const first = await a.next();
    assert.ok(first && first.length > 0, 'first bytes before the upstream body ended');
    // two more clients join the fill in progress (they need the bytes that came before them)
    const b = await startGet(url);
    const c = await startGet(url);
    assert.equal(b.status, 200);
    assert.equal(c.status, 200);
    const bFirst = await b.next();
    assert.ok(bFirst && bFirst.length > 0, 'a joining client gets bytes at once');
    assert.ok(!existsSync(blobFile(m, big.digest)), 'not cached yet: the upstream body is still held');
    // a range already downloaded is served from the fill; one past the held point waits for it
    const early = await req(m.url, 'GET', `/v2/hub/lib/big/blobs/${big.digest}`, { headers: { Range: 'bytes=1000-1999' } });
    assert.equal(early.status, 206);
    assert.deepEqual(early.body, big.data.subarray(1000, 2000));
    const late = req(m.url, 'GET', `/v2/hub/lib/big/blobs/${big.digest}`, { headers: { Range: 'bytes=2000000-2000099' } });
    g.open('release');
    const [ra, rb, rc] = await Promise.all([a.rest(), b.rest(), c.rest()]);
    for (const r of [ra, rb, rc]) assert.equal(sha256(r), big.digest);
    const lateRes = await late;
    assert.equal(lateRes.status, 206);
    assert.deepEqual(lateRes.body, big.data.subarray(2000000, 2000100));
    assert.equal(up.count('GET', `/v2/lib/big/blobs/${big.digest}`), 1, JSON.stringify([...up.counts]));
    assert.equal(up.count('HEAD', `/v2/lib/big/blobs/${big.digest}`), 1, 'the joiners take the size from the fill');
    assert.equal(await metric(m, 'blob', 'joined'), 4, 'b, c and the two ranges joined');
    assert.equal(await metric(m, 'blob', 'passthrough'), 0);
    for (let i = 0; i < 50 && !existsSync(blobFile(m, big.digest)); i++) await wait(50);
    assert.ok(existsSync(blobFile(m, big.digest)));
    // later: from the cache, no upstream request
    const again = await req(m.url, 'GET', `/v2/hub/lib/big/blobs/${big.digest}`);
    assert.equal(sha256(again.body), big.digest);
    assert.equal(up.count('GET', `/v2/lib/big/blobs/${big.digest}`), 1);
  });

  for (const failure of ['upstream cut mid-body', 'wrong digest'] as const) {
    it(`a failed fill (${failure}) breaks every client's response, caches nothing, and the next request fetches again`, async (t) => {
      const { m, up, big, g, url } = await heldBlob(t, 'mirror-fail', 2 * 1024 * 1024 + 5, { pauseAfter: 512 * 1024, corrupt: failure === 'wrong digest' });
      const clients = [await startGet(url), await startGet(url), await startGet(url)];
      for (const c of clients) {
        assert.equal(c.status, 200);
        assert.ok(await c.next());
      }
      g.open(failure === 'wrong digest' ? 'release' : 'kill');
      const outcomes = await Promise.allSettled(clients.map((c) => c.rest()));
      for (const [i, o] of outcomes.entries()) {
        if (o.status === 'fulfilled') assert.ok(o.value.length < big.data.length, `client ${i} must not get a complete response (${o.value.length} bytes)`);
      }
      await wait(200);
      assert.ok(!existsSync(blobFile(m, big.digest)), 'nothing cached');
      assert.deepEqual(uploadsLeft(m, 'hub/lib/big'), [], 'the partial download was removed');
      assert.match(m.stderr(), failure === 'wrong digest' ? /blob fetch failed, nothing cached.*served sha256:[0-9a-f]{64} \(2097157 bytes\) for blob/ : /blob fetch failed, nothing cached/);
      assert.equal(up.count('GET', `/v2/lib/big/blobs/${big.digest}`), 1);
      // the next request starts a new fill
      up.plans.delete(big.digest);
      const again = await req(m.url, 'GET', `/v2/hub/lib/big/blobs/${big.digest}`);
      assert.equal(again.status, 200);
      assert.equal(sha256(again.body), big.digest);
      assert.equal(up.count('GET', `/v2/lib/big/blobs/${big.digest}`), 2);
      for (let i = 0; i < 50 && !existsSync(blobFile(m, big.digest)); i++) await wait(50);
      assert.ok(existsSync(blobFile(m, big.digest)), 'cached by the retry');
    });
  }

  it('an upstream that is down before the first byte: every waiting client gets 503 naming the upstream error', async (t) => {
    const sc = scratch(t, 'mirror-down');
    const dist = await startDistribution(t);
    const up = await relay(t, dist.url);
    const small = blob(4096);
    await pushBlob(dist.url, 'lib/s', small.data);
    const m = await mirrorOf(sc, up.url);
    // the size is known (HEAD went through), then the upstream goes away before the GET
    const head = await req(m.url, 'HEAD', `/v2/hub/lib/s/blobs/${small.digest}`);
    assert.equal(head.status, 200);
    up.down = true;
    up.delayMs = 300;
    const rs = await Promise.all([0, 1, 2].map(() => req(m.url, 'GET', `/v2/hub/lib/s/blobs/${small.digest}`)));
    for (const r of rs) {
      assert.equal(r.status, 503, r.text);
      assert.match(r.text, /UNAVAILABLE.*no upstream could serve it/);
    }
    assert.equal(up.count('GET', `/v2/lib/s/blobs/${small.digest}`), 1, 'one attempt for the three clients');
    up.down = false;
    up.delayMs = 0;
    const ok = await req(m.url, 'GET', `/v2/hub/lib/s/blobs/${small.digest}`);
    assert.equal(sha256(ok.body), small.digest);
    for (let i = 0; i < 50 && !existsSync(blobFile(m, small.digest)); i++) await wait(50);
    assert.ok(existsSync(blobFile(m, small.digest)), 'cached');
  });
});

describe('pull-through mirror: tags/list', () => {
  it('lists the upstream tags (also those pushed after the cache filled; token auth; across the upstream\'s Link pages); serves the cached list when the upstream is down', async (t) => {
    for (const tool of ['skopeo', 'htpasswd']) requireTool(tool);
    const sc = scratch(t, 'mirror-tags');
    const dir = sc.dir;
    const dist = await startDistribution(t);
    const up = await relay(t, dist.url);
    await pushImage(dist.url, 'lib/app', 'v1');
    await pushImage(dist.url, 'lib/app', 'v2');
    // a second upstream with token auth, for a second namespace
    sh('htpasswd', ['-cbB', join(dir, 'htpasswd'), 'mirror', 'mirror-secret']);
    const up2 = await tsreg(
      sc,
      { auth: { htpasswd: join(dir, 'htpasswd'), token: { service: 'up2' }, access: { rules: [{ repos: ['**'], users: ['mirror'], actions: ['pull', 'push'] }] } }, log: { access: false } },
      'up2',
    );
    const up2r = await relay(t, up2.url);
    for (const tag of ['p2', 'p3', 'p1']) {
      const c = await runAsync('skopeo', ['copy', '--src-tls-verify=false', '--dest-tls-verify=false', '--dest-creds', 'mirror:mirror-secret', `docker://${dist.addr}/lib/app:v1`, `docker://${up2.addr}/team/priv:${tag}`]);
      assert.equal(c.code, 0, c.err);
    }
    const m = await tsreg(
      sc,
      {
        log: { access: false },
        mirror: {
          tagTtl: '1m',
          timeout: '5s',
          namespaces: [
            { prefix: 'hub', upstreams: [{ url: up.url }] },
            { prefix: 'auth', upstreams: [{ url: up2r.url, username: 'mirror', password: 'mirror-secret' }] },
          ],
        },
      },
      'mirror',
    );
    const tags = async (path: string) => {
      const r = await req(m.url, 'GET', path);
      return { status: r.status, tags: r.status === 200 ? (r.json().tags as string[]) : undefined, link: r.headers.get('link'), r };
    };

    // the mirror caches v1; then v3 is pushed upstream
    const pulled = await req(m.url, 'GET', '/v2/hub/lib/app/manifests/v1', { headers: { Accept: ACCEPT_ALL } });
    assert.equal(pulled.status, 200);
    await pushImage(dist.url, 'lib/app', 'v3');
    const all = await tags('/v2/hub/lib/app/tags/list');
    assert.equal(all.status, 200, all.r.text);
    assert.deepEqual(all.tags, ['v1', 'v2', 'v3'], 'the upstream list, not only the cached v1');
    assert.equal(all.r.json().name, 'hub/lib/app');
    assert.equal(up.count('GET', '/v2/lib/app/tags/list'), 1);

    // n/last on what the upstream gave; the continuation pages reuse that list
    const p1 = await tags('/v2/hub/lib/app/tags/list?n=2');
    assert.deepEqual(p1.tags, ['v1', 'v2']);
    assert.equal(p1.link, '</v2/hub/lib/app/tags/list?n=2&last=v2>; rel="next"');
    const p2 = await tags(p1.link!.slice(1, p1.link!.indexOf('>')));
    assert.deepEqual(p2.tags, ['v3']);
    assert.equal(p2.link, null);
    assert.deepEqual((await tags('/v2/hub/lib/app/tags/list?n=1&last=v1')).tags, ['v2']);
    assert.equal(up.count('GET', '/v2/lib/app/tags/list'), 2, 'first page asks upstream, continuations do not');

    // token auth upstream (tsregistry), with the mirror's credentials; it pages its answer
    // (the relay asks for n=1): every Link page is followed
    up2r.tagPageSize = 1;
    const priv = await tags('/v2/auth/team/priv/tags/list');
    assert.equal(priv.status, 200, priv.r.text);
    assert.deepEqual(priv.tags, ['p1', 'p2', 'p3']);
    assert.ok(up2r.count('GET', '/v2/team/priv/tags/list') >= 3, `one upstream request per page: ${up2r.count('GET', '/v2/team/priv/tags/list')}`);

    // a repository no upstream knows, nothing cached: NAME_UNKNOWN
    const nope = await tags('/v2/hub/lib/nope/tags/list');
    assert.equal(nope.status, 404);
    assert.equal(errCode(nope.r), 'NAME_UNKNOWN');

    // upstream down: the cached tags (v1 only), logged; nothing cached: 503
    up.down = true;
    const stale = await tags('/v2/hub/lib/app/tags/list');
    assert.equal(stale.status, 200, stale.r.text);
    assert.deepEqual(stale.tags, ['v1']);
    assert.match(m.stderr(), /serving the cached tag list/);
    const stalePage = await tags('/v2/hub/lib/app/tags/list?n=0');
    assert.deepEqual(stalePage.tags, []);
    const none = await tags('/v2/hub/lib/other/tags/list');
    assert.equal(none.status, 503, none.r.text);
    assert.match(none.r.text, /UNAVAILABLE.*tag list/);
    // the other namespace's upstream is unaffected
    assert.deepEqual((await tags('/v2/auth/team/priv/tags/list')).tags, ['p1', 'p2', 'p3']);
  });
});

describe('pull-through mirror: upstream names', () => {
  it("upstream prefix library goes before one-component names only, as docker's (hub/alpine -> library/alpine, hub/bitnami/redis -> bitnami/redis)", async (t) => {
    const sc = scratch(t, 'mirror-names');
    const dist = await startDistribution(t);
    const alpine = await pushImage(dist.url, 'library/alpine', '3');
    const redis = await pushImage(dist.url, 'bitnami/redis', '7');
    const m = await tsreg(
      sc,
      { log: { access: false }, mirror: { namespaces: [{ prefix: 'hub', upstreams: [{ url: dist.url, prefix: 'library' }] }] } },
      'mirror',
    );
    const a = await req(m.url, 'GET', '/v2/hub/alpine/manifests/3', { headers: { Accept: ACCEPT_ALL } });
    assert.equal(a.status, 200, a.text);
    assert.equal(sha256(a.body), alpine.digest);
    const r = await req(m.url, 'GET', '/v2/hub/bitnami/redis/manifests/7', { headers: { Accept: ACCEPT_ALL } });
    assert.equal(r.status, 200, r.text);
    assert.equal(sha256(r.body), redis.digest);
    assert.deepEqual((await req(m.url, 'GET', '/v2/hub/alpine/tags/list')).json().tags, ['3']);
    assert.deepEqual((await req(m.url, 'GET', '/v2/hub/bitnami/redis/tags/list')).json().tags, ['7']);
    // library/alpine addressed in full works too (one name, not library/library/alpine)
    const full = await req(m.url, 'GET', '/v2/hub/library/alpine/manifests/3', { headers: { Accept: ACCEPT_ALL } });
    assert.equal(full.status, 200, full.text);
  });
});

/** A "CDN" in front of an upstream's blobs (GET/HEAD /cdn/v2/...): records the Authorization headers it is sent. */
async function cdn(t: { after(fn: () => Promise<void> | void): void }, target: string): Promise<{ url: string; requests: number; auth: string[] }> {
  const tu = new URL(target);
  const st = { url: '', requests: 0, auth: [] as string[] };
  const server = createServer((inReq, inRes) => {
    st.requests++;
    if (inReq.headers.authorization) st.auth.push(inReq.headers.authorization);
    const u = new URL(inReq.url!, 'http://x');
    if (!u.pathname.startsWith('/cdn/v2/') || u.searchParams.get('X-Amz-Signature') !== '0123abcd') {
      inRes.writeHead(403).end('bad signature');
      return;
    }
    const out = httpRequest({ host: tu.hostname, port: tu.port, method: inReq.method, path: u.pathname.slice(4) }, (r) => {
      inRes.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(inRes);
    });
    out.on('error', () => inRes.destroy());
    out.end();
  });
  st.url = await listenLoopback(t, server);
  return st;
}

describe('pull-through mirror: redirected blobs', () => {
  it('follows an upstream redirect of blobs to another origin (Docker Hub, ghcr.io, S3 pre-signed URLs) without sending it the credentials', async (t) => {
    requireTool('skopeo');
    const sc = scratch(t, 'mirror-redirect');
    const dir = sc.dir;
    const dist = await startDistribution(t);
    const img = await pushImage(dist.url, 'lib/app', 'v1', { layers: 2 });
    const doc = JSON.parse(img.bytes.toString('utf8'));
    const store = await cdn(t, dist.url);
    const up = await relay(t, dist.url);
    up.redirectBlobsTo = store.url;
    const m = await tsreg(
      sc,
      { log: { access: false }, mirror: { namespaces: [{ prefix: 'hub', upstreams: [{ url: up.url, username: 'mirror', password: 'mirror-secret' }] }] } },
      'mirror',
    );
    const p = await runAsync('skopeo', ['copy', '--preserve-digests', '--src-tls-verify=false', `docker://${m.addr}/hub/lib/app:v1`, `oci:${join(dir, 'pull')}:v1`]);
    assert.equal(p.code, 0, `${p.err}\n${m.stderr().slice(-2000)}`);
    for (const d of [doc.config.digest, ...doc.layers.map((l: { digest: string }) => l.digest)]) {
      assert.equal(sha256(readFileSync(join(dir, 'pull', 'blobs', 'sha256', d.slice(7)))), d);
      assert.ok(existsSync(blobFile(m, d)), `${d} cached`);
    }
    assert.ok(store.requests >= 3, `the blobs came from the CDN (${store.requests} requests)`);
    assert.deepEqual(store.auth, [], 'no credentials sent to another origin');
    assert.ok(up.withAuth > 0, 'the registry itself got the credentials');
  });
});
