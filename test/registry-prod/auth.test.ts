/**
 * Access control units against a small hono app that asks for access the way the server
 * does: htpasswd compatibility with Apache's `htpasswd -B`, token issue/verify (ES256,
 * RS256, external issuer via JWKS and PEM), and the full user x repo x action matrix over
 * HTTP with Basic and with Bearer tokens (zero unauthorised successes).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createPrivateKey } from 'node:crypto';
import { Hono } from 'hono';
import * as jose from 'jose';
import { tempDir, sh, requireTool } from '../helpers.js';
import {
  RegistryAuth,
  Htpasswd,
  hashPassword,
  parseHtpasswd,
  parseScopes,
  globToRegExp,
  TokenIssuer,
  TokenVerifier,
  validateAuthConfig,
  type ResourceAccess,
} from '../../src/registry/auth/index.js';

type Act = 'pull' | 'push' | 'delete';

/** A minimal registry-shaped app: route -> needed access, then the authoriser. */
function testApp(auth: RegistryAuth): Hono {
  const app = new Hono();
  app.route('/', auth.tokenApp());
  const guard = (need: (c: { req: { param(k: string): string | undefined; method: string } }) => ResourceAccess[], route: string) =>
    async (c: any, next: () => Promise<void>) => {
      const res = await auth.authorize(c, need(c), route);
      if (res) return res;
      await next();
    };
  app.get('/v2/', guard(() => [], 'base'), (c) => c.json({}));
  app.get('/v2/_catalog', guard(() => [{ type: 'registry', name: 'catalog', actions: ['*'] }], 'catalog'), (c) => c.json({ repositories: [] }));
  const repoNeed = (actions: Act[]) => (c: { req: { param(k: string): string | undefined } }) => [{ type: 'repository', name: c.req.param('name')!, actions }];
  app.get('/v2/:name{.+}/manifests/:ref', guard(repoNeed(['pull']), 'manifest'), (c) => c.text('m'));
  app.put('/v2/:name{.+}/manifests/:ref', guard(repoNeed(['pull', 'push']), 'manifest-put'), (c) => c.body(null, 201));
  app.delete('/v2/:name{.+}/manifests/:ref', guard(repoNeed(['delete']), 'manifest-delete'), (c) => c.body(null, 202));
  app.post(
    '/v2/:name{.+}/blobs/uploads/',
    guard((c: any) => {
      const need: ResourceAccess[] = [{ type: 'repository', name: c.req.param('name')!, actions: ['pull', 'push'] }];
      const from = c.req.query('from');
      if (c.req.query('mount') && from) need.push({ type: 'repository', name: from, actions: ['pull'] });
      return need;
    }, 'upload-start'),
    (c) => c.body(null, 201),
  );
  return app;
}

const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw', root: 'root-pw' } as const;
type User = keyof typeof USERS | undefined;

const ACCESS = {
  groups: { devs: ['alice', 'bob'], admins: ['root'] },
  rules: [
    { repos: ['team/**'], groups: ['devs'], actions: ['pull', 'push'] },
    { repos: ['team/alice/*'], users: ['alice'], actions: ['delete'] },
    { repos: ['public/*'], anonymous: true, actions: ['pull'] },
    { repos: ['public/*'], users: ['carol'], actions: ['push'] },
    { repos: ['**'], groups: ['admins'], actions: ['*'] },
    { repos: ['shared/?x'], users: ['*'], actions: ['pull'] },
  ],
  catalog: { groups: ['admins'] },
};

/** The expected matrix, written independently of the rule engine. */
function expected(user: User, repo: string, action: Act | 'catalog'): boolean {
  if (user === 'root') return true;
  if (action === 'catalog') return false;
  const team = repo.startsWith('team/');
  const pub = /^public\/[^/]+$/.test(repo);
  if (pub && action === 'pull') return true;
  if (user === 'carol' && pub && action === 'push') return true;
  if ((user === 'alice' || user === 'bob') && team && action !== 'delete') return true;
  if (user === 'alice' && /^team\/alice\/[^/]+$/.test(repo) && action === 'delete') return true;
  if (user !== undefined && /^shared\/.x$/.test(repo) && action === 'pull') return true;
  return false;
}

const REPOS = ['team/app', 'team/alice/x', 'team/alice/x/y', 'public/base', 'public/a/b', 'private/db', 'shared/ax', 'shared/abx', 'teams/app'];
const ACTIONS: (Act | 'catalog')[] = ['pull', 'push', 'delete', 'catalog'];
const WHO: User[] = [undefined, 'alice', 'bob', 'carol', 'root'];

async function writeHtpasswd(dir: string): Promise<string> {
  const p = join(dir, 'htpasswd');
  requireTool('htpasswd');
  // the real Apache tool writes the file (compatibility with htpasswd -B)
  let first = true;
  for (const [u, pw] of Object.entries(USERS)) {
    sh('htpasswd', [...(first ? ['-c'] : []), '-bB', p, u, pw]);
    first = false;
  }
  return p;
}

function basic(user: string, pw: string): string {
  return 'Basic ' + Buffer.from(`${user}:${pw}`).toString('base64');
}

async function call(app: Hono, method: string, path: string, auth?: string): Promise<Response> {
  return app.request(`http://reg.test${path}`, { method, headers: auth ? { authorization: auth } : {} });
}

function requestFor(action: Act | 'catalog', repo: string): [string, string] {
  switch (action) {
    case 'pull':
      return ['GET', `/v2/${repo}/manifests/latest`];
    case 'push':
      return ['PUT', `/v2/${repo}/manifests/latest`];
    case 'delete':
      return ['DELETE', `/v2/${repo}/manifests/latest`];
    case 'catalog':
      return ['GET', '/v2/_catalog'];
  }
}

describe('htpasswd', () => {
  it('verifies what `htpasswd -B` writes, and htpasswd verifies what we write', async (t) => {
    const dir = tempDir(t, 'regprod-ht');
    const p = await writeHtpasswd(dir);
    const ht = new Htpasswd(p);
    assert.equal(await ht.verify('alice', 'alice-pw'), true);
    assert.equal(await ht.verify('alice', 'alice-pw'), true, 'cached success');
    assert.equal(await ht.verify('alice', 'bob-pw'), false);
    assert.equal(await ht.verify('nobody', 'x'), false);
    // cost 10 from the real tool
    sh('htpasswd', ['-bBC', '10', p, 'dave', 'dave pw: with colon']);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal(await ht.verify('dave', 'dave pw: with colon'), true, 'file reloaded after change');
    // ours -> apache's verifier
    const line = `erin:${hashPassword('erin-pw')}\n`;
    assert.match(line, /^erin:\$2y\$05\$/);
    writeFileSync(join(dir, 'ours'), line);
    sh('htpasswd', ['-vbB', join(dir, 'ours'), 'erin', 'erin-pw']);
    assert.throws(() => sh('htpasswd', ['-vbB', join(dir, 'ours'), 'erin', 'wrong']));
  });

  it('rejects non-bcrypt entries naming the line', () => {
    assert.throws(() => parseHtpasswd('# c\nbob:$apr1$abc$def\n', 'f'), /f:2: user "bob" does not have a bcrypt hash/);
    assert.throws(() => parseHtpasswd('justaname\n', 'f'), /f:1: expected "user:hash"/);
  });
});

describe('scopes and globs', () => {
  it('parses token-spec scopes', () => {
    assert.deepEqual(parseScopes('repository:a/b:pull,push registry:catalog:*'), [
      { type: 'repository', name: 'a/b', actions: ['pull', 'push'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
    ]);
    assert.deepEqual(parseScopes('repository(plugin):x:pull'), [{ type: 'repository', name: 'x', actions: ['pull'] }]);
    assert.deepEqual(parseScopes('repository:host:5000/x:pull')[0]!.name, 'host:5000/x');
    assert.throws(() => parseScopes('nonsense'), /invalid scope/);
  });
  it('globs: * within a component, ** across', () => {
    assert.ok(globToRegExp('team/*').test('team/a'));
    assert.ok(!globToRegExp('team/*').test('team/a/b'));
    assert.ok(globToRegExp('team/**').test('team/a/b'));
    assert.ok(!globToRegExp('team/**').test('team'));
    assert.ok(!globToRegExp('a.b').test('axb'));
  });
  it('config validation names the bad key', () => {
    assert.throws(() => validateAuthConfig({ htpasswd: 'x', acess: {} }), /auth\.acess: unknown key/);
    assert.throws(() => validateAuthConfig({ htpasswd: 'x', access: { rules: [{ repos: ['a'], users: ['x'], actions: ['pul'] }] } }), /auth\.access\.rules\[0\]\.actions\[0\]: unknown action "pul"/);
    assert.throws(() => validateAuthConfig({ htpasswd: 'x', access: { rules: [{ repos: ['a'], anonymous: true, actions: ['push'] }] } }), /anonymous access may only pull/);
    assert.throws(() => validateAuthConfig({ token: { builtin: false } }), /auth\.token/);
    assert.throws(() => validateAuthConfig({ token: { expiration: 5 }, htpasswd: 'x' }), /auth\.token\.expiration/);
  });
});

describe('authorisation matrix', () => {
  it('Basic auth: every user x repo x action answers exactly as the rules say', async (t) => {
    const dir = tempDir(t, 'regprod-mx');
    const auth = new RegistryAuth(validateAuthConfig({ htpasswd: await writeHtpasswd(dir), access: ACCESS })!, { root: dir });
    const app = testApp(auth);
    let unauthorised = 0;
    let checked = 0;
    for (const who of WHO) {
      for (const repo of REPOS) {
        for (const action of ACTIONS) {
          const [m, p] = requestFor(action, repo);
          const res = await call(app, m, p, who ? basic(who, USERS[who]) : undefined);
          const ok = res.status < 300;
          const want = expected(who, repo, action);
          if (ok && !want) unauthorised++;
          assert.equal(ok, want, `${who ?? 'anonymous'} ${action} ${repo}: ${res.status}`);
          if (!ok) {
            if (who === undefined) {
              assert.equal(res.status, 401);
              assert.equal(res.headers.get('www-authenticate'), 'Basic realm="tsregistry"');
            } else assert.equal(res.status, 403);
            const body = (await res.json()) as { errors: { code: string }[] };
            assert.equal(body.errors[0]!.code, who === undefined ? 'UNAUTHORIZED' : 'DENIED');
          }
          checked++;
        }
      }
    }
    assert.equal(unauthorised, 0);
    assert.equal(checked, WHO.length * REPOS.length * ACTIONS.length);
    // ping needs credentials; wrong ones fail
    assert.equal((await call(app, 'GET', '/v2/')).status, 401);
    assert.equal((await call(app, 'GET', '/v2/', basic('alice', 'alice-pw'))).status, 200);
    assert.equal((await call(app, 'GET', '/v2/', basic('alice', 'nope'))).status, 401);
    assert.equal((await call(app, 'GET', '/v2/public/base/manifests/x', basic('alice', 'nope'))).status, 401);
  });

  it('token auth: tokens carry exactly the granted subset; every request is checked against the token', async (t) => {
    const dir = tempDir(t, 'regprod-tk');
    const auth = new RegistryAuth(validateAuthConfig({ htpasswd: await writeHtpasswd(dir), token: { service: 'reg.test' }, access: ACCESS })!, { root: dir });
    const app = testApp(auth);
    let unauthorised = 0;
    for (const who of WHO) {
      for (const repo of REPOS) {
        for (const action of ACTIONS) {
          const [m, p] = requestFor(action, repo);
          // 1. without a token: a challenge naming the scope
          const first = await call(app, m, p);
          let ok = first.status < 300;
          if (!ok) {
            assert.equal(first.status, 401);
            const ch = first.headers.get('www-authenticate')!;
            const scope = action === 'catalog' ? 'registry:catalog:*' : `repository:${repo}:${action === 'push' ? 'pull,push' : action}`;
            assert.equal(ch, `Bearer realm="http://reg.test/token",service="reg.test",scope="${scope}"`);
            // 2. fetch a token for that scope as the client would
            const q = new URLSearchParams({ service: 'reg.test', scope });
            const tr = await call(app, 'GET', `/token?${q}`, who ? basic(who, USERS[who]) : undefined);
            assert.equal(tr.status, 200);
            const tok = (await tr.json()) as { token: string; access_token: string; expires_in: number };
            assert.equal(tok.token, tok.access_token);
            assert.equal(tok.expires_in, 300);
            const claims = jose.decodeJwt(tok.token) as { access: ResourceAccess[]; sub: string; aud: string };
            assert.equal(claims.sub, who ?? '');
            assert.equal(claims.aud, 'reg.test');
            for (const a of claims.access) for (const x of a.actions) assert.ok(action === 'catalog' ? who === 'root' : expected(who, a.name, x as Act), `token grants ${x} on ${a.name} to ${who}`);
            const second = await call(app, m, p, `Bearer ${tok.token}`);
            ok = second.status < 300;
            if (!ok) {
              assert.equal(second.status, 401);
              assert.match(second.headers.get('www-authenticate')!, /error="insufficient_scope"/);
            }
          }
          if (ok && !expected(who, repo, action)) unauthorised++;
          assert.equal(ok, expected(who, repo, action), `${who ?? 'anonymous'} ${action} ${repo}`);
        }
      }
    }
    assert.equal(unauthorised, 0);
    // wrong password at the token endpoint
    assert.equal((await call(app, 'GET', '/token?service=reg.test&scope=repository:team/app:pull', basic('alice', 'x'))).status, 401);
    // a token for one repo does not open another
    const tr = await call(app, 'GET', '/token?service=reg.test&scope=repository:team/app:pull,push', basic('alice', 'alice-pw'));
    const { token } = (await tr.json()) as { token: string };
    assert.equal((await call(app, 'GET', '/v2/team/app/manifests/x', `Bearer ${token}`)).status, 200);
    assert.equal((await call(app, 'DELETE', '/v2/team/app/manifests/x', `Bearer ${token}`)).status, 401);
    assert.equal((await call(app, 'GET', '/v2/team/other/manifests/x', `Bearer ${token}`)).status, 401);
    // a tampered token is rejected
    const [h, pl, sig] = token.split('.');
    const forged = Buffer.from(JSON.stringify({ ...jose.decodeJwt(token), access: [{ type: 'repository', name: 'private/db', actions: ['pull'] }] })).toString('base64url');
    const bad = await call(app, 'GET', '/v2/private/db/manifests/x', `Bearer ${h}.${forged}.${sig}`);
    assert.equal(bad.status, 401);
    assert.match(bad.headers.get('www-authenticate')!, /error="invalid_token"/);
    assert.ok(pl);
    // cross-repository mount asks for pull on the source too
    const mount = await call(app, 'POST', '/v2/team/app/blobs/uploads/?mount=sha256:00&from=private/db', `Bearer ${token}`);
    assert.equal(mount.status, 401);
    assert.match(mount.headers.get('www-authenticate')!, /scope="repository:team\/app:pull,push repository:private\/db:pull"/);
    // OAuth2 POST (password grant + refresh token)
    const post = await app.request('http://reg.test/token', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'password', username: 'bob', password: 'bob-pw', service: 'reg.test', scope: 'repository:team/app:pull', access_type: 'offline' }).toString(),
    });
    assert.equal(post.status, 200);
    const pj = (await post.json()) as { access_token: string; refresh_token: string };
    assert.ok(pj.refresh_token);
    const rf = await app.request('http://reg.test/token', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: pj.refresh_token, service: 'reg.test', scope: 'repository:team/x:push' }).toString(),
    });
    assert.equal(rf.status, 200);
    assert.deepEqual((jose.decodeJwt(((await rf.json()) as { access_token: string }).access_token) as { access: unknown }).access, [{ type: 'repository', name: 'team/x', actions: ['push'] }]);
    // a refresh token is not an access token
    assert.equal((await call(app, 'GET', '/v2/team/app/manifests/x', `Bearer ${pj.refresh_token}`)).status, 401);
  });
});

describe('token signing keys', () => {
  it('ES256 and RS256 keys from openssl; expiry, audience and issuer are checked; external JWKS and PEM issuers are trusted', async (t) => {
    requireTool('openssl');
    const dir = tempDir(t, 'regprod-keys');
    sh('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', join(dir, 'ec.pem')]);
    sh('openssl', ['genrsa', '-out', join(dir, 'rsa.pem'), '2048']);
    sh('openssl', ['pkey', '-in', join(dir, 'rsa.pem'), '-pubout', '-out', join(dir, 'rsa.pub')]);
    for (const [file, alg] of [['ec.pem', 'ES256'], ['rsa.pem', 'RS256']] as const) {
      const key = createPrivateKey(readFileSync(join(dir, file)));
      const iss = new TokenIssuer({ key, issuer: 'me', service: 'svc' });
      assert.equal(iss.alg, alg);
      const access = [{ type: 'repository', name: 'a', actions: ['pull'] }];
      const { token } = await iss.issue('alice', access);
      assert.equal(jose.decodeProtectedHeader(token).alg, alg);
      const v = new TokenVerifier({ issuer: 'me', service: 'svc', keys: [iss.publicKey] });
      assert.deepEqual((await v.verify(token)).access, access);
      await assert.rejects(new TokenVerifier({ issuer: 'me', service: 'other', keys: [iss.publicKey] }).verify(token), /aud/);
      await assert.rejects(new TokenVerifier({ issuer: 'you', service: 'svc', keys: [iss.publicKey] }).verify(token), /iss/);
      const old = await iss.issue('alice', access, Math.floor(Date.now() / 1000) - 3600);
      await assert.rejects(v.verify(old.token), /exp/);
      // an external issuer published as JWKS
      const jv = new TokenVerifier({ issuer: 'me', service: 'svc', jwks: await iss.jwks() });
      assert.equal((await jv.verify(token)).sub, 'alice');
    }
    // external issuer trusted by a PEM public key, through the registry's authoriser
    const ext = new TokenIssuer({ key: createPrivateKey(readFileSync(join(dir, 'rsa.pem'))), issuer: 'corp-sso', service: 'reg' });
    const auth = new RegistryAuth(validateAuthConfig({ token: { builtin: false, realm: 'https://sso.example/token', issuer: 'corp-sso', service: 'reg', publicKeys: [join(dir, 'rsa.pub')] } })!, { root: dir });
    const app = testApp(auth);
    const { token } = await ext.issue('zed', [{ type: 'repository', name: 'any/thing', actions: ['pull', 'push'] }]);
    assert.equal((await call(app, 'PUT', '/v2/any/thing/manifests/x', `Bearer ${token}`)).status, 201);
    const r = await call(app, 'DELETE', '/v2/any/thing/manifests/x', `Bearer ${token}`);
    assert.equal(r.status, 401);
    assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="https://sso.example/token",service="reg",scope="repository:any/thing:delete",error="insufficient_scope"');
    // a token from a key we do not trust
    const rogue = new TokenIssuer({ key: createPrivateKey(readFileSync(join(dir, 'ec.pem'))), issuer: 'corp-sso', service: 'reg' });
    assert.equal((await call(app, 'GET', '/v2/any/thing/manifests/x', `Bearer ${(await rogue.issue('zed', [{ type: 'repository', name: 'any/thing', actions: ['pull'] }])).token}`)).status, 401);
    // the built-in issuer is off: no /token
    assert.equal((await call(app, 'GET', '/token')).status, 404);
  });
});
