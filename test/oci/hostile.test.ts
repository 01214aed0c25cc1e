/**
 * The hostile-tar corpus: archives built here with tar-stream (an independent writer that
 * lets us write names our own writer would clean). Each must fail with a clear error naming
 * the entry (or be neutralised inside the root), and nothing may change outside the root.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Readable } from 'node:stream';
import { spawnSync } from 'node:child_process';
import { gzipSync } from 'node:zlib';
import { tempDir, requireTool, ROOT } from '../helpers.js';
import { extractLayer, ExtractError, type ExtractOptions } from '../../src/oci/extract.js';
import { TarSecurityError } from '../../src/oci/errors.js';
import { TarFormatError } from '../../src/oci/tar.js';
import { CompressionError } from '../../src/oci/compress.js';
import { listXattrs } from '../../src/oci/xattr.js';
import { prng, snapshot, tarOf, type RawEntry } from './tarutil.js';

type Ctx = { after(fn: () => void): void };

/** base/ holds root/ (the target) and sentinel/ (must never change); returns a checker. */
function setup(t: Ctx): { base: string; root: string; sentinel: string; unchanged(): void } {
  const base = tempDir(t, 'hostile');
  const root = join(base, 'root');
  const sentinel = join(base, 'sentinel');
  mkdirSync(root);
  mkdirSync(sentinel);
  writeFileSync(join(sentinel, 'secret'), 'do not touch');
  mkdirSync(join(sentinel, 'dir'));
  const outside = () => {
    const s = snapshot(base);
    for (const k of Object.keys(s)) if (k === 'root' || k.startsWith('root/')) delete s[k];
    return s;
  };
  const before = outside();
  return { base, root, sentinel, unchanged: () => assert.deepEqual(outside(), before, 'nothing changed outside the root') };
}

async function extract(entries: RawEntry[], root: string, opts?: ExtractOptions, gzip = false): Promise<unknown> {
  const tar = await tarOf(entries);
  return extractLayer(Readable.from([gzip ? gzipSync(tar) : tar]), root, opts);
}

const f = (name: string, body = 'pwned'): RawEntry => ({ header: { name, type: 'file' }, body });
const sym = (name: string, linkname: string): RawEntry => ({ header: { name, type: 'symlink', linkname } });
const hard = (name: string, linkname: string): RawEntry => ({ header: { name, type: 'link', linkname } });

function securityError(name: string, re: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof TarSecurityError, `expected TarSecurityError, got ${String(e)}`);
    assert.equal(e.entry, name);
    assert.match(e.message, new RegExp(`unsafe tar entry ${JSON.stringify(name).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    assert.match(e.message, re);
    return true;
  };
}

describe('hostile tar corpus', () => {
  it('path traversal ../ is refused', async (t) => {
    const s = setup(t);
    await assert.rejects(extract([f('ok'), f('../sentinel/secret')], s.root), securityError('../sentinel/secret', /escapes the root \(\.\.\)/));
    await assert.rejects(extract([f('a/../../sentinel/new')], s.root), securityError('a/../../sentinel/new', /escapes the root/));
    await assert.rejects(extract([{ header: { name: '../../sentinel/d', type: 'directory' } }], s.root), securityError('../../sentinel/d', /escapes/));
    s.unchanged();
  });

  it('absolute names are neutralised into the root (as GNU tar, moby, containerd)', async (t) => {
    const s = setup(t);
    await extract([f(`${s.sentinel}/secret`, 'inside'), f('/etc/abs-file', 'abs')], s.root);
    assert.equal(readFileSync(join(s.root, s.sentinel, 'secret'), 'utf8'), 'inside');
    assert.equal(readFileSync(join(s.root, 'etc/abs-file'), 'utf8'), 'abs');
    await assert.rejects(extract([f('/../sentinel/x')], s.root), securityError('/../sentinel/x', /escapes the root/));
    s.unchanged();
  });

  it('a symlink that escapes, then a write through it, is refused', async (t) => {
    const s = setup(t);
    await assert.rejects(
      extract([sym('evil', '../sentinel'), f('evil/secret')], s.root),
      securityError('evil/secret', /goes through a symlink that escapes the root/),
    );
    // the symlink itself is harmless and stays as written
    assert.equal(readlinkSync(join(s.root, 'evil')), '../sentinel');
    await assert.rejects(
      extract([sym('x/deep', '../../../sentinel/dir'), f('x/deep/new')], s.root),
      securityError('x/deep/new', /escapes the root/),
    );
    // chained links: l1 -> l2/sub, l2 -> ../..
    await assert.rejects(extract([sym('l2', '../..'), sym('l1', 'l2/sub'), f('l1/f')], s.root), securityError('l1/f', /escapes the root/));
    // directory entry through the escaping link
    await assert.rejects(extract([{ header: { name: 'evil/newdir', type: 'directory' } }], s.root), securityError('evil/newdir', /escapes/));
    s.unchanged();
  });

  it('an absolute symlink stays a link: never followed, writes land inside the root', async (t) => {
    const s = setup(t);
    await extract([sym('abs', `${s.sentinel}/secret`), sym('absdir', s.sentinel)], s.root);
    assert.equal(readlinkSync(join(s.root, 'abs')), `${s.sentinel}/secret`);
    // writing the link's own name replaces the link; writing through the dir link resolves inside the root
    await extract([f('abs', 'replaced'), f('absdir/secret', 'inside'), f('absdir/dir/x', 'inside too')], s.root);
    assert.ok(lstatSync(join(s.root, 'abs')).isFile());
    assert.equal(readFileSync(join(s.root, s.sentinel, 'secret'), 'utf8'), 'inside');
    assert.equal(readFileSync(join(s.root, s.sentinel, 'dir/x'), 'utf8'), 'inside too');
    s.unchanged();
  });

  it('hardlinks to outside are refused; absolute hardlink targets resolve inside the root', async (t) => {
    const s = setup(t);
    await assert.rejects(extract([hard('hl', '../sentinel/secret')], s.root), securityError('hl', /hardlink target "..\/sentinel\/secret" escapes the root/));
    await assert.rejects(
      extract([hard('hl2', `${s.sentinel}/secret`)], s.root),
      (e: unknown) => e instanceof ExtractError && /hl2.*hardlink target .* does not exist/.test(e.message),
    );
    // through a symlink that points outside
    await assert.rejects(extract([sym('out', '../sentinel'), hard('hl3', 'out/secret')], s.root), securityError('hl3', /escapes the root/));
    await assert.rejects(extract([{ header: { name: 'd', type: 'directory' } }, hard('hl4', 'd')], s.root), securityError('hl4', /hardlink to a directory/));
    assert.equal(statSync(join(s.sentinel, 'secret')).nlink, 1);
    s.unchanged();
  });

  it('symlink loops and non-directories in the path fail clearly', async (t) => {
    const s = setup(t);
    await assert.rejects(extract([sym('a', 'b'), sym('b', 'a'), f('a/x')], s.root), securityError('a/x', /too many levels of symbolic links/));
    await assert.rejects(extract([f('plain'), f('plain/x')], s.root), /cannot extract "plain\/x": "plain" is not a directory/);
    s.unchanged();
  });

  it('whiteouts of "..", "." and escaping whiteouts are refused in every mode that applies them', async (t) => {
    const s = setup(t);
    for (const whiteouts of ['apply', 'overlay'] as const) {
      await assert.rejects(extract([f('.wh...', '')], s.root, { whiteouts }), securityError('.wh...', /whiteout of "\.\." is not allowed/));
      await assert.rejects(extract([f('sub/.wh..', '')], s.root, { whiteouts }), securityError('sub/.wh..', /whiteout of "\." is not allowed/));
      await assert.rejects(extract([f('../.wh.sentinel', '')], s.root, { whiteouts }), securityError('../.wh.sentinel', /escapes the root/));
      await assert.rejects(
        extract([sym('up', '..'), f('up/.wh.sentinel', '')], s.root, { whiteouts }),
        securityError('up/.wh.sentinel', /escapes the root/),
      );
      await assert.rejects(
        extract([sym('up2', '../sentinel'), f('up2/.wh..wh..opq', '')], s.root, { whiteouts }),
        securityError('up2/.wh..wh..opq', /escapes the root/),
      );
    }
    assert.ok(existsSync(join(s.sentinel, 'secret')));
    s.unchanged();
  });

  it('truncated gzip fails with a clear error naming where it stopped', async (t) => {
    const s = setup(t);
    const tar = await tarOf([
      { header: { name: 'first', type: 'file' }, body: prng(100_000, 1) },
      { header: { name: 'second', type: 'file' }, body: prng(100_000, 2) },
    ]);
    const gz = gzipSync(tar);
    await assert.rejects(extractLayer(Readable.from([gz.subarray(0, gz.length - 200)]), s.root), (e: unknown) => {
      assert.ok(e instanceof CompressionError, String(e));
      assert.match(e.message, /truncated gzip stream \(unexpected end of file\) \(in or after entry "second"\)/);
      return true;
    });
    // a tar cut mid-body (uncompressed)
    await assert.rejects(extractLayer(Readable.from([tar.subarray(0, 50_000)]), s.root), /truncated tar: unexpected end of data in the body of "first"/);
    s.unchanged();
  });

  it('oversize and invalid headers fail clearly', async (t) => {
    const s = setup(t);
    await assert.rejects(
      extract([{ header: { name: 'big-pax', type: 'file', pax: { comment: 'x'.repeat(2 * 1024 * 1024) } }, body: 'x' }], s.root),
      (e: unknown) => e instanceof TarFormatError && /oversize PAX header \(\d+ bytes, limit 1048576\)/.test(e.message),
    );
    const tar = await tarOf([f('good', 'g'), f('victim', 'v')]);
    const bad = Buffer.from(tar);
    bad.write('zzzzzzzzzzz', 1024 + 124, 'ascii'); // size field of the 2nd header: not octal
    await assert.rejects(extractLayer(Readable.from([bad]), s.root), /invalid tar header at offset 1024 after entry "good": checksum mismatch/);
    // the same, with a correct checksum: the field itself is reported
    const fixed = Buffer.from(bad);
    fixed.fill(0x20, 1024 + 148, 1024 + 156);
    let sum = 0;
    for (let i = 1024; i < 1536; i++) sum += fixed[i]!;
    fixed.write(sum.toString(8).padStart(6, '0') + '\0 ', 1024 + 148, 8, 'ascii');
    await assert.rejects(extractLayer(Readable.from([fixed]), s.root), /invalid tar header for "victim": size is not octal/);
    // random bytes are not a tar
    await assert.rejects(extractLayer(Readable.from([Buffer.alloc(4096, 0x41)]), s.root), /checksum mismatch \(corrupt tar, or compressed data read as tar\)/);
    s.unchanged();
  });

  it('archive xattrs cannot steer overlayfs (trusted.overlay.* is dropped)', async (t) => {
    const s = setup(t);
    await extract(
      [{ header: { name: 'd', type: 'directory', pax: { 'SCHILY.xattr.trusted.overlay.redirect': '/sentinel', 'SCHILY.xattr.user.ok': 'fine' } } }],
      s.root,
      { whiteouts: 'overlay' },
    );
    assert.deepEqual(listXattrs(join(s.root, 'd')), ['user.ok']);
    s.unchanged();
  });

  it('device nodes are refused when not running as root (extractor run as uid 65534)', async (t) => {
    requireTool('setpriv');
    const s = setup(t);
    chownSync(s.root, 65534, 65534);
    chmodSync(s.base, 0o755);
    // the run's own TMPDIR (scripts/run-tests.mjs) is mode 0700: let uid 65534 traverse it
    const tmp = tmpdir();
    if (tmp !== '/tmp' && (statSync(tmp).mode & 0o001) === 0) chmodSync(tmp, statSync(tmp).mode | 0o711);
    const tarDir = tempDir(t, 'hostile-tar');
    chmodSync(tarDir, 0o755);
    const tarFile = join(tarDir, 'dev.tar');
    writeFileSync(
      tarFile,
      await tarOf([f('before'), { header: { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0 } }, f('after')]),
    );
    const script = `
      import { extractLayer } from ${JSON.stringify(join(ROOT, 'dist/src/oci/index.js'))};
      import { createReadStream } from 'node:fs';
      try { await extractLayer(createReadStream(process.argv[1]), process.argv[2]); console.log(JSON.stringify({ ok: true })); }
      catch (e) { console.log(JSON.stringify({ name: e.constructor.name, message: e.message, uid: process.getuid() })); }`;
    const r = spawnSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script, tarFile, s.root], {
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim()) as { name: string; message: string; uid: number };
    assert.equal(out.uid, 65534);
    assert.equal(out.name, 'TarSecurityError');
    assert.equal(out.message, 'unsafe tar entry "dev/sda": device node (block 8:0) needs root (running as uid 65534)');
    assert.ok(existsSync(join(s.root, 'before')));
    assert.ok(!existsSync(join(s.root, 'dev/sda')) && !existsSync(join(s.root, 'after')), 'extraction stopped at the device');
    s.unchanged();
  });

  it('as root with allowDevices=false devices are refused too; fifos are fine', async (t) => {
    const s = setup(t);
    await assert.rejects(
      extract([{ header: { name: 'null', type: 'character-device', devmajor: 1, devminor: 3 } }], s.root, { allowDevices: false }),
      securityError('null', /device node \(char 1:3\) needs root/),
    );
    await extract([{ header: { name: 'p', type: 'fifo', mode: 0o600 } }], s.root, { allowDevices: false });
    assert.ok(lstatSync(join(s.root, 'p')).isFIFO());
    s.unchanged();
  });

  it('a symlink planted by a lower layer is not followed when the file is rewritten', async (t) => {
    const s = setup(t);
    symlinkSync(join(s.sentinel, 'secret'), join(s.root, 'etc-passwd'));
    await extract([f('etc-passwd', 'root::0:0')], s.root);
    assert.equal(readFileSync(join(s.sentinel, 'secret'), 'utf8'), 'do not touch');
    assert.ok(lstatSync(join(s.root, 'etc-passwd')).isFile());
    s.unchanged();
  });
});
