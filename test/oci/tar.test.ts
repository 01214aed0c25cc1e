import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, linkSync, lutimesSync, mkdirSync, symlinkSync, utimesSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { tempDir, sh, requireTool } from '../helpers.js';
import { packDirectory, packEntries, readTar, encodeHeader, TarFormatError, type TarEntry } from '../../src/oci/tar.js';
import { extractLayer } from '../../src/oci/extract.js';
import { setXattr } from '../../src/oci/xattr.js';
import { collect, snapshot, untar, prng } from './tarutil.js';

const LONG = Array.from({ length: 6 }, (_, i) => `dir${i}-${'x'.repeat(25)}`).join('/');

/** A tree with every kind of entry the packer supports. */
function makeTree(dir: string): void {
  mkdirSync(join(dir, 'bin'));
  writeFileSync(join(dir, 'bin/tool'), '#!/bin/sh\necho hi\n');
  chmodSync(join(dir, 'bin/tool'), 0o4755);
  linkSync(join(dir, 'bin/tool'), join(dir, 'bin/tool-hardlink'));
  symlinkSync('/etc/passwd', join(dir, 'abs-link'));
  symlinkSync('../bin/tool', join(dir, 'bin/rel-link'));
  mkdirSync(join(dir, 'tmp'));
  chmodSync(join(dir, 'tmp'), 0o1777);
  mkdirSync(join(dir, LONG), { recursive: true });
  writeFileSync(join(dir, LONG, 'long-file-name-' + 'y'.repeat(80)), 'deep');
  writeFileSync(join(dir, 'ünïcødé ✓'), 'utf8 name');
  writeFileSync(join(dir, 'big.bin'), prng(700_000, 7));
  writeFileSync(join(dir, 'empty'), '');
  sh('mkfifo', [join(dir, 'fifo')]);
  sh('mknod', [join(dir, 'null'), 'c', '1', '3']);
  setXattr(join(dir, 'bin/tool'), 'security.capability', Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
  setXattr(join(dir, 'big.bin'), 'user.note', Buffer.from([0, 0xff, 0x0a, 0x3d]));
  sh('chown', ['-h', '1234:5678', join(dir, 'empty')]);
  sh('chown', ['-h', '3000000:3000001', join(dir, 'fifo')]); // beyond USTAR's 7 octal digits: PAX uid/gid
  utimesSync(join(dir, 'big.bin'), 1_000_000, 1_000_000);
  lutimesSync(join(dir, 'abs-link'), 2_000_000, 2_000_000);
}

describe('tar writer', () => {
  it('packs every entry kind, sorted, deterministic, and reads back identically', async (t) => {
    const d = tempDir(t, 'tar');
    const src = join(d, 'src');
    mkdirSync(src);
    makeTree(src);
    const a = await collect(packDirectory(src));
    const b = await collect(packDirectory(src));
    assert.ok(a.equals(b), 'same tree packs to the same bytes');
    assert.equal(a.length % 512, 0);

    const names: string[] = [];
    const seen = new Map<string, { type: string; mode: number; uid: number; gid: number; linkname: string; xattrs: Map<string, Buffer>; size: number }>();
    for await (const e of readTar(Readable.from([a]))) {
      names.push(e.header.name);
      seen.set(e.header.name, e.header);
      await collect(e.body);
    }
    // depth-first, children in byte order, directories with a trailing slash
    assert.deepEqual(names.slice(0, 7), ['abs-link', 'big.bin', 'bin/', 'bin/rel-link', 'bin/tool', 'bin/tool-hardlink', 'dir0-' + 'x'.repeat(25) + '/']);
    assert.equal(names[names.length - 1], 'ünïcødé ✓');
    assert.equal(seen.get('bin/tool')!.mode, 0o4755);
    assert.equal(seen.get('tmp/')!.mode, 0o1777);
    assert.equal(seen.get('bin/tool-hardlink')!.type, 'link');
    assert.equal(seen.get('bin/tool-hardlink')!.linkname, 'bin/tool');
    assert.equal(seen.get('abs-link')!.type, 'symlink');
    assert.equal(seen.get('abs-link')!.linkname, '/etc/passwd');
    assert.equal(seen.get('null')!.type, 'char');
    assert.equal(seen.get('fifo')!.type, 'fifo');
    assert.equal(seen.get('fifo')!.uid, 3000000);
    assert.equal(seen.get('fifo')!.gid, 3000001);
    assert.equal(seen.get('empty')!.uid, 1234);
    assert.deepEqual(seen.get('big.bin')!.xattrs.get('user.note'), Buffer.from([0, 0xff, 0x0a, 0x3d]));
    assert.equal(seen.get('bin/tool')!.xattrs.get('security.capability')!.length, 20);
    assert.ok(seen.has(`${LONG}/long-file-name-${'y'.repeat(80)}`));

    // an independent reader agrees on names and bodies
    const ts = await untar(a);
    assert.deepEqual(ts.map((e) => e.header.name.replace(/\/$/, '')), names.map((n) => n.replace(/\/$/, '')));
    assert.ok(ts.find((e) => e.header.name === 'big.bin')!.body.equals(readFileSync(join(src, 'big.bin'))));
  });

  it('is read by GNU tar: listing and extraction match the source tree (incl. xattrs)', async (t) => {
    requireTool('tar');
    const d = tempDir(t, 'tar');
    const src = join(d, 'src');
    mkdirSync(src);
    makeTree(src);
    const tarFile = join(d, 'l.tar');
    writeFileSync(tarFile, await collect(packDirectory(src)));
    const listing = sh('tar', ['-tf', tarFile]).trim().split('\n');
    assert.ok(listing.includes('bin/tool-hardlink'));
    assert.ok(listing.includes(`${LONG}/long-file-name-${'y'.repeat(80)}`));
    const out = join(d, 'gnu');
    mkdirSync(out);
    sh('tar', ['-xpf', tarFile, '-C', out, '--xattrs', '--xattrs-include=*', '--numeric-owner']);
    assert.deepEqual(snapshot(out), snapshot(src));
  });

  it('applies mtimeClamp, uid/gid overrides and filter (subtree skipped)', async (t) => {
    const d = tempDir(t, 'tar');
    mkdirSync(join(d, 'keep/sub'), { recursive: true });
    mkdirSync(join(d, 'skip'));
    writeFileSync(join(d, 'skip/x'), 'x');
    writeFileSync(join(d, 'keep/sub/f'), 'f');
    utimesSync(join(d, 'keep/sub/f'), 100, 100);
    const got: { name: string; mtime: number; uid: number }[] = [];
    const s = packDirectory(d, { mtimeClamp: 500, uid: 42, gid: 43, filter: (rel) => rel !== 'skip' });
    for await (const e of readTar(s)) got.push({ name: e.header.name, mtime: e.header.mtime, uid: e.header.uid });
    assert.deepEqual(
      got.map((g) => g.name),
      ['keep/', 'keep/sub/', 'keep/sub/f'],
    );
    assert.equal(got.find((g) => g.name === 'keep/sub/f')!.mtime, 100, 'older mtimes stay');
    assert.equal(got.find((g) => g.name === 'keep/')!.mtime, 500, 'newer mtimes are clamped');
    assert.ok(got.every((g) => g.uid === 42));
  });

  it('packEntries: caller order, lazy bodies, whiteouts, size mismatch fails', async (t) => {
    const d = tempDir(t, 'tar');
    writeFileSync(join(d, 'f'), 'from disk');
    let opened = 0;
    async function* gen(): AsyncGenerator<TarEntry> {
      yield { header: { name: 'z/', type: 'directory', mode: 0o700 } };
      yield { header: { name: 'z/.wh..wh..opq', type: 'file', size: 0 } };
      yield { header: { name: 'a/.wh.gone', type: 'file', size: 0 } };
      opened++;
      yield { header: { name: '/abs/./f', type: 'file', size: 9, mode: 0o600 }, path: join(d, 'f') };
      yield { header: { name: 'stream', type: 'file', size: 6 }, body: Readable.from([Buffer.from('abc'), Buffer.from('def')]) };
    }
    const out = await collect(packEntries(gen()));
    const es = await untar(out);
    assert.deepEqual(es.map((e) => e.header.name), ['z/', 'z/.wh..wh..opq', 'a/.wh.gone', 'abs/f', 'stream']);
    assert.equal(es[3]!.body.toString(), 'from disk');
    assert.equal(es[3]!.header.mode, 0o600);
    assert.equal(es[4]!.body.toString(), 'abcdef');
    assert.equal(opened, 1);

    await assert.rejects(
      collect(packEntries([{ header: { name: 'short', type: 'file', size: 10 }, body: 'abc' }])),
      /body of short has 3 bytes, its header declares 10/,
    );
    await assert.rejects(
      collect(packEntries([{ header: { name: 'long', type: 'file', size: 2 }, body: Readable.from([Buffer.from('abc')]) }])),
      /body of long is longer than its declared size 2/,
    );
  });

  it('encodes long link targets and huge uids via PAX', async () => {
    const target = '/' + 'l'.repeat(150);
    const hdr = encodeHeader({ name: 'x', type: 'symlink', linkname: target });
    const es = [];
    for await (const e of readTar(Readable.from([Buffer.concat([hdr, Buffer.alloc(1024)])]))) es.push(e.header);
    assert.equal(es[0]!.linkname, target);
    assert.throws(() => encodeHeader({ name: '', type: 'file' }), TarFormatError);
    assert.throws(() => encodeHeader({ name: 'l', type: 'link' }), /no link target/);
  });
});

describe('tar reader', () => {
  it('reads GNU tar archives (GNU long names, PAX format)', async (t) => {
    requireTool('tar');
    const d = tempDir(t, 'tar');
    const src = join(d, 'src');
    mkdirSync(join(src, LONG), { recursive: true });
    writeFileSync(join(src, LONG, 'f'.repeat(120)), 'x'.repeat(1000));
    symlinkSync('t'.repeat(120), join(src, 'longlink'));
    for (const format of ['gnu', 'posix']) {
      const f = join(d, `${format}.tar`);
      sh('tar', ['-cf', f, '--format', format, '-C', src, '.']);
      const got = new Map<string, string>();
      for await (const e of readTar(Readable.from([readFileSync(f)]))) {
        got.set(e.header.name, e.header.type === 'symlink' ? e.header.linkname : (await collect(e.body)).toString().slice(0, 3));
      }
      assert.equal(got.get(`./${LONG}/${'f'.repeat(120)}`), 'xxx', format);
      assert.equal(got.get('./longlink'), 't'.repeat(120), format);
    }
  });

  it('fails clearly on truncation, bad checksums and unsupported types', async () => {
    const tar = await collect(packEntries([{ header: { name: 'file-one', type: 'file', size: 2000 }, body: Buffer.alloc(2000, 1) }, { header: { name: 'two', type: 'file' } }]));
    const read = async (b: Buffer) => {
      for await (const e of readTar(Readable.from([b]))) await collect(e.body);
    };
    await assert.rejects(read(tar.subarray(0, 1000)), /truncated tar: unexpected end of data in the body of "file-one"/);
    const bad = Buffer.from(tar);
    bad[512 + 2048 + 10] = bad[512 + 2048 + 10]! ^ 0xff; // corrupt the second header
    await assert.rejects(read(bad), /after entry "file-one": checksum mismatch/);
    const sparse: Buffer = Buffer.from(tar);
    sparse[156] = 'S'.charCodeAt(0);
    // fix the checksum so only the type is wrong
    sparse.fill(0x20, 148, 156);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += sparse[i]!;
    sparse.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
    await assert.rejects(read(sparse), /unsupported tar entry type "S" \(GNU sparse file\) for "file-one"/);
  });
});

describe('tar + extract round trip', () => {
  it('packDirectory -> extractLayer reproduces the tree', async (t) => {
    const d = tempDir(t, 'tar');
    const src = join(d, 'src');
    mkdirSync(src);
    makeTree(src);
    const out = join(d, 'out');
    const r = await extractLayer(packDirectory(src), out);
    assert.ok(r.entries > 15);
    assert.deepEqual(snapshot(out), snapshot(src));
  });
});
