/** COPY/ADD semantics on real files: sources, wildcards, destinations, owners, modes, links, archives, URLs. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createHash } from 'node:crypto';
import { chmodSync, linkSync, lstatSync, mkdirSync, readFileSync, readlinkSync, readdirSync, statSync, symlinkSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { tempDir, sh } from '../helpers.js';
import { openContext } from '../../src/builder/context.js';
import { applyCopy, copyFiles, planCopy, type CopyRequest } from '../../src/builder/copyfiles.js';
import { packEntries, compressStream, getXattr, setXattr } from '../../src/oci/index.js';
import type { TarEntry } from '../../src/oci/index.js';

function tree(dir: string, files: Record<string, string>): void {
  for (const [p, c] of Object.entries(files)) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    writeFileSync(join(dir, p), c);
  }
}

/** `type mode uid:gid path [-> target | size]` for every entry below dir, sorted. */
function listing(dir: string): string[] {
  const out: string[] = [];
  const rec = (d: string, rel: string) => {
    for (const n of readdirSync(d).sort()) {
      const p = join(d, n);
      const r = rel ? `${rel}/${n}` : n;
      const st = lstatSync(p);
      const t = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : 'f';
      const extra = st.isSymbolicLink() ? ` -> ${readlinkSync(p)}` : st.isFile() ? ` ${readFileSync(p, 'utf8').slice(0, 20)}` : '';
      out.push(`${t} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${r}${extra}`);
      if (st.isDirectory()) rec(p, r);
    }
  };
  rec(dir, '');
  return out;
}

function req(srcs: string[], dest: string, more: Partial<CopyRequest> = {}): CopyRequest {
  return { kind: 'COPY', srcs, dest, loc: { file: 'Dockerfile', line: 7 }, ...more };
}

async function setup(t: import('node:test').TestContext, files: Record<string, string>, ignore?: string) {
  const ctxDir = tempDir(t, 'ctx');
  const root = tempDir(t, 'root');
  tree(ctxDir, files);
  if (ignore !== undefined) writeFileSync(join(ctxDir, '.dockerignore'), ignore);
  const ctx = await openContext(ctxDir, { cacheDir: false });
  const copy = (r: CopyRequest, workdir = '/') => copyFiles(r, { context: ctx }, { rootfs: root, workdir });
  return { ctxDir, root, ctx, copy };
}

describe('COPY', () => {
  it('a file to a name, into a dir (trailing slash), relative to WORKDIR', async (t) => {
    const { root, copy, ctxDir } = await setup(t, { 'a.txt': 'A' });
    chmodSync(join(ctxDir, 'a.txt'), 0o640);
    utimesSync(join(ctxDir, 'a.txt'), new Date('2001-02-03T00:00:00Z'), new Date('2001-02-03T00:00:00Z'));
    await copy(req(['a.txt'], '/b.txt'));
    await copy(req(['a.txt'], '/dir/'));
    await copy(req(['a.txt'], 'rel/', {}), '/work');
    await copy(req(['a.txt'], '.'), '/wd');
    assert.deepEqual(listing(root), [
      'f 640 0:0 b.txt A',
      'd 755 0:0 dir',
      'f 640 0:0 dir/a.txt A',
      'd 755 0:0 wd',
      'f 640 0:0 wd/a.txt A',
      'd 755 0:0 work',
      'd 755 0:0 work/rel',
      'f 640 0:0 work/rel/a.txt A',
    ]);
    assert.equal(statSync(join(root, 'b.txt')).mtime.toISOString(), '2001-02-03T00:00:00.000Z'); // mtime kept
  });

  it('a directory source copies its contents; symlinks inside stay symlinks; hardlinks stay linked', async (t) => {
    const { root, copy, ctxDir } = await setup(t, { 'src/x': 'X', 'src/sub/y': 'Y' });
    symlinkSync('../x', join(ctxDir, 'src/sub/lnk'));
    linkSync(join(ctxDir, 'src/x'), join(ctxDir, 'src/x2'));
    chmodSync(join(ctxDir, 'src/sub'), 0o750);
    await copy(req(['src'], '/app'));
    assert.deepEqual(listing(root), [
      'd 755 0:0 app',
      'd 750 0:0 app/sub',
      'l 777 0:0 app/sub/lnk -> ../x',
      'f 644 0:0 app/sub/y Y',
      'f 644 0:0 app/x X',
      'f 644 0:0 app/x2 X',
    ]);
    assert.equal(statSync(join(root, 'app/x')).ino, statSync(join(root, 'app/x2')).ino);
  });

  it('an existing destination directory keeps its metadata', async (t) => {
    const { root, copy } = await setup(t, { 'src/x': 'X' });
    mkdirSync(join(root, 'tmp'), { mode: 0o1777 });
    chmodSync(join(root, 'tmp'), 0o1777);
    await copy(req(['src'], '/tmp'));
    assert.equal(statSync(join(root, 'tmp')).mode & 0o7777, 0o1777);
    assert.ok(existsSync(join(root, 'tmp/x')));
  });

  it('a symlink named as the source is followed (inside the context only)', async (t) => {
    const { root, copy, ctxDir } = await setup(t, { 'real.txt': 'R' });
    symlinkSync('real.txt', join(ctxDir, 'lnk'));
    symlinkSync('/real.txt', join(ctxDir, 'abs')); // absolute: relative to the context root
    symlinkSync('../../../../etc/hostname', join(ctxDir, 'escape'));
    await copy(req(['lnk'], '/l'));
    await copy(req(['abs'], '/a'));
    assert.deepEqual(listing(root), ['f 644 0:0 a R', 'f 644 0:0 l R']);
    await assert.rejects(copy(req(['escape'], '/e')), /Dockerfile:7: COPY escape: no such file or directory in the build context/);
  });

  it('wildcards (Go filepath.Match per component), a dir matched by a wildcard copies its contents', async (t) => {
    const { root, copy } = await setup(t, { 'a.js': '1', 'b.js': '2', 'c.txt': '3', 'lib/d.js': '4', 'edir/f': '5', 'file*': '6' });
    await copy(req(['*.js'], '/js/'));
    await copy(req(['*/*.js'], '/deep/'));
    await copy(req(['e*'], '/flat/'));
    await copy(req(['[ab].js', 'c.tx?'], '/mix/'));
    await copy(req(['file\\*'], '/esc'));
    assert.deepEqual(listing(root), [
      'd 755 0:0 deep',
      'f 644 0:0 deep/d.js 4',
      'f 644 0:0 esc 6',
      'd 755 0:0 flat',
      'f 644 0:0 flat/f 5',
      'd 755 0:0 js',
      'f 644 0:0 js/a.js 1',
      'f 644 0:0 js/b.js 2',
      'd 755 0:0 mix',
      'f 644 0:0 mix/a.js 1',
      'f 644 0:0 mix/b.js 2',
      'f 644 0:0 mix/c.txt 3',
    ]);
    await assert.rejects(copy(req(['*.nomatch'], '/x/')), /Dockerfile:7: COPY \*\.nomatch: no source files were specified/);
  });

  it('several sources need a directory destination ending in /', async (t) => {
    const { copy } = await setup(t, { a: '1', b: '2' });
    await assert.rejects(copy(req(['a', 'b'], '/dst')), /Dockerfile:7: COPY 2 sources need a directory destination ending in "\/"/);
  });

  it('a missing source names the file and the Dockerfile line; paths may not leave the context', async (t) => {
    const { copy } = await setup(t, { a: '1' });
    await assert.rejects(copy(req(['missing.txt'], '/x')), (e: Error) => {
      assert.match(e.message, /^Dockerfile:7: COPY missing\.txt: no such file or directory in the build context/);
      return true;
    });
    await assert.rejects(copy(req(['../outside'], '/x')), /Dockerfile:7: COPY \.\.\/outside: the path is outside the build context/);
  });

  it('.dockerignore: ignored files are not copied, and naming one is an error', async (t) => {
    const { root, copy } = await setup(t, { 'app/main.js': 'm', 'app/debug.log': 'l', 'secret.env': 's', 'app/keep.log': 'k' }, '**/*.log\n!app/keep.log\nsecret.env\n');
    await copy(req(['.'], '/ctx/'));
    assert.deepEqual(listing(join(root, 'ctx')), ['f 644 0:0 .dockerignore **/*.log\n!app/keep.l', 'd 755 0:0 app', 'f 644 0:0 app/keep.log k', 'f 644 0:0 app/main.js m']);
    await assert.rejects(copy(req(['secret.env'], '/s')), /Dockerfile:7: COPY secret\.env: excluded by \.dockerignore/);
  });

  it('--chown with names from the image /etc/passwd and /etc/group, numeric ids, user alone', async (t) => {
    const { root, copy } = await setup(t, { 'a.txt': 'A', 'd/x': 'X' });
    tree(root, { 'etc/passwd': 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n', 'etc/group': 'root:x:0:\nstaff:x:50:\napp:x:1001:\n' });
    await copy(req(['a.txt'], '/o1', { chown: 'app:staff' }));
    await copy(req(['a.txt'], '/o2', { chown: '123:456' }));
    await copy(req(['a.txt'], '/o3', { chown: 'app' })); // a name alone: the user's primary group (buildah, BuildKit)
    await copy(req(['d'], '/o4', { chown: 'app:app' }));
    await copy(req(['a.txt'], '/o5', { chown: '1000' })); // a number alone: the same number as gid
    await copy(req(['a.txt'], '/o6', { chown: ':staff' })); // a group alone: root
    const own = (p: string) => `${lstatSync(join(root, p)).uid}:${lstatSync(join(root, p)).gid}`;
    assert.deepEqual(['o1', 'o2', 'o3', 'o4/x', 'o5', 'o6'].map(own), ['1000:50', '123:456', '1000:1001', '1000:1001', '1000:1000', '0:50']);
    await assert.rejects(copy(req(['a.txt'], '/o5', { chown: 'nobody' })), /Dockerfile:7: COPY --chown=nobody: unable to find user nobody/);
  });

  it('--chmod octal and symbolic', async (t) => {
    const { root, copy } = await setup(t, { 'a.sh': 'A', 'd/x': 'X' });
    await copy(req(['a.sh'], '/o', { chmod: '0755' }));
    await copy(req(['a.sh'], '/s', { chmod: 'u+x,g-r,o=' }));
    await copy(req(['d'], '/dd', { chmod: '700' }));
    const mode = (p: string) => (lstatSync(join(root, p)).mode & 0o7777).toString(8);
    // 0644 + u+x = 0744, g-r = 0704, o= = 0700
    assert.deepEqual(['o', 's', 'dd/x'].map(mode), ['755', '700', '700']);
    await copy(req(['a.sh'], '/plusx', { chmod: '+x' }));
    assert.equal(mode('plusx'), '755');
    await assert.rejects(copy(req(['a.sh'], '/bad', { chmod: 'bogus' })), /--chmod=bogus: invalid mode/);
  });

  it('--parents keeps the source path (from a /./ pivot), --exclude drops matches', async (t) => {
    const { root, copy } = await setup(t, { 'src/a/x.js': '1', 'src/a/x.txt': '2', 'src/b/y.js': '3', 'top.txt': '4' });
    await copy(req(['src/a/x.js', 'src/b'], '/p/', { parents: true }));
    await copy(req(['src/./a/x.js'], '/q/', { parents: true }));
    await copy(req(['src'], '/e/', { exclude: ['**/*.txt'] }));
    await copy(req(['*.txt', 'src'], '/f/', { exclude: ['top.txt', 'b'] }));
    assert.deepEqual(listing(root).filter((l) => / (p|q|e|f)\//.test(l)), [
      'd 755 0:0 e/a',
      'f 644 0:0 e/a/x.js 1',
      'd 755 0:0 e/b',
      'f 644 0:0 e/b/y.js 3',
      'd 755 0:0 f/a',
      'f 644 0:0 f/a/x.js 1',
      'f 644 0:0 f/a/x.txt 2',
      'd 755 0:0 p/src',
      'd 755 0:0 p/src/a',
      'f 644 0:0 p/src/a/x.js 1',
      'd 755 0:0 p/src/b',
      'f 644 0:0 p/src/b/y.js 3',
      'd 755 0:0 q/a',
      'f 644 0:0 q/a/x.js 1',
    ]);
  });

  it('the destination is resolved inside the rootfs: merged-/usr links followed, escapes stay inside', async (t) => {
    const uniq = `tsimage-escape-${process.pid}-${Date.now()}.txt`;
    const { root, copy } = await setup(t, { 'lib/libx.so': 'L', 'f.txt': 'F', [uniq]: 'U' });
    mkdirSync(join(root, 'usr/lib'), { recursive: true });
    symlinkSync('usr/lib', join(root, 'lib'));
    symlinkSync('/etc', join(root, 'etclink')); // absolute: the image's /etc, never the host's
    await copy(req(['lib'], '/lib/'));
    await copy(req(['f.txt', uniq], '/etclink/'));
    assert.ok(existsSync(join(root, 'usr/lib/libx.so')));
    assert.ok(existsSync(join(root, 'etc/f.txt')));
    assert.ok(existsSync(join(root, 'etc', uniq)));
    assert.ok(!existsSync(join('/etc', uniq)), 'nothing written to the host /etc');
    symlinkSync('../../../../../../tmp', join(root, 'up'));
    await assert.rejects(copy(req(['f.txt'], '/up/')), /Dockerfile:7: COPY destination \/up\/: .*escapes the root/);
  });

  it('--from a stage rootfs keeps owners; the cache inputs list what was read', async (t) => {
    const stage = tempDir(t, 'stage');
    const root = tempDir(t, 'root');
    tree(stage, { 'out/bin': 'B' });
    sh('chown', ['-R', '7:8', join(stage, 'out')]);
    const plan = await planCopy(req(['/out/bin'], '/usr/local/bin/'), { rootfs: stage, name: 'build' });
    assert.deepEqual(
      plan.inputs.files.map((f) => [f.path, f.type, f.owner]),
      [['build:/out/bin', 'f', '7:8']],
    );
    await copyFiles(req(['/out/bin'], '/usr/local/bin/'), { rootfs: stage, name: 'build' }, { rootfs: root, workdir: '/' });
    const st = lstatSync(join(root, 'usr/local/bin/bin'));
    assert.deepEqual([st.uid, st.gid], [7, 8]);
  });

  it('xattrs are copied (user.*, file capabilities), overlay ones never', async (t) => {
    const { root, copy, ctxDir, ctx } = await setup(t, { 'bin/ping': 'P', 'bin/plain': 'Q' });
    setXattr(join(ctxDir, 'bin/ping'), 'user.tsimage.test', 'hello');
    setXattr(join(ctxDir, 'bin/ping'), 'trusted.overlay.opaque', 'y');
    // cap_net_raw+ep (VFS_CAP_REVISION_2)
    const cap = Buffer.from('0000000200200000000000000000000000000000', 'hex');
    setXattr(join(ctxDir, 'bin/ping'), 'security.capability', cap);
    setXattr(join(ctxDir, 'bin'), 'user.dir', 'd');
    const plan = await planCopy(req(['bin'], '/usr/bin/'), { context: ctx });
    const ping = plan.inputs.files.find((f) => f.path === 'bin/ping')!;
    assert.match(ping.xattrs ?? '', /^x128:/); // xattrs are part of the cache key
    assert.equal(plan.inputs.files.find((f) => f.path === 'bin/plain')!.xattrs, undefined);
    await copy(req(['bin'], '/usr/bin/', { chown: '5:5' }));
    assert.equal(getXattr(join(root, 'usr/bin/ping'), 'user.tsimage.test')?.toString(), 'hello');
    assert.deepEqual(getXattr(join(root, 'usr/bin/ping'), 'security.capability'), cap); // survives the chown
    assert.equal(getXattr(join(root, 'usr/bin/ping'), 'trusted.overlay.opaque'), undefined);
    assert.equal(getXattr(join(root, 'usr/bin/plain'), 'user.tsimage.test'), undefined);
  });

  it('heredoc sources', async (t) => {
    const { root, copy } = await setup(t, {});
    await copy(req(['<<EOF'], '/etc/hello.conf', { heredocs: [{ name: 'EOF', expand: true, chomp: false, content: 'hi\n' }] }));
    assert.equal(readFileSync(join(root, 'etc/hello.conf'), 'utf8'), 'hi\n');
  });
});

async function tarOf(entries: TarEntry[], c: 'gzip' | 'zstd' | 'none'): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const s = packEntries(entries).pipe(compressStream(c));
  for await (const x of s) chunks.push(x as Buffer);
  return Buffer.concat(chunks);
}

describe('ADD', () => {
  const entries = (): TarEntry[] => [
    { header: { name: 'pkg/', type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: 1000000 } },
    { header: { name: 'pkg/file', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 1000000, size: 5 }, body: Buffer.from('hello') },
  ] as TarEntry[];

  it('extracts local tar archives (plain, gzip, zstd, bzip2, xz); ADD --unpack=false and COPY do not', async (t) => {
    const { root, ctxDir, ctx } = await setup(t, {});
    const plain = await tarOf(entries(), 'none');
    writeFileSync(join(ctxDir, 'a.tar'), plain);
    writeFileSync(join(ctxDir, 'a.tar.gz'), await tarOf(entries(), 'gzip'));
    writeFileSync(join(ctxDir, 'a.tar.zst'), await tarOf(entries(), 'zstd'));
    writeFileSync(join(ctxDir, 'a.tar'), plain);
    sh('sh', ['-c', `bzip2 -c ${join(ctxDir, 'a.tar')} > ${join(ctxDir, 'a.tar.bz2')} && xz -c ${join(ctxDir, 'a.tar')} > ${join(ctxDir, 'a.tar.xz')}`]);
    writeFileSync(join(ctxDir, 'notatar.gz'), gzipSync('just text'));
    const add = (src: string, dest: string, more: Partial<CopyRequest> = {}) =>
      copyFiles(req([src], dest, { kind: 'ADD', ...more }), { context: ctx }, { rootfs: root, workdir: '/' });
    for (const f of ['a.tar', 'a.tar.gz', 'a.tar.zst', 'a.tar.bz2', 'a.tar.xz']) {
      await add(f, `/x/${f}/`);
      assert.equal(readFileSync(join(root, 'x', f, 'pkg/file'), 'utf8'), 'hello', f);
    }
    await add('notatar.gz', '/plain/');
    assert.ok(statSync(join(root, 'plain/notatar.gz')).isFile()); // not a tar: copied as is
    await add('a.tar.gz', '/kept/', { unpack: false });
    assert.ok(statSync(join(root, 'kept/a.tar.gz')).isFile());
    await copyFiles(req(['a.tar'], '/copied/'), { context: ctx }, { rootfs: root, workdir: '/' });
    assert.ok(statSync(join(root, 'copied/a.tar')).isFile());
  });

  it('refuses a hostile archive clearly', async (t) => {
    const { root, ctxDir, ctx } = await setup(t, {});
    const evil = await tarOf(
      [{ header: { name: '../../escape.txt', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 1 }, body: Buffer.from('x') }] as TarEntry[],
      'gzip',
    );
    writeFileSync(join(ctxDir, 'evil.tgz'), evil);
    await assert.rejects(
      copyFiles(req(['evil.tgz'], '/x/', { kind: 'ADD' }), { context: ctx }, { rootfs: root, workdir: '/' }),
      /Dockerfile:7: ADD evil\.tgz: refusing to extract a hostile archive: .*escapes the root/,
    );
    assert.ok(!existsSync(join(root, '..', 'escape.txt')));
  });

  it('downloads URLs: checksum verified, mode 0600, Last-Modified kept; a bad checksum fails and leaves nothing', async (t) => {
    const body = Buffer.from('remote content\n');
    let requests = 0;
    const srv = createServer((rq, rs) => {
      requests++;
      if (rq.url === '/missing') {
        rs.writeHead(404).end();
        return;
      }
      rs.writeHead(200, { 'Last-Modified': 'Wed, 21 Oct 2015 07:28:00 GMT', 'Content-Length': body.length });
      rs.end(body);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    t.after(() => srv.close());
    const port = (srv.address() as import('node:net').AddressInfo).port;
    const { root, ctx } = await setup(t, {});
    const good = 'sha256:' + createHash('sha256').update(body).digest('hex');
    const url = `http://127.0.0.1:${port}/files/tool.txt`;
    // with --checksum the cache key needs no download: planning fetches nothing, applying fetches once
    const plan = await planCopy(req([url], '/dl/', { kind: 'ADD', checksum: good }), { context: ctx });
    assert.equal(requests, 0);
    assert.deepEqual(plan.inputs.files, [{ path: url, type: 'f', mode: 0o600, hash: good }]);
    await applyCopy(plan, { rootfs: root, workdir: '/' });
    await plan.dispose();
    assert.equal(requests, 1);
    const st = statSync(join(root, 'dl/tool.txt'));
    assert.equal(readFileSync(join(root, 'dl/tool.txt'), 'utf8'), 'remote content\n');
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.mtime.toISOString(), '2015-10-21T07:28:00.000Z');
    await copyFiles(req([url], '/named', { kind: 'ADD' }), { context: ctx }, { rootfs: root, workdir: '/' });
    assert.ok(statSync(join(root, 'named')).isFile());
    const bad = 'sha256:' + '0'.repeat(64);
    await assert.rejects(
      copyFiles(req([url], '/bad/', { kind: 'ADD', checksum: bad }), { context: ctx }, { rootfs: root, workdir: '/' }),
      new RegExp(`Dockerfile:7: ADD ${url.replace(/[.]/g, '\\.')}: checksum mismatch: expected ${bad}, got ${good}`),
    );
    assert.ok(!existsSync(join(root, 'bad')));
    await assert.rejects(copyFiles(req([`http://127.0.0.1:${port}/missing`], '/m', { kind: 'ADD' }), { context: ctx }, { rootfs: root, workdir: '/' }), /HTTP 404/);
    await assert.rejects(copyFiles(req([url], '/c'), { context: ctx }, { rootfs: root, workdir: '/' }), /source can't be a URL for COPY/);
    await assert.rejects(
      copyFiles(req([`http://127.0.0.1:${port}/repo.git#main`], '/g/', { kind: 'ADD' }), { context: ctx }, { rootfs: root, workdir: '/' }),
      /ADD http:\/\/127\.0\.0\.1:\d+\/repo\.git#main: git sources are not supported/,
    );
  });

  it('keeps downloads in a URL cache: 304 revalidation, a changed ETag re-downloads, a kept --checksum URL is not asked', async (t) => {
    let body = Buffer.from('v1');
    let etag = '"v1"';
    const log: string[] = [];
    const srv = createServer((rq, rs) => {
      if (rq.headers['if-none-match'] === etag) {
        log.push('304');
        rs.writeHead(304).end();
        return;
      }
      log.push('200');
      rs.writeHead(200, { ETag: etag, 'Content-Length': body.length }).end(body);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    t.after(() => srv.close());
    const url = `http://127.0.0.1:${(srv.address() as import('node:net').AddressInfo).port}/f.txt`;
    const { root, ctx } = await setup(t, {});
    const urlCacheDir = tempDir(t, 'urls');
    const keyOf = async () => {
      const p = await planCopy(req([url], '/dl/', { kind: 'ADD' }), { context: ctx }, { urlCacheDir });
      await applyCopy(p, { rootfs: root, workdir: '/' });
      await p.dispose();
      return p.inputs.files[0]!.hash;
    };
    const k1 = await keyOf();
    const k2 = await keyOf();
    assert.equal(k2, k1);
    assert.deepEqual(log, ['200', '304']);
    assert.equal(readFileSync(join(root, 'dl/f.txt'), 'utf8'), 'v1');
    body = Buffer.from('v2');
    etag = '"v2"';
    const k3 = await keyOf();
    assert.notEqual(k3, k1);
    assert.deepEqual(log, ['200', '304', '200']);
    assert.equal(readFileSync(join(root, 'dl/f.txt'), 'utf8'), 'v2');
    // a --checksum URL whose content is kept: no request at all
    const sum = 'sha256:' + createHash('sha256').update('v2').digest('hex');
    const p = await planCopy(req([url], '/sum/', { kind: 'ADD', checksum: sum }), { context: ctx }, { urlCacheDir });
    await applyCopy(p, { rootfs: root, workdir: '/' });
    await p.dispose();
    assert.deepEqual(log, ['200', '304', '200']);
    assert.equal(readFileSync(join(root, 'sum/f.txt'), 'utf8'), 'v2');
    assert.ok(existsSync(join(root, 'sum/f.txt')));
  });
});
