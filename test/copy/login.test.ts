/**
 * Authentication against a real tsregistry process configured for Bearer tokens and for Basic auth:
 * the client's handshakes (per-repository scopes, the extra pull scope of a cross-repository mount,
 * refusals that are not retried), and `tscopy login/logout/list-tags/delete` with auth.json files that
 * skopeo reads and writes (`skopeo login --get-login`, `skopeo inspect --authfile`, and the other way round).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { tempDir, requireTool, ROOT } from '../helpers.js';
import { startWithUsers } from '../registry-prod/util.js';
import { RegistryClient } from '../../src/copy/index.js';
import { OciError, type Digest } from '../../src/oci/index.js';
import { digestOf } from '../../src/oci/digest.js';

const sha = (b: Buffer | string) => digestOf(b);

function run(cmd: string, args: string[], o: { env?: NodeJS.ProcessEnv; input?: string } = {}): { code: number; out: string; err: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...o.env }, input: o.input ?? '', timeout: 60_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}
const tscopy = (args: string[], o: { env?: NodeJS.ProcessEnv; input?: string } = {}) => run(process.execPath, [join(ROOT, 'bin', 'tscopy.js'), ...args], o);

async function setup(t: Parameters<typeof tempDir>[0], mode: 'token' | 'basic') {
  const { reg, dir } = await startWithUsers(t, mode, [
    { repos: ['team/**'], users: ['alice'], actions: ['pull', 'push', 'delete'] },
    { repos: ['team/**'], users: ['bob'], actions: ['pull'] },
    { repos: ['public/**'], anonymous: true, actions: ['pull'] },
  ], 'login');
  // no stray credentials from the machine: every tool gets its own empty HOME/XDG dirs
  const env = { HOME: join(dir, 'home'), XDG_RUNTIME_DIR: join(dir, 'run'), XDG_CONFIG_HOME: join(dir, 'cfg'), REGISTRY_AUTH_FILE: '', DOCKER_CONFIG: '' };
  return { reg, dir, env };
}

async function pushImage(c: RegistryClient, repo: string, tag: string) {
  const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const layer = randomBytes(2000);
  await c.putBlob(repo, { digest: sha(cfg), size: cfg.length }, Readable.from([cfg]));
  await c.putBlob(repo, { digest: sha(layer), size: layer.length }, Readable.from([layer]));
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(cfg), size: cfg.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(layer), size: layer.length }],
    }),
  );
  return { digest: await c.putManifest(repo, tag, bytes, 'application/vnd.oci.image.manifest.v1+json'), layer };
}

for (const mode of ['token', 'basic'] as const) {
  describe(`registry auth (${mode})`, () => {
    it('handshakes with per-repository scopes; mounts need pull on the source; refusals are not retried', async (t) => {
      const { reg } = await setup(t, mode);
      const alice = new RegistryClient(reg.addr, { tlsVerify: false, creds: 'alice:alice-secret', retryDelayMs: 10 });
      t.after(() => alice.close());
      const img = await pushImage(alice, 'team/app', 'v1');
      assert.equal((await alice.getManifest('team/app', 'v1')).digest, img.digest);
      if (mode === 'token') assert.ok(alice.stats.tokenFetches >= 1 && alice.stats.tokenFetches <= 3, `tokens fetched per scope set, cached (${alice.stats.tokenFetches})`);
      // cross-repository mount: push on team/other + pull on team/app in one token
      assert.equal(await alice.mountBlob('team/other', sha(img.layer), 'team/app'), true);
      assert.deepEqual(await alice.statBlob('team/other', sha(img.layer)), { size: img.layer.length });
      // alice cannot mount from a repository she cannot read: refused, falls back (false), nothing mounted
      const bobPull = new RegistryClient(reg.addr, { tlsVerify: false, creds: 'bob:bob-secret', retryDelayMs: 10 });
      t.after(() => bobPull.close());
      assert.deepEqual((await bobPull.listTags('team/app')).sort(), ['v1']);
      // bob may pull but not push: the refusal is an auth error, not retried
      await assert.rejects(bobPull.putBlob('team/app', {}, Readable.from([Buffer.from('x')])), (e: any) => e instanceof OciError && (e.code === 'UNAUTHORIZED' || e.code === 'DENIED') && !e.temporary);
      assert.equal(bobPull.stats.retries, 0);
      // wrong password: unauthorized, not retried
      const wrong = new RegistryClient(reg.addr, { tlsVerify: false, creds: 'alice:nope', retryDelayMs: 10 });
      t.after(() => wrong.close());
      await assert.rejects(wrong.getManifest('team/app', 'v1'), (e: any) => e instanceof OciError && e.status === 401 && /401|UNAUTHORIZED/i.test(e.message));
      await assert.rejects(wrong.checkLogin(), (e: any) => e instanceof OciError && e.code === 'UNAUTHORIZED');
      assert.equal(wrong.stats.retries, 0);
      // anonymous: refused on team/**
      const anon = new RegistryClient(reg.addr, { tlsVerify: false, creds: {}, retryDelayMs: 10 });
      t.after(() => anon.close());
      await assert.rejects(anon.getManifest('team/app', 'v1'), (e: any) => e instanceof OciError && e.status === 401);
    });

    it('tscopy login/logout write auth.json that skopeo reads, and read what skopeo writes', async (t) => {
      requireTool('skopeo');
      const { reg, dir, env } = await setup(t, mode);
      const A = reg.addr;
      const ours = join(dir, 'ours.json');
      const theirs = join(dir, 'theirs.json');
      const alice = new RegistryClient(A, { tlsVerify: false, creds: 'alice:alice-secret' });
      t.after(() => alice.close());
      const img = await pushImage(alice, 'team/app', 'v1');
      await alice.putManifest('team/app', 'v2', (await alice.getManifest('team/app', 'v1')).bytes, 'application/vnd.oci.image.manifest.v1+json');

      // a wrong password fails and writes nothing
      const bad = tscopy(['login', '--tls-verify=false', '--authfile', ours, '-u', 'alice', '-p', 'wrong', A], { env });
      assert.equal(bad.code, 1, bad.err);
      assert.match(bad.err, /invalid username\/password/);
      assert.equal(existsSync(ours), false);
      // right password (from stdin): verified, then saved
      const good = tscopy(['login', '--tls-verify=false', '--authfile', ours, '-u', 'alice', '--password-stdin', A], { env, input: 'alice-secret\n' });
      assert.equal(good.code, 0, good.err);
      assert.match(good.out, /Login Succeeded!/);
      const doc = JSON.parse(readFileSync(ours, 'utf8'));
      assert.equal(Buffer.from(doc.auths[A].auth, 'base64').toString(), 'alice:alice-secret');
      // skopeo reads our file
      const gl = run('skopeo', ['login', '--get-login', '--authfile', ours, A], { env });
      assert.equal(gl.code, 0, gl.err);
      assert.equal(gl.out.trim(), 'alice');
      const insp = run('skopeo', ['inspect', '--raw', '--tls-verify=false', '--authfile', ours, `docker://${A}/team/app:v1`], { env });
      assert.equal(insp.code, 0, insp.err);
      assert.equal(createHash('sha256').update(insp.out).digest('hex'), img.digest.slice(7));
      // login again without credentials: the stored ones are checked
      const again = tscopy(['login', '--tls-verify=false', '--authfile', ours, A], { env });
      assert.equal(again.code, 0, again.err);
      assert.match(again.out, /Already logged in/);

      // skopeo writes, we read
      const sl = run('skopeo', ['login', '--tls-verify=false', '--authfile', theirs, '-u', 'alice', '-p', 'alice-secret', A], { env });
      assert.equal(sl.code, 0, sl.err);
      const ourGl = tscopy(['login', '--get-login', '--authfile', theirs, A], { env });
      assert.equal(ourGl.code, 0, ourGl.err);
      assert.equal(ourGl.out, 'alice\n');
      // list-tags: the same JSON as skopeo's, byte for byte
      const ourTags = tscopy(['list-tags', '--tls-verify=false', '--authfile', theirs, `docker://${A}/team/app`], { env });
      assert.equal(ourTags.code, 0, ourTags.err);
      const skTags = run('skopeo', ['list-tags', '--tls-verify=false', '--authfile', theirs, `docker://${A}/team/app`], { env });
      assert.equal(skTags.code, 0, skTags.err);
      assert.equal(ourTags.out, skTags.out);
      assert.deepEqual(JSON.parse(ourTags.out).Tags.sort(), ['v1', 'v2']);
      // --creds wins over the file; --no-creds is anonymous (refused here)
      assert.equal(tscopy(['list-tags', '--tls-verify=false', '--creds', 'bob:bob-secret', `docker://${A}/team/app`], { env }).code, 0);
      const anon = tscopy(['list-tags', '--tls-verify=false', '--no-creds', `docker://${A}/team/app`], { env });
      assert.equal(anon.code, 1);
      assert.match(anon.err, /401|UNAUTHORIZED|authentication/i);
      // usage errors exit 2
      assert.equal(tscopy(['list-tags', `docker://${A}/team/app:v1`], { env }).code, 2);
      assert.equal(tscopy(['list-tags', '--retry-times', 'x', `docker://${A}/team/app`], { env }).code, 2);

      // delete by tag (bob cannot; alice can): every tag of the manifest goes
      const bobDel = tscopy(['delete', '--tls-verify=false', '--creds', 'bob:bob-secret', `docker://${A}/team/app:v1`], { env });
      assert.equal(bobDel.code, 1, bobDel.out);
      const del = tscopy(['delete', '--tls-verify=false', '--authfile', ours, `docker://${A}/team/app:v1`], { env });
      assert.equal(del.code, 0, del.err);
      assert.equal(await alice.headManifest('team/app', 'v2'), undefined);
      const gone = tscopy(['delete', '--tls-verify=false', '--authfile', ours, `docker://${A}/team/app@${img.digest}`], { env });
      assert.equal(gone.code, 1);
      assert.match(gone.err, /MANIFEST_UNKNOWN|not found|unknown/i);

      // logout: removed for us and for skopeo
      const lo = tscopy(['logout', '--authfile', ours, A], { env });
      assert.equal(lo.code, 0, lo.err);
      assert.match(lo.out, new RegExp(`Removed login credentials for ${A.replace(/\./g, '\\.')}`));
      assert.notEqual(run('skopeo', ['login', '--get-login', '--authfile', ours, A], { env }).code, 0);
      const lo2 = tscopy(['logout', '--authfile', ours, A], { env });
      assert.equal(lo2.code, 1);
      assert.match(lo2.err, /not logged into/);
      // logout --all on skopeo's file
      writeFileSync(join(dir, 'x'), '');
      assert.equal(tscopy(['logout', '--all', '--authfile', theirs], { env }).code, 0);
      assert.deepEqual(JSON.parse(readFileSync(theirs, 'utf8')).auths, {});
    });
    it('credential helpers: credHelpers / credsStore in auth.json run docker-credential-<name> get', async (t) => {
      const { reg, dir, env } = await setup(t, mode);
      const A = reg.addr;
      const alice = new RegistryClient(A, { tlsVerify: false, creds: 'alice:alice-secret' });
      t.after(() => alice.close());
      await pushImage(alice, 'team/app', 'v1');
      // a real helper program on $PATH (the protocol: server on stdin, JSON on stdout); it logs what it was asked
      const bin = join(dir, 'helpers');
      mkdirSync(bin);
      const log = join(dir, 'helper.log');
      writeFileSync(
        join(bin, 'docker-credential-tstest'),
        `#!/bin/sh\n[ "$1" = get ] || exit 2\nread server\necho "$server" >> ${log}\n` +
          `if [ "$server" = "${A}" ]; then echo '{"ServerURL":"${A}","Username":"alice","Secret":"alice-secret"}'; else echo 'credentials not found in native keychain'; exit 1; fi\n`,
        { mode: 0o755 },
      );
      const henv = { ...env, PATH: `${bin}:${process.env.PATH}` };
      const viaHelpers = join(dir, 'helpers.json');
      writeFileSync(viaHelpers, JSON.stringify({ credHelpers: { [A]: 'tstest' } }));
      const tags = tscopy(['list-tags', '--tls-verify=false', '--authfile', viaHelpers, `docker://${A}/team/app`], { env: henv });
      assert.equal(tags.code, 0, tags.err);
      assert.deepEqual((JSON.parse(tags.out) as { Tags: string[] }).Tags, ['v1']);
      assert.equal(readFileSync(log, 'utf8').trim(), A);
      // credsStore: the default helper for registries without an entry of their own
      const viaStore = join(dir, 'store.json');
      writeFileSync(viaStore, JSON.stringify({ auths: { [A]: {} }, credsStore: 'tstest' }));
      assert.equal(tscopy(['inspect', '--raw', '--tls-verify=false', '--authfile', viaStore, `docker://${A}/team/app:v1`], { env: henv }).code, 0);
      // the helper has nothing for this registry: anonymous, refused by the registry
      writeFileSync(viaHelpers, JSON.stringify({ credHelpers: { [A]: 'tstest' } }).replace(A, A.replace('127.0.0.1', 'localhost')));
      const none = tscopy(['list-tags', '--tls-verify=false', '--authfile', viaHelpers, `docker://${A.replace('127.0.0.1', 'localhost')}/team/app`], { env: henv });
      assert.notEqual(none.code, 0);
      assert.match(none.err, /401|unauthorized|authentication required|denied/i);
      // skopeo's other credential flags: --username/--password, --src-username/--src-password, --no-creds
      const insp = tscopy(['inspect', '--raw', '--tls-verify=false', '--username', 'alice', '--password', 'alice-secret', `docker://${A}/team/app:v1`], { env });
      assert.equal(insp.code, 0, insp.err);
      const cp = tscopy(['copy', '-q', '--src-tls-verify=false', '--src-username', 'alice', '--src-password', 'alice-secret', `docker://${A}/team/app:v1`, `oci:${join(dir, 'o')}:x`], { env });
      assert.equal(cp.code, 0, cp.err);
      // --no-creds: the helper is not asked (anonymous: refused)
      const anon = tscopy(['inspect', '--raw', '--tls-verify=false', '--no-creds', '--authfile', viaStore, `docker://${A}/team/app:v1`], { env: henv });
      assert.notEqual(anon.code, 0);
      assert.match(anon.err, /401|unauthorized|authentication required|denied/i);
      const both = tscopy(['inspect', '--raw', '--tls-verify=false', '--creds', 'alice:x', '--username', 'alice', '--password', 'x', `docker://${A}/team/app:v1`], { env });
      assert.equal(both.code, 2);
      assert.match(both.err, /--creds, --username\/--password and --no-creds are mutually exclusive/);
      const half = tscopy(['copy', '-q', '--src-username', 'alice', `docker://${A}/team/app:v1`, `oci:${join(dir, 'o2')}:x`], { env });
      assert.equal(half.code, 2);
      assert.match(half.err, /--src-username and --src-password go together/);
      // a helper that is not installed is named in the error
      writeFileSync(viaHelpers, JSON.stringify({ credHelpers: { [A]: 'missing' } }));
      const missing = tscopy(['list-tags', '--tls-verify=false', '--authfile', viaHelpers, `docker://${A}/team/app`], { env: henv });
      assert.notEqual(missing.code, 0);
      assert.match(missing.err, /docker-credential-missing is not installed/);
    });
  });
}

describe('credentials lookup', () => {
  it('follows the containers order: REGISTRY_AUTH_FILE / XDG_RUNTIME_DIR, then ~/.config, then docker config', async (t) => {
    const { lookupCredentials, defaultAuthFile } = await import('../../src/copy/index.js');
    const dir = tempDir(t, 'creds');
    const home = join(dir, 'home');
    const env = { HOME: home, XDG_RUNTIME_DIR: join(dir, 'run') } as NodeJS.ProcessEnv;
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(home, '.docker'), { recursive: true });
    const b = (s: string) => Buffer.from(s).toString('base64');
    writeFileSync(join(home, '.docker', 'config.json'), JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: b('hub:pw') }, 'reg.example:5000': { auth: b('dock:pw') } } }));
    assert.equal(defaultAuthFile({ env }), join(dir, 'run', 'containers', 'auth.json'));
    assert.equal(defaultAuthFile({ env: { HOME: home } }), `/run/containers/${process.getuid!()}/auth.json`);
    assert.equal(lookupCredentials('docker.io', 'library/busybox', { env })?.username, 'hub');
    assert.equal(lookupCredentials('reg.example:5000', 'a/b', { env })?.username, 'dock');
    mkdirSync(join(dir, 'run', 'containers'), { recursive: true });
    writeFileSync(
      join(dir, 'run', 'containers', 'auth.json'),
      JSON.stringify({ auths: { 'reg.example:5000': { auth: b('podman:pw') }, 'reg.example:5000/team': { auth: b('teamuser:p:w') } } }),
    );
    assert.equal(lookupCredentials('reg.example:5000', 'a/b', { env })?.username, 'podman');
    const team = lookupCredentials('reg.example:5000', 'team/app', { env });
    assert.deepEqual([team?.username, team?.password], ['teamuser', 'p:w']);
    assert.equal(lookupCredentials('other.example', undefined, { env }), undefined);
    // an explicit --authfile is the only file read
    assert.equal(lookupCredentials('reg.example:5000', 'a/b', { env, authfile: join(dir, 'none.json') }), undefined);
    writeFileSync(join(dir, 'broken.json'), '{not json');
    assert.throws(() => lookupCredentials('x', undefined, { env, authfile: join(dir, 'broken.json') }), /broken\.json is not valid JSON/);
  });
});
