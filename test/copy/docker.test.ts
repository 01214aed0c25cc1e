/**
 * The docker:// transport: names and policy scopes as containers/image has them; ImageSource/ImageDestination
 * over a real registry with skopeo and podman as oracles (skopeo pushes, we read with the same digests; we
 * push, skopeo reads our bytes verbatim and podman runs the image); reuse results (absent, mounted, present);
 * registries.conf `insecure = true`; TLS with a private CA via --cert-dir and --tls-verify=false.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdirSync, writeFileSync, copyFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { makeTestPki, tempDir, sh, requireTool, PEERS } from '../helpers.js';
import { baseLayout } from '../fixtures/base.js';
import { startRegistry } from '../registry/util.js';
import { startTsregistry } from '../registry-prod/util.js';
import { dockerTransport, parseDockerName, RegistryClient, closeRegistryClients, parseRegistriesConf, findRegistry } from '../../src/copy/index.js';
import { parseManifest, type Digest, type Descriptor } from '../../src/oci/index.js';
import { digestOf } from '../../src/oci/digest.js';

const sha = (b: Buffer | string) => digestOf(b);

async function readAll(s: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of s) out.push(c as Buffer);
  return Buffer.concat(out);
}

describe('docker:// names', () => {
  it('normalises like containers/image and gives its policy scopes', () => {
    const n = dockerTransport.parse('//busybox');
    assert.equal(n.toString(), 'docker://docker.io/library/busybox:latest');
    assert.equal(n.dockerReference, 'docker.io/library/busybox:latest');
    assert.equal(n.policyIdentity(), 'docker.io/library/busybox:latest');
    assert.deepEqual(n.policyNamespaces(), ['docker.io/library/busybox', 'docker.io/library', 'docker.io', '*.io']);
    const m = dockerTransport.parse('//reg.example.com:5000/team/app/web@sha256:' + 'a'.repeat(64));
    assert.equal(m.policyIdentity(), 'reg.example.com:5000/team/app/web@sha256:' + 'a'.repeat(64));
    assert.deepEqual(m.policyNamespaces(), [
      'reg.example.com:5000/team/app/web',
      'reg.example.com:5000/team/app',
      'reg.example.com:5000/team',
      'reg.example.com:5000',
      '*.example.com',
      '*.com',
    ]);
    assert.equal(parseDockerName('//localhost:5000/x').ref.tag, 'latest');
    assert.throws(() => dockerTransport.parse('busybox'), /expected docker:\/\//);
    assert.throws(() => dockerTransport.parse('//busybox:1@sha256:' + 'a'.repeat(64)), /both a tag and a digest/);
    assert.throws(() => dockerTransport.parse('//Busybox'), /lowercase/);
  });

  it('reads registries.conf (V2 [[registry]] and V1 tables), most specific prefix first', async () => {
    const conf = {
      entries: [
        ...(await parseRegistriesConf(
          `unqualified-search-registries = ["docker.io"]\n[[registry]]\nlocation = "reg.example:5000"\ninsecure = true\n[[registry]]\nprefix = "reg.example:5000/secure"\nlocation = "reg.example:5000/secure"\n[[registry]]\nlocation = "*.internal"\ninsecure = true\n`,
          'a.conf',
        )),
        ...(await parseRegistriesConf(`[registries.insecure]\nregistries = ["old.example"]\n[registries.block]\nregistries = ["bad.example"]\n`, 'v1.conf')),
      ],
      files: [],
    };
    assert.equal(findRegistry(conf, 'reg.example:5000')?.insecure, true);
    assert.equal(findRegistry(conf, 'reg.example:5000/team/x')?.insecure, true);
    assert.equal(findRegistry(conf, 'reg.example:5000/secure/x')?.insecure, false);
    assert.equal(findRegistry(conf, 'a.b.internal')?.insecure, true);
    assert.equal(findRegistry(conf, 'old.example')?.insecure, true);
    assert.equal(findRegistry(conf, 'bad.example/x')?.blocked, true);
    assert.equal(findRegistry(conf, 'reg.example:50001'), undefined);
    await assert.rejects(parseRegistriesConf('[[registry]\nlocation = 1', 'broken.conf'), /broken\.conf"?: invalid TOML/);
  });
});

describe('docker:// transport against a registry', () => {
  it('reads what skopeo pushed, writes what skopeo reads verbatim and podman runs; reuse: absent, mounted, present', async (t) => {
    requireTool('skopeo');
    requireTool('podman');
    const base = await baseLayout();
    // a registry process: skopeo/podman run synchronously here
    const reg = await startTsregistry(t, { log: { access: false } });
    const A = reg.addr;
    t.after(() => closeRegistryClients());
    sh('skopeo', ['copy', '-q', '--dest-tls-verify=false', base.ociRef, `docker://${A}/base/img:v1`]);

    const src = await dockerTransport.source(dockerTransport.parse(`//${A}/base/img:v1`), { tlsVerify: false });
    const m = await src.manifest();
    assert.equal(m.digest, base.manifestDigest, 'skopeo kept the layout digest, we read it');
    assert.equal(JSON.parse(sh('skopeo', ['inspect', '--tls-verify=false', `docker://${A}/base/img:v1`])).Digest, m.digest);
    const parsed = parseManifest(m.bytes, m.mediaType);
    assert.equal(parsed.kind, 'manifest');
    if (parsed.kind !== 'manifest') return;
    const man = parsed.doc;
    const blobs = [man.config, ...man.layers];
    for (const b of blobs) assert.equal(sha(await readAll(await src.blob(b))), b.digest);
    assert.deepEqual(await src.tags!(), ['v1']);
    assert.equal(await src.manifestByRef!('nope'), undefined);

    // write to another repository of the same registry through the destination
    const dest = await dockerTransport.destination(dockerTransport.parse(`//${A}/mirror/img:v2`), { tlsVerify: false });
    assert.equal(dest.tag, 'v2');
    assert.deepEqual(await dest.tags!(), [], 'a repository that does not exist has no tags');
    assert.equal(await dest.manifestDigest!('v2'), undefined);
    const [cfg, ...layers] = blobs;
    assert.deepEqual(await dest.tryReuse(cfg!), { kind: 'absent' });
    await dest.putBlob(cfg!, await src.blob(cfg!));
    assert.equal((await dest.tryReuse(cfg!)).kind, 'present');
    for (const l of layers) {
      const r = await dest.tryReuse(l, { mountFrom: ['base/img'] });
      assert.deepEqual(r, { kind: 'mounted', descriptor: l, from: 'base/img' });
    }
    await dest.putManifest(m, dest.tag);
    await dest.commit();
    assert.equal(await dest.manifestDigest!('v2'), m.digest);
    const raw = sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${A}/mirror/img:v2`]);
    assert.equal(sha(raw), m.digest, 'skopeo reads our bytes verbatim');

    // a blob with a new layer through putBlob streaming (unknown size -> chunked), then podman runs the image
    const out = sh('podman', ['run', '--rm', '--tls-verify=false', `${A}/mirror/img:v2`, 'sh', '-c', 'echo ran-$((6*7))'], {
      env: { ...process.env, CONTAINERS_CONF: join(PEERS, 'containers.conf') },
    });
    t.after(() => {
      try {
        sh('podman', ['rmi', '-f', `${A}/mirror/img:v2`]);
      } catch {}
    });
    assert.match(out, /ran-42/);

    // referrers (tsregistry has the API) and delete by tag
    assert.deepEqual(await src.referrers!(m.digest), []);
    await dest.deleteManifest!('v2');
    assert.equal(await dest.manifestDigest!('v2'), undefined);
    await src.close();
    await dest.close();
  });

  it('a putBlob whose body does not match leaves nothing; a failed source read names the blob', async (t) => {
    const reg = await startRegistry(t);
    t.after(() => closeRegistryClients());
    const dest = await dockerTransport.destination(dockerTransport.parse(`//${reg.address}/x/y:z`), { tlsVerify: false });
    const good = randomBytes(3 * 1024 * 1024);
    const d: Descriptor = { mediaType: 'application/octet-stream', digest: sha(good), size: good.length };
    const bad = Buffer.from(good);
    bad[12345] = bad[12345]! ^ 1;
    await assert.rejects(dest.putBlob(d, Readable.from([bad])), /digest mismatch/);
    assert.deepEqual(await dest.tryReuse(d), { kind: 'absent' });
    const src = await dockerTransport.source(dockerTransport.parse(`//${reg.address}/x/y:z`), { tlsVerify: false });
    await assert.rejects(src.blob(d), (e: any) => /BLOB_UNKNOWN|404/.test(e.message) && e.message.includes(d.digest));
    await assert.rejects(src.manifest(), /MANIFEST_UNKNOWN|NAME_UNKNOWN|404/);
  });
});

describe('insecure registries and TLS', () => {
  it('registries.conf insecure = true allows plain HTTP without --tls-verify=false', async (t) => {
    const reg = await startRegistry(t);
    const dir = tempDir(t, 'regconf');
    mkdirSync(join(dir, 'registries.conf.d'));
    writeFileSync(join(dir, 'registries.conf'), 'unqualified-search-registries = []\n');
    writeFileSync(join(dir, 'registries.conf.d', '50-test.conf'), `[[registry]]\nlocation = "${reg.address}"\ninsecure = true\n`);
    const c = new RegistryClient(reg.address, { env: { ...process.env, CONTAINERS_REGISTRIES_CONF: join(dir, 'registries.conf') } });
    t.after(() => c.close());
    assert.equal(await c.headManifest('a/b', 'latest'), undefined);
    assert.equal(c.baseUrl, `http://${reg.address}`);
    // blocked = true: the transport refuses before any request
    const blockedConf = join(dir, 'blocked.conf');
    writeFileSync(blockedConf, `[[registry]]\nlocation = "${reg.address}/secret"\nblocked = true\n`);
    const old = process.env.CONTAINERS_REGISTRIES_CONF;
    process.env.CONTAINERS_REGISTRIES_CONF = blockedConf;
    try {
      await assert.rejects(dockerTransport.source(dockerTransport.parse(`//${reg.address}/secret/app:v1`), { tlsVerify: false }), /blocked in registries\.conf/);
      await assert.rejects(dockerTransport.destination(dockerTransport.parse(`//${reg.address}/secret/app:v1`), { tlsVerify: false }), /blocked in registries\.conf/);
      await (await dockerTransport.source(dockerTransport.parse(`//${reg.address}/open/app:v1`), { tlsVerify: false })).close();
    } finally {
      if (old === undefined) delete process.env.CONTAINERS_REGISTRIES_CONF;
      else process.env.CONTAINERS_REGISTRIES_CONF = old;
    }
    // --tls-verify=true overrides the file
    const strict = new RegistryClient(reg.address, { tlsVerify: true, retryTimes: 0, env: { ...process.env, CONTAINERS_REGISTRIES_CONF: join(dir, 'registries.conf') } });
    t.after(() => strict.close());
    await assert.rejects(strict.headManifest('a/b', 'latest'), /tls-verify=false/);
  });

  it('HTTPS with a private CA: refused by default, trusted via --cert-dir, allowed by --tls-verify=false (still HTTPS)', async (t) => {
    const dir = tempDir(t, 'tls');
    makeTestPki(dir);
    const reg = await startTsregistry(t, { tls: { cert: join(dir, 'srv.pem'), key: join(dir, 'srv.key') }, log: { access: false } }, { dir: tempDir(t, 'tlsreg') });
    assert.match(reg.url, /^https:/);
    const certs = join(dir, 'certs');
    mkdirSync(certs);
    copyFileSync(join(dir, 'ca.pem'), join(certs, 'ca.crt'));
    const env = { ...process.env, CONTAINERS_REGISTRIES_CONF: '/nonexistent' };
    const plain = new RegistryClient(reg.addr, { retryTimes: 0, env });
    t.after(() => plain.close());
    await assert.rejects(plain.headManifest('a/b', 'x'), /certificate/i);
    const trusted = new RegistryClient(reg.addr, { certDir: certs, env });
    t.after(() => trusted.close());
    assert.equal(await trusted.headManifest('a/b', 'x'), undefined);
    assert.equal(trusted.baseUrl, `https://${reg.addr}`);
    const insecure = new RegistryClient(reg.addr, { tlsVerify: false, env });
    t.after(() => insecure.close());
    const data = Buffer.from('over tls');
    await insecure.putBlob('a/b', { digest: sha(data), size: data.length }, Readable.from([data]));
    assert.equal(insecure.baseUrl, `https://${reg.addr}`);
    assert.deepEqual(await trusted.statBlob('a/b', sha(data)), { size: data.length });
  });
});
