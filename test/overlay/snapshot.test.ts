/**
 * Snapshots on the real kernel overlayfs (and the vfs driver): each change case is made in a
 * container (our runner) on base + fixture layers, diffed into a layer, re-applied with the safe
 * extractor onto the lower layers, and the result must be exactly the merged tree.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chownSync, linkSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { openSnapshotter, isMounted, type Snapshotter } from '../../src/overlay/index.js';
import { BuiltinRunner } from '../../src/ns/index.js';
import { DigestMismatchError, diffIDOf, extractLayer, packDirectory, setXattr, type Digest } from '../../src/oci/index.js';
import { baseLayer, fingerprint, fixtureTree, listTar, toBuffer, type Listed } from './util.js';

type Case = { name: string; script?: string; host?: (merged: string) => void; check: (entries: Listed[], driver: string) => void };

const names = (e: Listed[]) => e.map((x) => x.name);

const CASES: Case[] = [
  {
    name: 'add files and directories',
    script: 'echo new > /data/new.txt; mkdir -p /data/newdir/sub; echo z > /data/newdir/sub/z; ln -s ../new.txt /data/newdir/link',
    check: (e) => {
      assert.ok(names(e).includes('data/new.txt') && names(e).includes('data/newdir/sub/z'));
      assert.equal(e.find((x) => x.name === 'data/newdir/link')?.linkname, '../new.txt');
    },
  },
  {
    name: 'change a file',
    script: 'echo more >> /data/change.txt',
    check: (e) => assert.equal(e.find((x) => x.name === 'data/change.txt')?.size, 'change\nmore\n'.length),
  },
  {
    name: 'delete a file and a directory',
    script: 'rm /data/del.txt; rm -r /data/dir',
    check: (e) => {
      assert.ok(names(e).includes('data/.wh.del.txt'));
      assert.ok(names(e).includes('data/.wh.dir'));
      assert.ok(!names(e).some((n) => n.startsWith('data/dir/')));
    },
  },
  {
    name: 'rename a file and a directory',
    script: 'mv /data/ren/old.txt /data/ren/new.txt; mv /data/rendir /data/rendir-moved',
    check: (e) => {
      assert.ok(names(e).includes('data/ren/.wh.old.txt') && names(e).includes('data/ren/new.txt'));
      assert.ok(names(e).includes('data/.wh.rendir') && names(e).includes('data/rendir-moved/inner.txt'));
    },
  },
  {
    name: 'opaque directory (removed and recreated)',
    script: 'rm -rf /data/opq; mkdir /data/opq; echo n > /data/opq/n',
    check: (e, driver) => {
      assert.ok(names(e).includes('data/opq/n'));
      if (driver === 'overlay') {
        assert.ok(names(e).includes('data/opq/.wh..wh..opq'), names(e).join(' '));
        assert.ok(!names(e).includes('data/opq/.wh.x'));
      } else {
        // vfs can't tell a recreated dir from an emptied one when the inode is reused: whiteouts instead
        assert.ok(names(e).includes('data/opq/.wh..wh..opq') || (names(e).includes('data/opq/.wh.x') && names(e).includes('data/opq/.wh.y')), names(e).join(' '));
      }
    },
  },
  {
    name: 'hardlinks',
    script: 'echo h > /data/h1; ln /data/h1 /data/h2; ln /data/hl /data/hl2',
    check: (e) => {
      const h2 = e.find((x) => x.name === 'data/h2');
      assert.equal(h2?.type, 'link');
      assert.equal(h2?.linkname, 'data/h1');
      const hl2 = e.find((x) => x.name === 'data/hl2');
      assert.ok(hl2 && (hl2.type === 'link' || e.find((x) => x.name === 'data/hl')?.type === 'link'));
    },
  },
  {
    name: 'xattrs',
    host: (m) => {
      setXattr(join(m, 'data/keep.txt'), 'user.note', 'hello');
      writeFileSync(join(m, 'data/cap'), 'x');
      setXattr(join(m, 'data/cap'), 'security.capability', Buffer.from('0100000200200000000000000000000000000000', 'hex'));
    },
    check: (e) => {
      assert.deepEqual(e.find((x) => x.name === 'data/keep.txt')?.xattrs, ['user.note']);
      assert.deepEqual(e.find((x) => x.name === 'data/cap')?.xattrs, ['security.capability']);
      assert.ok(!e.some((x) => x.xattrs.some((k) => k.startsWith('trusted.overlay.'))));
    },
  },
  {
    name: 'special permissions, owners, fifo',
    script: 'chmod 4755 /data/perm; touch /data/sgid; chmod 2711 /data/sgid; mkdir /data/sticky; chmod 1777 /data/sticky; chown 1000:2000 /data/keep.txt; mkfifo /data/fifo',
    check: (e) => {
      assert.equal(e.find((x) => x.name === 'data/perm')?.mode, 0o4755);
      assert.equal(e.find((x) => x.name === 'data/sgid')?.mode, 0o2711);
      assert.equal(e.find((x) => x.name === 'data/sticky')?.mode, 0o1777);
      const k = e.find((x) => x.name === 'data/keep.txt');
      assert.equal(`${k?.uid}:${k?.gid}`, '1000:2000');
      assert.equal(e.find((x) => x.name === 'data/fifo')?.type, 'fifo');
    },
  },
];

let work: string;
let baseBlob: string;
let baseDiff: Digest;
let fixtureTar: Buffer;
let fixtureDiff: Digest;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'tsimage-ovltest-'));
  const b = await baseLayer();
  baseBlob = b.layout.blobPath(b.desc.digest);
  baseDiff = b.diffID;
  const fx = join(work, 'fixture');
  fixtureTree(fx);
  fixtureTar = await toBuffer(packDirectory(fx));
  fixtureDiff = (await diffIDOf(Readable.from([fixtureTar]))).diffID;
});
after(() => rmSync(work, { recursive: true, force: true }));

async function lowerTree(dir: string): Promise<void> {
  const { createReadStream } = await import('node:fs');
  await extractLayer(createReadStream(baseBlob), dir, { whiteouts: 'apply' });
  await extractLayer(Readable.from([fixtureTar]), dir, { whiteouts: 'apply' });
}

for (const driver of ['overlay', 'vfs'] as const) {
  describe(`snapshots (${driver})`, () => {
    let snap: Snapshotter;
    let root: string;
    const runner = new BuiltinRunner();
    before(async () => {
      root = join(work, `root-${driver}`);
      snap = await openSnapshotter({ root, driver });
      const { createReadStream } = await import('node:fs');
      await snap.addLayer(baseDiff, createReadStream(baseBlob));
      await snap.addLayer(fixtureDiff, Readable.from([fixtureTar]));
    });
    after(async () => {
      await snap.close();
    });

    for (const c of CASES) {
      it(`${c.name}: diff re-applied on the lower layers gives the merged tree`, async (t) => {
        const key = `case-${CASES.indexOf(c)}`;
        const { rootfs } = await snap.prepare(key, [baseDiff, fixtureDiff]);
        t.after(() => snap.remove(key));
        if (driver === 'overlay') assert.ok(isMounted(rootfs));
        if (c.script) {
          const res = await runner.run(['/bin/sh', '-ec', c.script], { rootfs, stdio: { stdout: 'ignore' } });
          assert.equal(res.exitCode, 0, `${c.script} failed`);
        }
        c.host?.(rootfs);
        const tar = await toBuffer(snap.diff(key));
        const entries = await listTar(Readable.from([tar]));
        c.check(entries, driver);
        // deterministic: the same tree gives the same bytes
        assert.ok(tar.equals(await toBuffer(snap.diff(key))), 'diff is not deterministic');
        const applied = join(work, `applied-${driver}-${key}`);
        t.after(() => rmSync(applied, { recursive: true, force: true }));
        await lowerTree(applied);
        await extractLayer(Readable.from([tar]), applied, { whiteouts: 'apply' });
        assert.deepEqual(fingerprint(applied), fingerprint(rootfs));
      });
    }

    it('commit keeps the changes as a cached layer that later snapshots stack on', async (t) => {
      const { rootfs } = await snap.prepare('c1', [baseDiff, fixtureDiff]);
      t.after(() => snap.remove('c1'));
      const res = await runner.run(['/bin/sh', '-ec', 'echo committed > /data/c.txt; rm /data/keep.txt; rm -rf /data/opq; mkdir /data/opq'], { rootfs });
      assert.equal(res.exitCode, 0);
      const { diffID } = await diffIDOf(snap.diff('c1'));
      await snap.commit('c1', diffID);
      assert.ok(await snap.hasLayer(diffID));
      const { rootfs: r2 } = await snap.prepare('c2', [baseDiff, fixtureDiff, diffID]);
      t.after(() => snap.remove('c2'));
      assert.equal(readFileSync(join(r2, 'data/c.txt'), 'utf8'), 'committed\n');
      assert.ok(!existsSync(join(r2, 'data/keep.txt')));
      assert.deepEqual(readdirSync(join(r2, 'data/opq')), []);
      assert.ok(existsSync(join(r2, 'data/change.txt')));
    });

    it('refuses a layer whose content does not match its diffID, keeping nothing', async () => {
      const wrong = ('sha256:' + '1'.repeat(64)) as Digest;
      await assert.rejects(snap.addLayer(wrong, Readable.from([fixtureTar])), DigestMismatchError);
      assert.equal(await snap.hasLayer(wrong), false);
      assert.deepEqual(readdirSync(join(root, 'layers')).filter((n) => n.startsWith('.tmp-')), []);
      await assert.rejects(snap.prepare('x', [wrong]), /not in the layer cache/);
      await assert.rejects(snap.prepare('../evil', []), /invalid snapshot key/);
    });
  });
}

describe('snapshot housekeeping', () => {
  it('stacks 130 layers (short lowerdir names)', async (t) => {
    const root = join(work, 'deep');
    const snap = await openSnapshotter({ root, driver: 'overlay' });
    t.after(() => snap.close());
    const ids: Digest[] = [];
    for (let i = 0; i < 130; i++) {
      const d = join(work, `deep-src-${i}`);
      mkdirSync(d);
      writeFileSync(join(d, `f${i}`), String(i));
      writeFileSync(join(d, 'top'), String(i));
      const tar = await toBuffer(packDirectory(d));
      const { diffID } = await diffIDOf(Readable.from([tar]));
      await snap.addLayer(diffID, Readable.from([tar]));
      ids.push(diffID);
      rmSync(d, { recursive: true });
    }
    const { rootfs } = await snap.prepare('deep', ids);
    assert.equal(readFileSync(join(rootfs, 'top'), 'utf8'), '129');
    assert.equal(readFileSync(join(rootfs, 'f0'), 'utf8'), '0');
    await snap.remove('deep');
    assert.ok(!isMounted(rootfs));
  });

  it("another snapshotter opening the same root never removes a snapshot being created (builds in parallel)", async (t) => {
    const root = join(work, 'parallel');
    const a = await openSnapshotter({ root, driver: 'overlay' });
    t.after(() => a.close());
    // two builds of one process share the root: one prepares snapshots while the other opens (and cleans up)
    const opens = Array.from({ length: 20 }, async () => (await openSnapshotter({ root, driver: 'overlay' })).close());
    const made = Array.from({ length: 20 }, (_, i) => a.prepare(`p${i}`, []));
    await Promise.all(opens);
    for (const { rootfs } of await Promise.all(made)) assert.ok(isMounted(rootfs), `${rootfs} was taken away while it was being made`);
    for (let i = 0; i < 20; i++) await a.remove(`p${i}`);
    // the staging name carries the owner: a live one is kept, a dead one's is removed
    const stamp = readFileSync('/proc/self/stat', 'utf8');
    const start = stamp.slice(stamp.lastIndexOf(')') + 2).split(' ')[19];
    mkdirSync(join(root, 'containers', `.new-x-${process.pid}_${start}`));
    mkdirSync(join(root, 'containers', '.new-y-999999999_1'));
    await (await openSnapshotter({ root, driver: 'overlay' })).close();
    assert.deepEqual(readdirSync(join(root, 'containers')), [`.new-x-${process.pid}_${start}`]);
    rmSync(join(root, 'containers', `.new-x-${process.pid}_${start}`), { recursive: true });
  });

  it('cleans up snapshots left by a killed process at the next open', async () => {
    const root = join(work, 'crash');
    const mod = new URL('../../src/overlay/index.js', import.meta.url).pathname;
    const script = `import { openSnapshotter } from ${JSON.stringify(mod)};
      const s = await openSnapshotter({ root: ${JSON.stringify(root)}, driver: 'overlay' });
      const { rootfs } = await s.prepare('left', []);
      process.stdout.write(rootfs + '\\n');
      process.kill(process.pid, 'SIGKILL');`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    const rootfs = r.stdout.trim();
    assert.ok(rootfs.endsWith('/merged'), r.stderr);
    assert.ok(isMounted(rootfs), 'the killed process should have left its mount');
    const snap = await openSnapshotter({ root, driver: 'overlay' });
    await snap.close();
    assert.ok(!isMounted(rootfs));
    assert.ok(!existsSync(join(root, 'containers', 'left')));
  });

  it('picks the vfs driver with a notice where overlayfs cannot mount (state dir on an overlay), refuses an explicit overlay', async (t) => {
    // the state root inside an overlay mount: overlayfs cannot be an upperdir, so the probe fails
    const outer = join(work, 'outer');
    for (const d of ['l', 'u', 'w', 'm']) mkdirSync(join(outer, d), { recursive: true });
    const mnt = join(outer, 'm');
    const r0 = spawnSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${join(outer, 'l')},upperdir=${join(outer, 'u')},workdir=${join(outer, 'w')}`, mnt], { encoding: 'utf8' });
    assert.equal(r0.status, 0, r0.stderr);
    t.after(() => {
      spawnSync('umount', [mnt]);
      rmSync(outer, { recursive: true, force: true });
    });
    const mod = new URL('../../src/overlay/index.js', import.meta.url).pathname;
    const script = (driver: string) => `import { openSnapshotter } from ${JSON.stringify(mod)};
      import { writeFileSync } from 'node:fs';
      const notices = [];
      try {
        const s = await openSnapshotter({ root: ${JSON.stringify(join(mnt, 'state'))}, driver: '${driver}', notice: (m) => notices.push(m) });
        const { rootfs } = await s.prepare('k', []);
        writeFileSync(rootfs + '/f', 'x');
        const names = [];
        for await (const c of s.diff('k')) names.push(c.length);
        await s.close();
        console.log(JSON.stringify({ driver: s.driver, notices, bytes: names.reduce((a, b) => a + b, 0) }));
      } catch (e) { console.log(JSON.stringify({ error: e.message })); }`;
    const run = (driver: string) => JSON.parse(spawnSync(process.execPath, ['--input-type=module', '-e', script(driver)], { encoding: 'utf8' }).stdout.trim());
    const auto = run('auto');
    assert.equal(auto.driver, 'vfs', JSON.stringify(auto));
    assert.equal(auto.notices.length, 1);
    assert.match(auto.notices[0], /overlayfs is not available under .*state; using the copy-based vfs storage driver/);
    assert.ok(auto.bytes >= 1536, 'the vfs snapshot diffs');
    const explicit = run('overlay');
    assert.match(explicit.error, /overlayfs is not available here .*use --storage-driver vfs/);
    const bad = run('zfs');
    assert.match(bad.error, /unknown storage driver "zfs" \(expected overlay or vfs\)/);
  });

  it('unmounts on remove even when the snapshot is in use', async (t) => {
    const root = join(work, 'busy');
    const snap = await openSnapshotter({ root, driver: 'overlay' });
    t.after(() => snap.close());
    const { rootfs } = await snap.prepare('busy', []);
    writeFileSync(join(rootfs, 'f'), 'x');
    chownSync(join(rootfs, 'f'), 1, 1);
    await snap.remove('busy');
    assert.ok(!isMounted(rootfs) && !existsSync(rootfs));
  });
});
