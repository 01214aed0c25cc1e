/**
 * Real clients' login flows against a real tsregistry process with token auth and with Basic
 * auth: podman login (right and wrong password), skopeo login / --creds, buildah push --creds,
 * anonymous pull where the rules allow it, refusal where they do not.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { podmanImagesRemovedAfter, tempDir, requireTool } from '../helpers.js';
import { baseLayout } from '../fixtures/base.js';
import { startWithUsers } from './util.js';

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): { code: number; out: string; err: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

async function setup(t: Parameters<typeof tempDir>[0], mode: 'token' | 'basic') {
  const { reg, dir } = await startWithUsers(t, mode, [
    { repos: ['team/**'], users: ['alice'], actions: ['pull', 'push'] },
    { repos: ['team/**'], users: ['bob'], actions: ['pull'] },
    { repos: ['public/**'], anonymous: true, actions: ['pull'] },
    { repos: ['public/**'], users: ['alice'], actions: ['push'] },
  ], 'regprod-cl');
  // a private auth file and blob-info cache-free environment per test
  const authfile = join(dir, 'auth.json');
  return { reg, dir, authfile, env: { REGISTRY_AUTH_FILE: authfile } };
}

for (const mode of ['token', 'basic'] as const) {
  describe(`real clients, ${mode} auth`, () => {
    it('podman login, skopeo --creds/login, buildah push --creds; wrong passwords and missing rights fail', async (t) => {
      for (const tool of ['podman', 'skopeo', 'buildah']) requireTool(tool);
      const { reg, authfile, env } = await setup(t, mode);
      const base = await baseLayout();
      const A = reg.addr;
      // what buildah and podman pull below lands in the machine's containers-storage: untagged after the test
      podmanImagesRemovedAfter(t, `${A}/public/base:latest`, `${A}/team/built:1`);

      // podman login: wrong password fails, right one succeeds
      const bad = run('podman', ['login', '--tls-verify=false', '--authfile', authfile, '-u', 'alice', '-p', 'wrong', A]);
      assert.notEqual(bad.code, 0, `podman login with a wrong password must fail: ${bad.out}${bad.err}`);
      const good = run('podman', ['login', '--tls-verify=false', '--authfile', authfile, '-u', 'alice', '-p', 'alice-secret', A]);
      assert.equal(good.code, 0, good.err);
      assert.match(good.out, /Login Succeeded/);

      // skopeo with --dest-creds pushes; without credentials it is refused
      const anonPush = run('skopeo', ['copy', '--dest-tls-verify=false', '--authfile', join(reg.root, '..', 'none.json'), base.ociRef, `docker://${A}/team/app:v1`]);
      assert.notEqual(anonPush.code, 0, 'anonymous push must fail');
      assert.match(anonPush.err, /unauthorized|authentication required|401/i);
      const push = run('skopeo', ['copy', '--dest-tls-verify=false', '--dest-creds', 'alice:alice-secret', base.ociRef, `docker://${A}/team/app:v1`]);
      assert.equal(push.code, 0, push.err);
      // bob can pull but not push
      const bobPull = run('skopeo', ['inspect', '--raw', '--tls-verify=false', '--creds', 'bob:bob-secret', `docker://${A}/team/app:v1`]);
      assert.equal(bobPull.code, 0, bobPull.err);
      assert.equal(JSON.parse(bobPull.out).schemaVersion, 2);
      const bobPush = run('skopeo', ['copy', '--dest-tls-verify=false', '--dest-creds', 'bob:bob-secret', base.ociRef, `docker://${A}/team/app:v2`]);
      assert.notEqual(bobPush.code, 0, 'bob has no push right');
      // a wrong password is refused even for a pull
      assert.notEqual(run('skopeo', ['inspect', '--tls-verify=false', '--creds', 'bob:nope', `docker://${A}/team/app:v1`]).code, 0);

      // skopeo login writes the auth file; later commands use it
      const sl = run('skopeo', ['login', '--tls-verify=false', '--authfile', authfile, '-u', 'alice', '-p', 'alice-secret', A]);
      assert.equal(sl.code, 0, sl.err);
      const viaFile = run('skopeo', ['copy', '--dest-tls-verify=false', '--authfile', authfile, base.ociRef, `docker://${A}/public/base:latest`]);
      assert.equal(viaFile.code, 0, viaFile.err);
      // anonymous pull of public/**, refused for team/**
      const noAuth = join(reg.root, '..', 'empty-auth.json');
      writeFileSync(noAuth, '{"auths":{}}');
      const anonPull = run('skopeo', ['inspect', '--raw', '--tls-verify=false', '--authfile', noAuth, `docker://${A}/public/base:latest`]);
      assert.equal(anonPull.code, 0, anonPull.err);
      assert.notEqual(run('skopeo', ['inspect', '--raw', '--tls-verify=false', '--authfile', noAuth, `docker://${A}/team/app:v1`]).code, 0);

      // buildah push --creds from containers-storage
      // (buildah cannot name an image after an upper-case temp path: pull it from us, anonymously)
      const id = run('buildah', ['pull', '-q', '--tls-verify=false', '--authfile', noAuth, `docker://${A}/public/base:latest`]);
      assert.equal(id.code, 0, id.err);
      const imageId = id.out.trim().split('\n').pop()!;
      const bp = run('buildah', ['push', '--tls-verify=false', '--creds', 'alice:alice-secret', imageId, `docker://${A}/team/built:1`], env);
      assert.equal(bp.code, 0, bp.err);
      const bpBad = run('buildah', ['push', '--tls-verify=false', '--creds', 'bob:bob-secret', imageId, `docker://${A}/team/built:2`], env);
      assert.notEqual(bpBad.code, 0, 'bob cannot push with buildah either');
      // podman pull with the login from above
      const pp = run('podman', ['pull', '-q', '--tls-verify=false', '--authfile', authfile, `${A}/team/built:1`]);
      assert.equal(pp.code, 0, pp.err);
      const tags = run('skopeo', ['list-tags', '--tls-verify=false', '--creds', 'alice:alice-secret', `docker://${A}/team/built`]);
      assert.deepEqual(JSON.parse(tags.out).Tags, ['1']);
    });
  });
}
