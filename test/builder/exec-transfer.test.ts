/** tsbuild pull/push and FROM a registry image, through the copy engine, against distribution on loopback; podman runs the pushed image. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PEERS, requireTool, startDistribution, tempDir } from '../helpers.js';
import { build } from '../../src/builder/build.js';
import { ImageStore } from '../../src/builder/store.js';
import { pullImage, pushImage } from '../../src/builder/transfer.js';
import { StringSink } from '../../src/builder/executor.js';
import { pushBase } from '../fixtures/base.js';

describe('tsbuild pull/push through the copy engine', () => {
  it('--cache-to pushes step entries as OCI artifacts; another store builds from them with --cache-from without running', async (t) => {
    const reg = await startDistribution(t);
    const repo = `${reg.addr}/cache/app`;
    const registry = { tlsVerify: false };
    const ctx = tempDir(t, 'ctx');
    writeFileSync(join(ctx, 'Containerfile'), 'FROM busybox\nRUN echo expensive-step > /out\nENV X=1\nCOPY f.txt /f.txt\nRUN true\n');
    writeFileSync(join(ctx, 'f.txt'), 'file\n');
    const lines1: string[] = [];
    const root1 = tempDir(t, 'r1');
    await build({ contextDir: ctx, root: root1, tags: ['a'], log: (l) => lines1.push(l), runOutput: new StringSink(), network: 'none', cacheTo: repo, registry });
    assert.ok(lines1.some((l) => /Exported 3 cache entries/.test(l)), lines1.join('\n'));
    const tags = (JSON.parse(execFileSync('skopeo', ['list-tags', '--tls-verify=false', `docker://${repo}`], { encoding: 'utf8' })) as { Tags: string[] }).Tags;
    assert.equal(tags.filter((x) => /^cache-[0-9a-f]{64}$/.test(x)).length, 3, tags.join(' '));
    const root2 = tempDir(t, 'r2');
    const sink = new StringSink();
    const lines2: string[] = [];
    await build({ contextDir: ctx, root: root2, tags: ['b'], log: (l) => lines2.push(l), runOutput: sink, network: 'none', cacheFrom: [repo], registry });
    assert.equal(sink.text, '', 'nothing ran');
    assert.equal(lines2.filter((l) => l.includes('in --cache-from')).length, 3, lines2.join('\n'));
    const a = await (await ImageStore.open(root1)).resolve('a');
    const b = await (await ImageStore.open(root2)).resolve('b');
    assert.deepEqual(b.config.rootfs.diff_ids, a.config.rootfs.diff_ids);
    assert.equal(b.config.rootfs.diff_ids.length, 3, 'base + RUN + COPY (RUN true has no layer)');
  });

  it('pushes a build (layers compressed on the way), podman runs it, and a second build pulls it as its base', async (t) => {
    requireTool('podman');
    requireTool('skopeo');
    const reg = await startDistribution(t);
    const root = tempDir(t, 'root');
    const ctx = tempDir(t, 'ctx');
    writeFileSync(join(ctx, 'Containerfile'), 'FROM busybox\nRUN echo pushed-and-pulled > /msg\nCMD ["cat", "/msg"]\n');
    const res = await build({ contextDir: ctx, root, tags: ['app'], log: () => {}, runOutput: new StringSink(), network: 'none' });
    const store = await ImageStore.open(root);
    const local = await store.resolve('app');
    assert.equal(local.manifest.layers.at(-1)!.mediaType, 'application/vnd.oci.image.layer.v1.tar', 'local layers stay uncompressed (as buildah)');

    const ref = `${reg.addr}/tsbuild/app:v1`;
    await pushImage(store, 'app', `docker://${ref}`, { tlsVerify: false });
    const raw = JSON.parse(execFileSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`], { encoding: 'utf8' })) as { layers: { mediaType: string }[]; config: { digest: string } };
    assert.ok(raw.layers.every((l) => l.mediaType.endsWith('+gzip')), `pushed layers are gzip: ${raw.layers.map((l) => l.mediaType).join(', ')}`);
    assert.equal(raw.config.digest, `sha256:${res.imageId}`, 'same image ID (config) at the registry');

    // podman (own storage) pulls and runs it
    const proot = `/tmp/tsxfer-${randomBytes(4).toString('hex')}`;
    mkdirSync(proot);
    const g = ['--root', join(proot, 's'), '--runroot', join(proot, 'r')];
    const env = { ...process.env, CONTAINERS_CONF: join(PEERS, 'containers.conf') };
    t.after(() => {
      spawnSync('podman', [...g, 'rmi', '-a', '-f'], { env });
      for (const m of readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(proot)).reverse()) spawnSync('umount', ['-l', m]);
      rmSync(proot, { recursive: true, force: true });
    });
    const out = execFileSync('podman', [...g, 'run', '--rm', '--tls-verify=false', '--network', 'none', ref], { env, encoding: 'utf8' });
    assert.equal(out, 'pushed-and-pulled\n');

    // a fresh store builds FROM the registry image: pulled through the engine
    const root2 = tempDir(t, 'root2');
    const ctx2 = tempDir(t, 'ctx2');
    writeFileSync(join(ctx2, 'Containerfile'), `FROM ${ref}\nRUN cat /msg > /again\n`);
    const sink = new StringSink();
    const lines: string[] = [];
    await build({
      contextDir: ctx2,
      root: root2,
      tags: ['child'],
      log: (l) => lines.push(l),
      runOutput: sink,
      network: 'none',
      puller: (name, s, signal) => pullImage(name, s, { tlsVerify: false, signal }),
    });
    const store2 = await ImageStore.open(root2);
    const base = await store2.resolve(ref);
    assert.equal(base.id, local.id);
    const child = await store2.resolve('child');
    assert.equal(child.manifest.layers.length, 3);
    // --pull=never with a missing image: a clear error naming it
    writeFileSync(join(ctx2, 'Containerfile'), `FROM ${reg.addr}/nope:v1\n`);
    await assert.rejects(build({ contextDir: ctx2, root: root2, pull: 'never', log: () => {}, network: 'none' }), /Containerfile:1: FROM .*nope:v1.*not in the local store/);
  });
  it('pulls are checked against policy.json before anything is written (reject refused, insecureAcceptAnything accepted)', async (t) => {
    requireTool('skopeo');
    const reg = await startDistribution(t);
    const digest = await pushBase(reg.addr, 'pol/base', 'v1');
    const root = tempDir(t, 'root');
    const dir = tempDir(t, 'pol');
    const reject = join(dir, 'reject.json');
    writeFileSync(reject, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }], transports: { docker: { [`${reg.addr}/pol`]: [{ type: 'reject' }] } } }));
    const accept = join(dir, 'accept.json');
    writeFileSync(accept, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
    const store = await ImageStore.open(root);
    const ref = `${reg.addr}/pol/base:v1`;
    await assert.rejects(pullImage(ref, store, { tlsVerify: false, signaturePolicy: reject }), /reject/i);
    assert.equal(await store.find(ref), undefined, 'nothing stored after the refusal');
    assert.equal(await store.layout.stat(digest), undefined, 'not even the manifest blob');
    const got = await pullImage(ref, store, { tlsVerify: false, signaturePolicy: accept });
    assert.equal(got?.desc.digest, digest);
  });
});
