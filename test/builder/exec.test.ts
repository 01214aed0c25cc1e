/** The build executor end to end: RUN/COPY/config, commit, store, cache, multi-stage, ONBUILD, USER/WORKDIR, mounts, failures. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, writeFileSync, existsSync, statSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { tempDir } from '../helpers.js';
import { build, type BuildOptions } from '../../src/builder/build.js';
import { ImageStore } from '../../src/builder/store.js';
import { StringSink } from '../../src/builder/executor.js';

type Files = Record<string, string>;

function context(t: { after(fn: () => void): void }, dockerfile: string, files: Files = {}): string {
  const d = tempDir(t, 'ctx');
  writeFileSync(join(d, 'Dockerfile'), dockerfile);
  for (const [k, v] of Object.entries(files)) {
    mkdirSync(join(d, k, '..'), { recursive: true });
    writeFileSync(join(d, k), v);
  }
  return d;
}

async function bud(root: string, ctx: string, o: Partial<BuildOptions> = {}) {
  const lines: string[] = [];
  const out = new StringSink();
  const res = await build({ contextDir: ctx, root, log: (l) => lines.push(l), runOutput: out, network: 'none', ...o });
  return { ...res, lines, output: out.text };
}

async function rootfsOf(t: { after(fn: () => void): void }, root: string, ctx: string, o: Partial<BuildOptions> = {}) {
  const dest = tempDir(t, 'out');
  const r = await bud(root, ctx, { ...o, outputs: [{ type: 'local', dest }] });
  return { ...r, dest };
}

function noLeftovers(root: string): void {
  const containers = join(root, 'containers');
  const left = existsSync(containers) ? readdirSync(containers) : [];
  assert.deepEqual(left, [], `snapshots left behind: ${left.join(', ')}`);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(root));
  assert.deepEqual(mounts, []);
}

describe('tsbuild executor', () => {
  it('builds RUN + COPY + config instructions on the embedded base and commits them to the store', async (t) => {
    const root = tempDir(t, 'root');
    const ctx = context(
      t,
      [
        'FROM busybox',
        'RUN echo "hello from RUN" > /hello.txt && echo ran',
        'COPY greeting.txt /app/',
        'ENV GREETING="hello world" OTHER=x',
        'WORKDIR /app/sub',
        'RUN pwd > /pwd',
        'LABEL a=b "c d"=e',
        'EXPOSE 8080 53/udp',
        'VOLUME /data',
        'USER nobody',
        'STOPSIGNAL SIGTERM',
        'HEALTHCHECK --interval=5s --retries=2 CMD true',
        'ENTRYPOINT ["/bin/sh", "-c"]',
        'CMD ["echo hi"]',
        'MAINTAINER someone',
        '',
      ].join('\n'),
      { 'greeting.txt': 'greetings\n' },
    );
    const r = await rootfsOf(t, root, ctx, { tags: ['app', 'quay.io/x/app:v1'] });
    assert.match(r.output, /ran/);
    assert.equal(readFileSync(join(r.dest, 'hello.txt'), 'utf8'), 'hello from RUN\n');
    assert.equal(readFileSync(join(r.dest, 'app/greeting.txt'), 'utf8'), 'greetings\n');
    assert.equal(readFileSync(join(r.dest, 'pwd'), 'utf8'), '/app/sub\n', 'WORKDIR is created for the RUN after it');
    assert.deepEqual(r.names, ['localhost/app:latest', 'quay.io/x/app:v1']);
    const store = await ImageStore.open(root);
    const img = await store.resolve('app');
    assert.equal(img.id.slice(7), r.imageId);
    const c = img.config.config!;
    assert.deepEqual(c.Env, ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'GREETING=hello world', 'OTHER=x']);
    assert.equal(c.WorkingDir, '/app/sub');
    assert.equal(c.Labels!.a, 'b');
    assert.equal(c.Labels!['c d'], 'e');
    assert.deepEqual(Object.keys(c.ExposedPorts!).sort(), ['53/udp', '8080/tcp']);
    assert.deepEqual(Object.keys(c.Volumes!), ['/data']);
    assert.equal(c.User, 'nobody');
    assert.equal(c.StopSignal, 'SIGTERM');
    assert.deepEqual(c.Healthcheck, { Test: ['CMD-SHELL', 'true'], Interval: 5e9, Retries: 2 });
    assert.deepEqual(c.Entrypoint, ['/bin/sh', '-c']);
    assert.deepEqual(c.Cmd, ['echo hi']);
    assert.equal(img.config.author, 'someone');
    // base layer + RUN + COPY + RUN pwd (config steps add no layers)
    assert.equal(img.manifest.layers.length, 4);
    assert.equal(img.config.rootfs.diff_ids.length, 4);
    const hist = img.config.history!;
    assert.equal(hist.filter((h) => !h.empty_layer).length, 4);
    assert.match(hist[1]!.created_by!, /^\/bin\/sh -c echo "hello from RUN"/);
    assert.ok(r.lines.some((l) => /^STEP 2\/15: RUN echo/.test(l)), r.lines.join('\n'));
    noLeftovers(root);
  });

  it('reuses cached steps, misses from the changed input on, and SOURCE_DATE_EPOCH/--timestamp give the same digest', async (t) => {
    const root = tempDir(t, 'root');
    const ctx = context(t, 'FROM busybox\nRUN echo one > /one\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n', { 'a.txt': 'A\n' });
    const first = await bud(root, ctx, { timestamp: 1700000000, tags: ['c1'] });
    assert.equal(first.lines.filter((l) => l.includes('Using cache')).length, 0);
    const second = await bud(root, ctx, { timestamp: 1700000000, tags: ['c2'] });
    assert.equal(second.lines.filter((l) => l.includes('Using cache')).length, 3);
    assert.equal(second.output, '', 'nothing ran');
    assert.equal(second.imageId, first.imageId, 'same inputs, same timestamp: same image');
    writeFileSync(join(ctx, 'a.txt'), 'changed\n');
    const third = await bud(root, ctx, { timestamp: 1700000000 });
    assert.equal(third.lines.filter((l) => l.includes('Using cache')).length, 1, third.lines.join('\n'));
    assert.notEqual(third.imageId, first.imageId);
    // no cache at all, same timestamp: the same digest again (reproducible layers)
    writeFileSync(join(ctx, 'a.txt'), 'A\n');
    const { utimesSync } = await import('node:fs');
    utimesSync(join(ctx, 'a.txt'), 1600000000, 1600000000);
    const a = await bud(root, ctx, { timestamp: 1700000000, noCache: true });
    const b = await bud(root, ctx, { timestamp: 1700000000, noCache: true });
    assert.equal(a.manifest.digest, b.manifest.digest);
    noLeftovers(root);
  });

  it('cache: an ignored or unrelated file keeps hits, a used file misses and --explain-cache names it', async (t) => {
    const root = tempDir(t, 'root');
    const ctx = context(t, 'FROM busybox\nCOPY app/ /app/\nRUN ls /app > /list\n', {
      '.dockerignore': 'app/*.log\n',
      'app/main.txt': 'main\n',
      'app/debug.log': 'log\n',
      'unrelated.txt': 'u\n',
    });
    await bud(root, ctx);
    writeFileSync(join(ctx, 'app/debug.log'), 'more log\n');
    writeFileSync(join(ctx, 'unrelated.txt'), 'changed\n');
    const hits = await bud(root, ctx, { explainCache: true });
    assert.equal(hits.lines.filter((l) => l.includes('Using cache')).length, 2, hits.lines.join('\n'));
    writeFileSync(join(ctx, 'app/main.txt'), 'main v2\n');
    const miss = await bud(root, ctx, { explainCache: true });
    assert.equal(miss.lines.filter((l) => l.includes('Using cache')).length, 0);
    const why = miss.lines.find((l) => l.includes('cache miss'));
    assert.ok(why && why.includes('main.txt'), miss.lines.join('\n'));
    const out = await rootfsOf(t, root, ctx);
    assert.deepEqual(readdirSync(join(out.dest, 'app')), ['main.txt'], '.dockerignore keeps debug.log out');
  });

  it('builds multi-stage graphs: COPY --from, FROM <stage>, --target builds only what it needs', async (t) => {
    const root = tempDir(t, 'root');
    const ctx = context(
      t,
      [
        'FROM busybox AS build',
        'RUN mkdir /out && echo built > /out/artifact',
        'FROM busybox AS unused',
        'RUN echo unused-stage-ran',
        'FROM build AS test',
        'RUN test -f /out/artifact && echo test-ok',
        'FROM scratch',
        'COPY --from=build /out/ /',
        '',
      ].join('\n'),
    );
    const r = await rootfsOf(t, root, ctx);
    assert.doesNotMatch(r.output, /unused-stage-ran/);
    assert.doesNotMatch(r.output, /test-ok/);
    assert.deepEqual(readdirSync(r.dest), ['artifact']);
    const tr = await bud(root, ctx, { target: 'test' });
    assert.match(tr.output, /test-ok/);
    assert.doesNotMatch(tr.output, /unused-stage-ran/);
    noLeftovers(root);
  });

  it('builds independent stages in parallel (--jobs 2): each waits to see the other running', async (t) => {
    const root = tempDir(t, 'root');
    const id = `rv-${process.pid}-${Date.now()}`;
    const wait = (me: string, other: string) =>
      `RUN --mount=type=cache,id=${id},target=/rv touch /rv/${me} && for i in $(seq 100); do [ -f /rv/${other} ] && echo ${me}-saw-${other} > /${me} && exit 0; sleep 0.1; done; echo ${me} never saw ${other}; exit 1`;
    const ctx = context(t, ['FROM busybox AS a', wait('a', 'b'), 'FROM busybox AS b', wait('b', 'a'), 'FROM busybox', 'COPY --from=a /a /a', 'COPY --from=b /b /b', ''].join('\n'));
    const r = await rootfsOf(t, root, ctx, { jobs: 2 });
    assert.equal(readFileSync(join(r.dest, 'a'), 'utf8'), 'a-saw-b\n');
    assert.equal(readFileSync(join(r.dest, 'b'), 'utf8'), 'b-saw-a\n');
    assert.ok(r.lines.some((l) => l.startsWith('[1/3] ')) && r.lines.some((l) => l.startsWith('[2/3] ')), 'stage-prefixed progress');
    noLeftovers(root);
  });

  it('runs ONBUILD triggers in the child build', async (t) => {
    const root = tempDir(t, 'root');
    const parent = context(t, 'FROM busybox\nONBUILD RUN echo trigger-ran > /triggered\nONBUILD COPY f.txt /f.txt\n');
    await bud(root, parent, { tags: ['parent'] });
    const store = await ImageStore.open(root);
    assert.deepEqual((await store.resolve('parent')).config.config!.OnBuild, ['RUN echo trigger-ran > /triggered', 'COPY f.txt /f.txt']);
    const child = context(t, 'FROM parent\nRUN cat /triggered /f.txt\n', { 'f.txt': 'from-child-context\n' });
    const r = await rootfsOf(t, root, child, { tags: ['child'] });
    assert.match(r.output, /trigger-ran\nfrom-child-context/);
    assert.equal((await store.resolve('child')).config.config!.OnBuild, undefined, 'triggers are not inherited further');
  });

  it('runs RUN as USER, in WORKDIR, with ARG/ENV and build args, heredocs and RUN mounts', async (t) => {
    const root = tempDir(t, 'root');
    const secret = join(tempDir(t, 'sec'), 's.txt');
    writeFileSync(secret, 'top-secret');
    const ctx = context(
      t,
      [
        'ARG GREETING=hi',
        'FROM busybox',
        'ARG GREETING',
        'ARG WHO=world',
        'ENV FROMENV=e1',
        'WORKDIR /work',
        'USER nobody',
        'RUN echo "$(id -u):$(pwd):$GREETING:$WHO:$FROMENV"',
        'USER root',
        'RUN --mount=type=cache,target=/cache echo x >> /cache/count && wc -l < /cache/count',
        'RUN --mount=type=secret,id=tok cat /run/secrets/tok && echo',
        'RUN --mount=type=bind,source=ctxfile,target=/mnt/ctxfile cat /mnt/ctxfile',
        'RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && echo tmpfs-ok',
        'RUN <<EOF',
        'echo heredoc-line-1',
        'echo heredoc-line-2',
        'EOF',
        'COPY <<EOT /etc/note',
        'note for $WHO',
        'EOT',
        'RUN cat /etc/note',
        '',
      ].join('\n'),
      { ctxfile: 'from-context\n' },
    );
    const secrets = new Map([['tok', secret]]);
    const r = await rootfsOf(t, root, ctx, { buildArgs: new Map([['WHO', 'you']]), secrets, noCache: true });
    assert.match(r.output, /65534:\/work:hi:you:e1/);
    assert.match(r.output, /^1$/m);
    assert.match(r.output, /top-secret/);
    assert.match(r.output, /from-context/);
    assert.match(r.output, /tmpfs-ok/);
    assert.match(r.output, /heredoc-line-1\nheredoc-line-2/);
    assert.match(r.output, /note for you/);
    assert.ok(!existsSync(join(r.dest, 'run/secrets/tok')), 'secrets stay out of the image');
    assert.ok(!existsSync(join(r.dest, 'cache/count')), 'cache mounts stay out of the image');
    assert.ok(!existsSync(join(r.dest, 'mnt/ctxfile')));
    const again = await bud(root, ctx, { buildArgs: new Map([['WHO', 'you']]), secrets, noCache: true });
    assert.match(again.output, /^2$/m, 'the cache mount keeps its content between builds');
    noLeftovers(root);
  });

  it('adds no layer for a RUN that changes nothing', async (t) => {
    const root = tempDir(t, 'root');
    const ctx = context(t, 'FROM busybox\nRUN true\nRUN echo x > /x\n');
    const r = await bud(root, ctx, { tags: ['e'] });
    const img = await (await ImageStore.open(root)).resolve('e');
    assert.equal(img.manifest.layers.length, 2, 'base + the RUN that wrote /x');
    assert.equal(img.config.history!.filter((h) => !h.empty_layer).length, 2);
    assert.ok(r.lines.some((l) => l.includes('no changes')));
  });

  it('fails a broken RUN with the Dockerfile line and leaves no snapshots, mounts or temp dirs', async (t) => {
    const root = tempDir(t, 'root');
    const ctx = context(t, 'FROM busybox\nRUN echo ok\n\nRUN echo before-fail && exit 3\nRUN echo never\n');
    await assert.rejects(bud(root, ctx), (e: Error) => {
      assert.match(e.message, /Dockerfile:4: .*exit code 3/);
      return true;
    });
    noLeftovers(root);
    const bad = context(t, 'FROM busybox\nCOPY missing.txt /x\n');
    await assert.rejects(bud(root, bad), /Dockerfile:2: .*missing\.txt/);
    noLeftovers(root);
    const nostage = context(t, 'FROM busybox\nCOPY --from=nope /x /x\n');
    await assert.rejects(bud(root, nostage), /nope/);
    noLeftovers(root);
  });

  it('squashes, writes docker format, adds to a manifest list and writes --iidfile', async (t) => {
    const root = tempDir(t, 'root');
    const ctx = context(t, 'FROM busybox\nRUN echo a > /a\nRUN echo b > /b\n');
    const iid = join(tempDir(t, 'iid'), 'iid');
    const r = await bud(root, ctx, { tags: ['sq'], squash: true, format: 'docker', iidfile: iid, manifest: 'mylist', compression: 'gzip' });
    assert.equal(readFileSync(iid, 'utf8'), r.imageId);
    const store = await ImageStore.open(root);
    const img = await store.resolve('sq');
    assert.equal(img.manifest.layers.length, 1);
    assert.equal(img.manifest.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
    assert.equal(img.manifest.layers[0]!.mediaType, 'application/vnd.docker.image.rootfs.diff.tar.gzip');
    const list = await store.layout.resolve('localhost/mylist:latest');
    assert.equal(list.mediaType, 'application/vnd.oci.image.index.v1+json');
    const idx = JSON.parse((await store.layout.readBytes(list.digest)).toString()) as { manifests: { digest: string }[] };
    assert.deepEqual(idx.manifests.map((m) => m.digest), [r.manifest.digest]);
    const out = tempDir(t, 'o');
    await bud(root, ctx, { outputs: [{ type: 'local', dest: out }], squash: true });
    assert.ok(lstatSync(join(out, 'bin/sh')).isSymbolicLink());
    assert.equal(readFileSync(join(out, 'b'), 'utf8'), 'b\n');
  });

  it('writes --output type=oci and docker-archive named as podman save names them; skopeo reads both; the store gains no name', async (t) => {
    const root = tempDir(t, 'root');
    const ctx = context(t, 'FROM busybox\nLABEL out=yes\n');
    const dir = tempDir(t, 'archives');
    const oci = join(dir, 'img.oci.tar');
    const docker = join(dir, 'img.docker.tar');
    const r = await bud(root, ctx, { tags: ['outimg:v2'], outputs: [{ type: 'oci', dest: oci }, { type: 'docker-archive', dest: docker }] });
    const name = 'localhost/outimg:v2';
    const index = JSON.parse(execFileSync('tar', ['-xOf', oci, 'index.json'], { encoding: 'utf8' })) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
    assert.deepEqual(
      index.manifests.map((m) => [m.digest, m.annotations]),
      [[r.manifest.digest, { 'org.opencontainers.image.ref.name': name }]],
    );
    const dm = JSON.parse(execFileSync('tar', ['-xOf', docker, 'manifest.json'], { encoding: 'utf8' })) as { RepoTags: string[] }[];
    assert.deepEqual(dm.map((i) => i.RepoTags), [[name]]);
    // skopeo finds the image by its name in the OCI archive, with the same digest; the docker archive's config is the image's
    const viaName = JSON.parse(execFileSync('skopeo', ['inspect', '--raw', `oci-archive:${oci}:${name}`], { encoding: 'utf8' })) as { config: { digest: string } };
    assert.equal(viaName.config.digest, `sha256:${r.imageId}`);
    const insp = JSON.parse(execFileSync('skopeo', ['inspect', '--config', `docker-archive:${docker}`], { encoding: 'utf8' })) as { config: { Labels: Record<string, string> } };
    assert.equal(insp.config.Labels.out, 'yes');
    // the store holds the image under its own name only (no temporary export name, before or after)
    const store = await ImageStore.open(root);
    const names = (await store.layout.readIndex()).manifests.map((m) => m.annotations?.['org.opencontainers.image.ref.name']);
    assert.deepEqual(names.filter((n) => n !== undefined).sort(), ['localhost/busybox:latest', name]);
    // untagged: no name in either archive
    const oci2 = join(dir, 'untagged.oci.tar');
    const r2 = await bud(root, context(t, 'FROM busybox\nLABEL untagged=yes\n'), { outputs: [{ type: 'oci', dest: oci2 }] });
    const index2 = JSON.parse(execFileSync('tar', ['-xOf', oci2, 'index.json'], { encoding: 'utf8' })) as { manifests: { digest: string; annotations?: unknown }[] };
    assert.deepEqual(index2.manifests, [{ mediaType: r2.manifest.mediaType, digest: r2.manifest.digest, size: r2.manifest.size }]);
    assert.deepEqual(readdirSync(dir).sort(), ['img.docker.tar', 'img.oci.tar', 'untagged.oci.tar']);
  });
});
