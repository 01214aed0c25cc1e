import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { tempDir } from '../helpers.js';
import { extractLayer } from '../../src/oci/extract.js';
import { packEntries, type TarEntry } from '../../src/oci/tar.js';
import { getXattr } from '../../src/oci/xattr.js';
import { collect } from './tarutil.js';

const dir = (name: string, mode = 0o755): TarEntry => ({ header: { name, type: 'directory', mode, mtime: 1_500_000_000 } });
const file = (name: string, body = name, mode = 0o644): TarEntry => ({ header: { name, type: 'file', size: Buffer.byteLength(body), mode, mtime: 1_600_000_000 }, body });
const layer = async (es: TarEntry[]) => collect(packEntries(es));

/** A "lower" tree as an earlier layer would have left it. */
function lower(root: string): void {
  mkdirSync(join(root, 'etc/conf.d'), { recursive: true });
  writeFileSync(join(root, 'etc/conf.d/a'), 'a');
  writeFileSync(join(root, 'etc/conf.d/b'), 'b');
  writeFileSync(join(root, 'etc/hosts'), 'hosts');
  mkdirSync(join(root, 'var/cache/x'), { recursive: true });
  writeFileSync(join(root, 'var/cache/x/y'), 'y');
  writeFileSync(join(root, 'gone'), 'gone');
}

describe('extractLayer', () => {
  it('extracts files, dirs, modes and mtimes (dirs after children), gzip auto-detected', async (t) => {
    const root = tempDir(t, 'ex');
    const tar = await layer([dir('a', 0o750), file('a/x', 'xx', 0o4711), dir('a/b'), file('a/b/c', 'c'), { header: { name: 'a/l', type: 'symlink', linkname: '/a/x' } }]);
    const r = await extractLayer(Readable.from([gzipSync(tar)]), root);
    assert.deepEqual(r, { entries: 5, bytes: 3 });
    assert.equal(statSync(join(root, 'a')).mode & 0o7777, 0o750);
    assert.equal(statSync(join(root, 'a/x')).mode & 0o7777, 0o4711);
    assert.equal(statSync(join(root, 'a')).mtimeMs, 1_500_000_000_000, 'dir mtime set after its children were written');
    assert.equal(statSync(join(root, 'a/x')).mtimeMs, 1_600_000_000_000);
    assert.equal(readlinkSync(join(root, 'a/l')), '/a/x');
  });

  it("whiteouts 'apply': deletes targets and empties opaque dirs but keeps this layer's entries", async (t) => {
    const root = tempDir(t, 'ex');
    lower(root);
    const tar = await layer([
      dir('etc'),
      dir('etc/conf.d'),
      file('etc/conf.d/new', 'new'),
      file('etc/conf.d/.wh..wh..opq', ''),
      file('.wh.gone', ''),
      file('var/.wh.cache', ''),
      file('.wh.never-existed', ''),
    ]);
    await extractLayer(Readable.from([tar]), root, { whiteouts: 'apply' });
    assert.deepEqual(readdirSync(join(root, 'etc/conf.d')), ['new']);
    assert.equal(readFileSync(join(root, 'etc/hosts'), 'utf8'), 'hosts');
    assert.ok(!existsSync(join(root, 'gone')));
    assert.ok(!existsSync(join(root, 'var/cache')));
    assert.ok(existsSync(join(root, 'var')));
    assert.ok(!readdirSync(root).some((n) => n.startsWith('.wh.')));
  });

  it("whiteouts 'overlay': 0/0 char devices and trusted.overlay.opaque=y", async (t) => {
    const root = tempDir(t, 'ex');
    const tar = await layer([dir('etc'), file('etc/.wh..wh..opq', ''), file('etc/new'), file('.wh.gone', ''), file('usr/lib/.wh.libx.so', '')]);
    await extractLayer(Readable.from([tar]), root, { whiteouts: 'overlay' });
    const wh = lstatSync(join(root, 'gone'));
    assert.ok(wh.isCharacterDevice());
    assert.equal(wh.rdev, 0);
    assert.ok(lstatSync(join(root, 'usr/lib/libx.so')).isCharacterDevice());
    assert.equal(getXattr(join(root, 'etc'), 'trusted.overlay.opaque')?.toString(), 'y');
    assert.deepEqual(readdirSync(join(root, 'etc')), ['new']);
  });

  it("whiteouts 'keep': written as plain files", async (t) => {
    const root = tempDir(t, 'ex');
    lower(root);
    await extractLayer(Readable.from([await layer([file('.wh.gone', ''), file('etc/conf.d/.wh..wh..opq', '')])]), root, { whiteouts: 'keep' });
    assert.ok(lstatSync(join(root, '.wh.gone')).isFile());
    assert.ok(existsSync(join(root, 'gone')));
    assert.deepEqual(readdirSync(join(root, 'etc/conf.d')).sort(), ['.wh..wh..opq', 'a', 'b']);
  });

  it('replaces files, symlinks and dirs at the final component instead of writing through them', async (t) => {
    const root = tempDir(t, 'ex');
    const outside = tempDir(t, 'outside');
    writeFileSync(join(outside, 'target'), 'outside');
    symlinkSync(join(outside, 'target'), join(root, 'link'));
    mkdirSync(join(root, 'wasdir/sub'), { recursive: true });
    await extractLayer(Readable.from([await layer([file('link', 'inside'), file('wasdir', 'now a file')])]), root);
    assert.equal(readFileSync(join(outside, 'target'), 'utf8'), 'outside');
    assert.ok(lstatSync(join(root, 'link')).isFile());
    assert.equal(readFileSync(join(root, 'wasdir'), 'utf8'), 'now a file');
  });

  it('writes through in-root symlinks relative to the root (absolute targets stay inside)', async (t) => {
    const root = tempDir(t, 'ex');
    mkdirSync(join(root, 'usr/lib'), { recursive: true });
    symlinkSync('/usr/lib', join(root, 'lib'));
    await extractLayer(Readable.from([await layer([file('lib/libc.so', 'libc')])]), root);
    assert.equal(readFileSync(join(root, 'usr/lib/libc.so'), 'utf8'), 'libc');
    assert.equal(readlinkSync(join(root, 'lib')), '/usr/lib');
  });

  it('hardlinks inside the layer', async (t) => {
    const root = tempDir(t, 'ex');
    await extractLayer(Readable.from([await layer([file('a', 'data'), { header: { name: 'b', type: 'link', linkname: 'a' } }])]), root);
    assert.equal(statSync(join(root, 'a')).ino, statSync(join(root, 'b')).ino);
  });

  it('stops on abort', async (t) => {
    const root = tempDir(t, 'ex');
    const ac = new AbortController();
    ac.abort(new Error('cancelled by test'));
    await assert.rejects(extractLayer(Readable.from([await layer([file('a')])]), root, { signal: ac.signal }), /cancelled by test/);
  });
});
