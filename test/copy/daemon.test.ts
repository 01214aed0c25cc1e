/**
 * docker-daemon: against a real Docker Engine API (podman's compat service on a socket in a temp dir, with a private
 * vfs store: the machine's podman store is never touched) and skopeo 1.9.3 as the oracle, both ways: what tscopy loads
 * skopeo reads back (same config bytes, same diffIDs), what skopeo loads tscopy reads (same synthesized manifest), and
 * the failures (no daemon, unknown image, destination without a tag) as skopeo words them.
 * The daemon re-exports what it stores, so manifests are compared as the daemon serves them (schema 2, layers = the
 * diffIDs), never with the source's manifest digest.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PEERS, requireTool, sh, tempDir, freePort } from '../helpers.js';
import { tscopy, tscopyFail } from './engine-util.js';
import { baseLayout, baseLayoutCopy, type BaseLayout } from '../fixtures/base.js';
import { OciLayout, parseManifest, parseConfig } from '../../src/oci/index.js';
import { digestOf } from '../../src/oci/digest.js';

interface Service {
  proc: ChildProcess;
  host: string;
}

let base: BaseLayout;
let baseConfig: { digest: string; diffIDs: string[] };
let work: string;
let daemon: Service;
const services: ChildProcess[] = [];
let runroot: string | undefined;

/** podman's Docker-compatible API on `listen`, storage in `dir` (vfs: no mounts); ready when /_ping answers. */
async function startService(dir: string, listen: string, ping: string[]): Promise<ChildProcess> {
  for (const d of ['root', 'tmp']) mkdirSync(join(dir, d), { recursive: true });
  // podman refuses a runroot longer than 50 characters (TMPDIR under the test runner's is longer): a short one in /tmp
  runroot ??= mkdtempSync('/tmp/tsimage-drun-');
  const log = openSync(join(dir, `service-${services.length}.log`), 'w');
  const proc = spawn(
    'podman',
    ['--root', join(dir, 'root'), '--runroot', runroot, '--tmpdir', join(dir, 'tmp'), '--storage-driver', 'vfs', 'system', 'service', '--time=0', listen],
    { stdio: ['ignore', log, log], env: { ...process.env, CONTAINERS_CONF: join(PEERS, 'containers.conf') } },
  );
  closeSync(log);
  services.push(proc);
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) break;
    if (spawnSync('curl', ['-sf', '-o', '/dev/null', ...ping], { encoding: 'utf8' }).status === 0) return proc;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`podman system service ${listen} did not come up: ${readFileSync(join(dir, `service-${services.length - 1}.log`), 'utf8')}`);
}

async function stopService(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(t);
}

function daemonTemps(): string[] {
  return readdirSync(tmpdir()).filter((f) => /^tsimage-daemon-\d+-[0-9a-f]{12}\.tar$/.test(f));
}

/** An oci: destination that a failed copy opened (as skopeo, the destination is opened first) holds no image. */
function assertNoImage(dir: string): void {
  if (!existsSync(join(dir, 'index.json'))) return;
  assert.deepEqual((JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: unknown[] }).manifests, []);
  assert.deepEqual(readdirSync(join(dir, 'blobs', 'sha256')), []);
}

/** skopeo inspect of a daemon image, parsed. */
function skopeoInspect(ref: string, host = daemon.host, extra: string[] = []): Record<string, unknown> {
  return JSON.parse(sh('skopeo', ['inspect', '--daemon-host', host, ...extra, ref])) as Record<string, unknown>;
}

before(async () => {
  requireTool('podman');
  requireTool('skopeo');
  requireTool('curl');
  base = await baseLayout();
  const layout = await OciLayout.open(base.dir);
  const m = parseManifest(await layout.readBytes(base.manifestDigest));
  assert.equal(m.kind, 'manifest');
  const cfgDigest = m.kind === 'manifest' ? m.doc.config.digest : '';
  baseConfig = { digest: cfgDigest, diffIDs: parseConfig(await layout.readBytes(cfgDigest as never)).rootfs.diff_ids };
  work = mkdtempSync(join(tmpdir(), 'tsimage-dtest-'));
  const sock = join(work, 'docker.sock');
  const proc = await startService(join(work, 'store'), `unix://${sock}`, ['--unix-socket', sock, 'http://d/_ping']);
  daemon = { proc, host: `unix://${sock}` };
});

after(async () => {
  // every image the tests loaded lives in the private store, removed with it once the services are stopped
  for (const p of services) await stopService(p);
  if (work) rmSync(work, { recursive: true, force: true });
  if (runroot) rmSync(runroot, { recursive: true, force: true });
});

describe('docker-daemon: source (GET /images/get, read as a docker-archive)', () => {
  it('skopeo loads, tscopy reads: the same manifest as skopeo sees, the config byte for byte, layers verified against the diffIDs', (t) => {
    const img = 'localhost/tsimage-test/from-skopeo:v1';
    sh('skopeo', ['copy', '-q', '--dest-daemon-host', daemon.host, base.ociRef, `docker-daemon:${img}`]);
    const theirs = sh('skopeo', ['inspect', '--raw', '--daemon-host', daemon.host, `docker-daemon:${img}`]);
    const ours = tscopy(['inspect', '--raw', '--daemon-host', daemon.host, `docker-daemon:${img}`]);
    assert.equal(ours, theirs);
    const m = JSON.parse(ours) as { config: { digest: string }; layers: { digest: string }[] };
    assert.equal(m.config.digest, baseConfig.digest);
    assert.deepEqual(m.layers.map((l) => l.digest), baseConfig.diffIDs);

    // a copy out of the daemon into an OCI layout: config verbatim, each layer (compressed on the way) uncompresses to its diffID
    const d = tempDir(t, 'daemon-src');
    tscopy(['copy', '-q', '--src-daemon-host', daemon.host, `docker-daemon:${img}`, `oci:${join(d, 'out')}:t`]);
    const cfg = sh('skopeo', ['inspect', '--config', '--raw', `oci:${join(d, 'out')}:t`]);
    assert.equal(digestOf(cfg), baseConfig.digest);
    // skopeo verifies every blob of what tscopy wrote while copying it again
    sh('skopeo', ['copy', '-q', `oci:${join(d, 'out')}:t`, `oci:${join(d, 'again')}:t`]);
    assert.deepEqual(parseConfig(Buffer.from(cfg)).rootfs.diff_ids, baseConfig.diffIDs);

    // by image ID (the config digest), as skopeo takes it: no Name, same manifest
    const byId = JSON.parse(tscopy(['inspect', '--daemon-host', daemon.host, `docker-daemon:${baseConfig.digest}`])) as Record<string, unknown>;
    const skById = skopeoInspect(`docker-daemon:${baseConfig.digest}`);
    assert.equal(byId.Digest, skById.Digest);
    assert.equal(byId.Name, undefined);
    assert.equal(skById.Name, undefined);
    assert.deepEqual(daemonTemps(), [], 'the docker save copy is removed after use');
  });

  it('inspect --daemon-host: skopeo\'s fields, and --config the same config', () => {
    const img = 'localhost/tsimage-test/from-skopeo:v1';
    const ours = JSON.parse(tscopy(['inspect', '--daemon-host', daemon.host, `docker-daemon:${img}`])) as Record<string, unknown>;
    const theirs = skopeoInspect(`docker-daemon:${img}`);
    for (const k of ['Name', 'Digest', 'RepoTags', 'Created', 'DockerVersion', 'Labels', 'Architecture', 'Os', 'Layers', 'Env']) assert.deepEqual(ours[k], theirs[k], k);
    assert.equal(ours.Name, 'localhost/tsimage-test/from-skopeo');
    assert.deepEqual(
      JSON.parse(tscopy(['inspect', '--config', '--daemon-host', daemon.host, `docker-daemon:${img}`])),
      JSON.parse(sh('skopeo', ['inspect', '--config', '--daemon-host', daemon.host, `docker-daemon:${img}`])),
    );
    // $DOCKER_HOST is the default daemon (skopeo 1.9.3 ignores it: checked as a tscopy-only behaviour)
    const env = JSON.parse(tscopy(['inspect', `docker-daemon:${img}`], { DOCKER_HOST: daemon.host })) as Record<string, unknown>;
    assert.equal(env.Digest, theirs.Digest);
  });
});

describe('docker-daemon: destination (POST /images/load of a docker-archive stream)', () => {
  it('tscopy loads the base image, skopeo reads it back: config byte for byte, diffIDs, both names', (t) => {
    const img = 'localhost/tsimage-test/from-tscopy:v1';
    const extra = 'localhost/tsimage-test/extra:v2';
    // not in the daemon before
    assert.notEqual(spawnSync('skopeo', ['inspect', '--daemon-host', daemon.host, `docker-daemon:${img}`]).status, 0);
    tscopy(['copy', '-q', '--dest-daemon-host', daemon.host, '--additional-tag', extra, base.ociRef, `docker-daemon:${img}`]);
    for (const name of [img, extra]) {
      const cfg = sh('skopeo', ['inspect', '--config', '--raw', '--daemon-host', daemon.host, `docker-daemon:${name}`]);
      assert.equal(digestOf(cfg), baseConfig.digest, name);
      assert.deepEqual(skopeoInspect(`docker-daemon:${name}`).Layers, baseConfig.diffIDs, name);
    }
    // skopeo copies it out of the daemon (verifying each layer against its diffID) with the base's config
    const d = tempDir(t, 'daemon-dest');
    sh('skopeo', ['copy', '-q', '--src-daemon-host', daemon.host, `docker-daemon:${img}`, `oci:${join(d, 'back')}:t`]);
    assert.equal(digestOf(sh('skopeo', ['inspect', '--config', '--raw', `oci:${join(d, 'back')}:t`])), baseConfig.digest);
    // what skopeo loads from the same source is the same image (same ID and diffIDs: the manifests the daemon serves match)
    sh('skopeo', ['copy', '-q', '--dest-daemon-host', daemon.host, base.ociRef, 'docker-daemon:localhost/tsimage-test/by-skopeo:v1']);
    assert.equal(
      sh('skopeo', ['inspect', '--raw', '--daemon-host', daemon.host, 'docker-daemon:localhost/tsimage-test/by-skopeo:v1']),
      sh('skopeo', ['inspect', '--raw', '--daemon-host', daemon.host, `docker-daemon:${img}`]),
    );
    assert.deepEqual(daemonTemps(), []);
  });

  it('round trip daemon -> daemon under a docker.io name (RepoTags normalized as containers/image writes them)', () => {
    tscopy(['copy', '-q', '--src-daemon-host', daemon.host, '--dest-daemon-host', daemon.host, 'docker-daemon:localhost/tsimage-test/from-tscopy:v1', 'docker-daemon:tsimage-test-busybox:rt']);
    // the daemon knows it under its docker.io name
    const theirs = skopeoInspect('docker-daemon:docker.io/library/tsimage-test-busybox:rt');
    assert.equal(theirs.Name, 'docker.io/library/tsimage-test-busybox');
    assert.deepEqual(theirs.Layers, baseConfig.diffIDs);
  });
});

describe('docker-daemon: failures, as skopeo', () => {
  it('no daemon listening: exit 1 naming the socket (source, destination, inspect)', (t) => {
    const d = tempDir(t, 'daemon-none');
    const host = `unix://${join(d, 'missing.sock')}`;
    const want = `Cannot connect to the Docker daemon at ${host}. Is the docker daemon running?`;
    const sk = spawnSync('skopeo', ['inspect', '--daemon-host', host, 'docker-daemon:localhost/x:v1'], { encoding: 'utf8' });
    assert.ok(sk.stderr.includes(want), sk.stderr);
    for (const args of [
      ['inspect', '--daemon-host', host, 'docker-daemon:localhost/x:v1'],
      ['copy', '-q', '--src-daemon-host', host, 'docker-daemon:localhost/x:v1', `oci:${join(d, 'out')}:t`],
      ['copy', '-q', '--dest-daemon-host', host, base.ociRef, 'docker-daemon:localhost/x:v1'],
    ]) {
      const r = tscopyFail(args);
      assert.equal(r.status, 1, r.stderr);
      assert.ok(r.stderr.includes(want), r.stderr);
    }
    assertNoImage(join(d, 'out'));
    assert.deepEqual(daemonTemps(), []);
  });

  it('unknown image: exit 1, the daemon\'s answer; nothing written', (t) => {
    const d = tempDir(t, 'daemon-unknown');
    const sk = spawnSync('skopeo', ['inspect', '--daemon-host', daemon.host, 'docker-daemon:localhost/tsimage-test/nope:v1'], { encoding: 'utf8' });
    assert.notEqual(sk.status, 0);
    assert.match(sk.stderr, /loading image from docker engine: Error response from daemon: .*image not known/);
    const r = tscopyFail(['copy', '-q', '--src-daemon-host', daemon.host, 'docker-daemon:localhost/tsimage-test/nope:v1', `oci:${join(d, 'out')}:t`]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /docker-daemon:localhost\/tsimage-test\/nope:v1: loading image from docker engine: Error response from daemon: .*image not known/);
    assertNoImage(join(d, 'out'));
    assert.deepEqual(daemonTemps(), []);
  });

  it('a corrupt source layer: exit 1, nothing loaded into the daemon, no temp files', async (t) => {
    const d = tempDir(t, 'daemon-corrupt');
    const layout = await baseLayoutCopy(d);
    const m = parseManifest(await layout.readBytes(base.manifestDigest));
    assert.equal(m.kind, 'manifest');
    const layer = m.kind === 'manifest' ? m.doc.layers[0]!.digest : '';
    const p = layout.blobPath(layer as never);
    const bytes = readFileSync(p);
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 100) ^ 0xff, bytes.length - 100);
    chmodSync(p, 0o644);
    writeFileSync(p, bytes);
    const img = 'localhost/tsimage-test/corrupt:v1';
    const r = tscopyFail(['copy', '-q', '--dest-daemon-host', daemon.host, `oci:${d}:latest`, `docker-daemon:${img}`]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /sha256:/);
    const sk = spawnSync('skopeo', ['inspect', '--daemon-host', daemon.host, `docker-daemon:${img}`], { encoding: 'utf8' });
    assert.notEqual(sk.status, 0, 'the daemon has no such image');
    assert.match(sk.stderr, /image not known/);
    assert.deepEqual(readdirSync(tmpdir()).filter((f) => f.startsWith('tsimage-darchive-')), [], 'the writer\'s staging dir is removed');
    assert.deepEqual(daemonTemps(), []);
  });

  it('destination without a tag, and names skopeo refuses, with skopeo\'s words', () => {
    const id = baseConfig.digest;
    for (const [dest, want] of [
      [`docker-daemon:${id}`, `Invalid destination docker-daemon:${id}: a destination must be a name:tag`],
      [`docker-daemon:localhost/x@${id}`, `Invalid destination docker-daemon:localhost/x@${id}: a destination must be a name:tag`],
      ['docker-daemon:localhost/x', 'docker-daemon: reference localhost/x has neither a tag nor a digest'],
      ['docker-daemon:sha256:a09c', 'Invalid docker-daemon: reference sha256:a09c: The sha256 repository name is reserved for (non-shortened) digest references'],
    ] as const) {
      const sk = spawnSync('skopeo', ['copy', '-q', '--dest-daemon-host', daemon.host, base.ociRef, dest], { encoding: 'utf8' });
      assert.notEqual(sk.status, 0);
      assert.ok(sk.stderr.includes(want), `skopeo: ${sk.stderr}`);
      const r = tscopyFail(['copy', '-q', '--dest-daemon-host', daemon.host, base.ociRef, dest]);
      assert.notEqual(r.status, 0);
      assert.ok(r.stderr.includes(want), `tscopy: ${r.stderr}`);
    }
  });
});

describe('docker-daemon: daemon addresses', () => {
  it('http://HOST:PORT is plain HTTP; tcp:// means HTTPS (as skopeo), so a plain daemon there fails with a hint', async (t) => {
    const port = await freePort();
    const proc = await startService(join(work, 'store'), `tcp://127.0.0.1:${port}`, [`http://127.0.0.1:${port}/_ping`]);
    t.after(() => stopService(proc));
    const img = 'localhost/tsimage-test/from-skopeo:v1';
    const viaHttp = JSON.parse(tscopy(['inspect', '--daemon-host', `http://127.0.0.1:${port}`, `docker-daemon:${img}`])) as Record<string, unknown>;
    assert.equal(viaHttp.Digest, skopeoInspect(`docker-daemon:${img}`, `http://127.0.0.1:${port}`).Digest);
    const sk = spawnSync('skopeo', ['inspect', '--daemon-host', `tcp://127.0.0.1:${port}`, `docker-daemon:${img}`], { encoding: 'utf8' });
    assert.notEqual(sk.status, 0, 'skopeo speaks HTTPS to tcp://');
    const r = tscopyFail(['inspect', '--daemon-host', `tcp://127.0.0.1:${port}`, `docker-daemon:${img}`]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /TLS connection to the Docker daemon at tcp:\/\/127\.0\.0\.1:\d+ failed.*use http:\/\/HOST:PORT/);
    // $DOCKER_HOST=tcp:// follows the docker CLI: plain HTTP unless $DOCKER_TLS_VERIFY
    const env = JSON.parse(tscopy(['inspect', `docker-daemon:${img}`], { DOCKER_HOST: `tcp://127.0.0.1:${port}` })) as Record<string, unknown>;
    assert.equal(env.Digest, viaHttp.Digest);
  });

  it('a bad --daemon-host is a usage error', () => {
    const r = tscopyFail(['inspect', '--daemon-host', 'ssh://me@host', 'docker-daemon:localhost/x:v1']);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /unsupported protocol "ssh"/);
  });
});
