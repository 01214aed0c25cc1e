/**
 * NODE_EXTRA_CA_CERTS and tscopy's launcher (bin/tscopy.js's /bin/sh line, bin/deferred-ca.js,
 * src/copy/registry/trust.ts): run as a program, the launcher starts node without the variable (Node 20 would parse
 * the file at every start), and the certificates are trusted by the connections that verify: the client's and the
 * download workers'. Checked with a real TLS registry (tsregistry) whose CA is named only in NODE_EXTRA_CA_CERTS,
 * and a credential helper that records the environment it gets.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { makeTestPki, tempDir } from '../helpers.js';
import { startTsregistry } from '../registry-prod/util.js';
import { RegistryClient } from '../../src/copy/index.js';
import { digestOf } from '../../src/oci/digest.js';
import { MediaTypes, toJsonBytes } from '../../src/oci/index.js';

const BIN = new URL('../../../bin/tscopy.js', import.meta.url).pathname;

/** The launcher run as a program (its /bin/sh line), as `tscopy` on $PATH runs. */
function launch(args: string[], env: NodeJS.ProcessEnv) {
  return spawnSync(BIN, args, { encoding: 'utf8', env });
}

/** The launcher run by `node FILE` (the /bin/sh line is skipped: Node reads NODE_EXTRA_CA_CERTS itself). */
function viaNode(args: string[], env: NodeJS.ProcessEnv) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env });
}

describe('NODE_EXTRA_CA_CERTS, deferred by the tscopy launcher', () => {
  it('a registry whose CA is only in NODE_EXTRA_CA_CERTS: trusted by the launched tscopy (client and download workers), refused without it', async (t) => {
    const dir = tempDir(t, 'trust');
    makeTestPki(dir);
    const reg = await startTsregistry(t, { tls: { cert: join(dir, 'srv.pem'), key: join(dir, 'srv.key') }, log: { access: false } }, { dir: tempDir(t, 'trustreg') });
    // an image with a 5 MiB layer (over the 4 MiB at which a download worker takes a blob), pushed unverified
    const push = new RegistryClient(reg.addr, { tlsVerify: false, env: { ...process.env, CONTAINERS_REGISTRIES_CONF: '/nonexistent' } });
    t.after(() => push.close());
    const tar = randomBytes(5 << 20); // (not a tar: nothing here reads it)
    const layer = gzipSync(tar, { level: 1 });
    const config = toJsonBytes({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [digestOf(tar)] } });
    for (const b of [layer, config]) await push.putBlob('team/app', { digest: digestOf(b), size: b.length }, Readable.from([b]));
    const manifest = toJsonBytes({
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      config: { mediaType: MediaTypes.ociConfig, digest: digestOf(config), size: config.length },
      layers: [{ mediaType: MediaTypes.ociLayerGzip, digest: digestOf(layer), size: layer.length }],
    });
    await push.putManifest('team/app', 'v1', manifest, MediaTypes.ociManifest);

    const base: NodeJS.ProcessEnv = { ...process.env, CONTAINERS_REGISTRIES_CONF: '/nonexistent', TSIMAGE_DEBUG_HTTP: '1' };
    delete base.NODE_EXTRA_CA_CERTS;
    delete base.TSIMAGE_DEFERRED_CA_CERTS;
    const src = `docker://${reg.addr}/team/app:v1`;
    const layerPath = (out: string) => join(out, 'blobs', 'sha256', digestOf(layer).slice('sha256:'.length));

    // no CA: refused (the launcher passes nothing it was not given)
    const refused = launch(['copy', '-q', src, `oci:${join(dir, 'none')}:v1`], base);
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /certificate/i);
    // a stale TSIMAGE_DEFERRED_CA_CERTS without NODE_EXTRA_CA_CERTS is not trusted either
    const stale = launch(['copy', '-q', src, `oci:${join(dir, 'stale')}:v1`], { ...base, TSIMAGE_DEFERRED_CA_CERTS: join(dir, 'ca.pem') });
    assert.notEqual(stale.status, 0);
    assert.match(stale.stderr, /certificate/i);

    // the CA named by NODE_EXTRA_CA_CERTS: deferred by the launcher, trusted by the main thread and the worker
    for (const [how, run] of [['launched', launch], ['node FILE', viaNode]] as const) {
      const out = join(dir, how.replace(' ', '-'));
      const r = run(['copy', '-q', src, `oci:${out}:v1`], { ...base, NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem') });
      assert.equal(r.status, 0, `${how}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`worker GET https://${reg.addr}/v2/team/app/blobs/${digestOf(layer)} -> ok`), `${how}: the layer came through a worker`);
      assert.ok(readFileSync(layerPath(out)).equals(layer), how);
    }
  });

  it('the launcher does not read the file at start, reports an unreadable one at the first verifying connection, and gives child processes the variable back', async (t) => {
    const dir = tempDir(t, 'trustenv');
    const missing = join(dir, 'no-such-ca.pem');
    const base: NodeJS.ProcessEnv = { ...process.env, CONTAINERS_REGISTRIES_CONF: '/nonexistent', NODE_EXTRA_CA_CERTS: missing };
    delete base.TSIMAGE_DEFERRED_CA_CERTS;
    // run by node directly, Node reads the file at start and warns (what the launcher avoids)
    const direct = viaNode(['--version'], base);
    assert.equal(direct.status, 0, direct.stderr);
    assert.match(direct.stderr, /Ignoring extra certs from `[^`]*no-such-ca\.pem`/);
    // launched: no TLS, nothing read
    const quiet = launch(['--version'], base);
    assert.equal(quiet.status, 0, quiet.stderr);
    assert.equal(quiet.stderr, '');
    // launched, with a verifying connection: the same warning, once, then the connection's own failure (no server)
    const tls = launch(['inspect', '--retry-times', '0', 'docker://127.0.0.1:1/a/b:v1'], base);
    assert.notEqual(tls.status, 0);
    assert.equal(tls.stderr.match(/Ignoring extra certs from `[^`]*no-such-ca\.pem`, load failed/g)?.length, 1, tls.stderr);

    // a credential helper (a child process) sees NODE_EXTRA_CA_CERTS as the user set it
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    const log = join(dir, 'helper-env');
    writeFileSync(
      join(bin, 'docker-credential-envrec'),
      `#!/bin/sh\nread server\necho "NODE_EXTRA_CA_CERTS=\${NODE_EXTRA_CA_CERTS-unset}" > ${log}\necho '{"ServerURL":"'$server'","Username":"u","Secret":"p"}'\n`,
      { mode: 0o755 },
    );
    const authfile = join(dir, 'auth.json');
    writeFileSync(authfile, JSON.stringify({ credHelpers: { 'registry.invalid': 'envrec' } }));
    const login = launch(['login', '--get-login', '--authfile', authfile, 'registry.invalid'], { ...base, PATH: `${bin}:${process.env.PATH}` });
    assert.equal(login.status, 0, login.stderr);
    assert.equal(login.stdout.trim(), 'u');
    assert.equal(readFileSync(log, 'utf8').trim(), `NODE_EXTRA_CA_CERTS=${missing}`);
  });
});
