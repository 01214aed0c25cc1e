/**
 * Our overlay diff against the layer buildah commits for the same change: the same image
 * (busybox base + a fixture layer, written by our store), the same script run in a container
 * (ours: BuiltinRunner on an overlay snapshot; buildah: `buildah run --isolation chroot`), the
 * same host-side xattr edits; then the layer's entries (names, types, modes, owners, symlink
 * targets, sizes, xattrs, whiteouts, opaque markers) must be the same. buildah runs with its own
 * overlay storage in a temp dir (--root/--runroot via CONTAINERS_STORAGE_CONF); its containers
 * are unmounted and removed, its images deleted, and no mount is left under the temp dir.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { sh, requireTool } from '../helpers.js';
import { openSnapshotter, isMounted, type Snapshotter } from '../../src/overlay/index.js';
import { BuiltinRunner } from '../../src/ns/index.js';
import { MediaTypes, OciLayout, diffIDOf, packDirectory, parseManifest, setXattr, toJsonBytes, writeLayer, type Digest, type Descriptor, type ImageManifest } from '../../src/oci/index.js';
import { baseLayer, fixtureTree, listTar, toBuffer, type Listed } from './util.js';

/** Every change case of snapshot.test.ts in one step. */
const SCRIPT = [
  // add
  'echo new > /data/new.txt; mkdir -p /data/newdir/sub; echo z > /data/newdir/sub/z; ln -s ../new.txt /data/newdir/link',
  // change
  'echo more >> /data/change.txt',
  // delete
  'rm /data/del.txt; rm -r /data/dir',
  // rename
  'mv /data/ren/old.txt /data/ren/new.txt; mv /data/rendir /data/rendir-moved',
  // opaque dir
  'rm -rf /data/opq; mkdir /data/opq; echo n > /data/opq/n',
  // hardlinks (new, and to a lower file)
  'echo h > /data/h1; ln /data/h1 /data/h2; ln /data/hl /data/hl2',
  // special permissions, owners, fifo
  'chmod 4755 /data/perm; touch /data/sgid; chmod 2711 /data/sgid; mkdir /data/sticky; chmod 1777 /data/sticky; chown 1000:2000 /data/keep.txt; mkfifo /data/fifo',
].join('\n');

/** xattr edits made from the host (busybox has no setfattr). */
function hostEdits(root: string): void {
  setXattr(join(root, 'data/keep.txt'), 'user.note', 'hello');
  writeFileSync(join(root, 'data/cap'), 'x');
  setXattr(join(root, 'data/cap'), 'security.capability', Buffer.from('0100000200200000000000000000000000000000', 'hex'));
}

/**
 * name -> comparable description. Hardlinks: which of a set is written as the file and which as
 * the link depends on walk order only, so a link is described as its target's content plus "link".
 */
function describeLayer(entries: Listed[]): Map<string, string> {
  const byName = new Map(entries.map((e) => [e.name, e]));
  const out = new Map<string, string>();
  for (const e of entries) {
    let what: string;
    if (e.type === 'link') {
      const t = byName.get(e.linkname.replace(/^\.\//, '').replace(/^\//, ''));
      what = `file(hardlink) size=${t?.size}`;
    } else if (e.type === 'file') {
      what = `file size=${e.size}`;
    } else if (e.type === 'symlink') {
      what = `symlink -> ${e.linkname}`;
    } else what = e.type;
    out.set(e.name, `${what} mode=${e.mode.toString(8)} ${e.uid}:${e.gid} xattrs=[${e.xattrs.sort().join(',')}]`);
  }
  return out;
}

function hardlinkSets(entries: Listed[]): string[] {
  const sets = new Map<string, Set<string>>();
  for (const e of entries) {
    if (e.type !== 'link') continue;
    const t = e.linkname.replace(/^\.\//, '').replace(/^\//, '');
    const s = sets.get(t) ?? new Set([t]);
    s.add(e.name);
    sets.set(t, s);
  }
  return [...sets.values()].map((s) => [...s].sort().join('=')).sort();
}

let work = '';
let env: NodeJS.ProcessEnv = {};
let lower: { layout: OciLayout; base: Descriptor; baseDiff: Digest; fixtureTar: Buffer; fixtureDiff: Digest };

before(async () => {
  requireTool('buildah');
  // lowercase path: buildah derives an image name from oci: paths (the run's TMPDIR may hold capitals: use relative refs)
  work = join(tmpdir(), `tsimage-bdiff-${process.pid}-${Date.now().toString(36)}`);
  mkdirSync(work);
  const conf = join(work, 'storage.conf');
  writeFileSync(conf, `[storage]\ndriver = "overlay"\ngraphroot = "${work}/graph"\nrunroot = "${work}/run"\n`);
  env = { ...process.env, CONTAINERS_STORAGE_CONF: conf };
  // the lower image: busybox base + the fixture layer, in an OCI layout written by our store
  const b = await baseLayer();
  const layout = await OciLayout.open(join(work, 'img'), { create: true });
  await layout.ingest({ digest: b.desc.digest, size: b.desc.size, mediaType: b.desc.mediaType }, createReadStream(b.layout.blobPath(b.desc.digest)));
  const fx = join(work, 'fixture');
  fixtureTree(fx);
  const fixtureTar = await toBuffer(packDirectory(fx, { mtimeClamp: 1_700_000_000 }));
  const fixtureDiff = (await diffIDOf(Readable.from([fixtureTar]))).diffID;
  let fixtureDesc: Descriptor | undefined;
  await writeLayer(Readable.from([fixtureTar]), 'gzip', async (body) => {
    fixtureDesc = await layout.ingest({ mediaType: MediaTypes.ociLayerGzip }, body);
  });
  const config = await layout.putBytes(
    MediaTypes.ociConfig,
    toJsonBytes({ architecture: 'amd64', os: 'linux', config: { Env: ['PATH=/bin'] }, rootfs: { type: 'layers', diff_ids: [b.diffID, fixtureDiff] }, history: [{}, {}] }),
  );
  const m = await layout.putBytes(
    MediaTypes.ociManifest,
    toJsonBytes({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { mediaType: config.mediaType, digest: config.digest, size: config.size }, layers: [b.desc, fixtureDesc] }),
  );
  await layout.tag('latest', m);
  lower = { layout, base: b.desc, baseDiff: b.diffID, fixtureTar, fixtureDiff };
});

after(() => {
  if (!work) return;
  try {
    sh('buildah', ['rm', '--all'], { env });
    sh('buildah', ['rmi', '--all', '--force'], { env });
  } finally {
    const left = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4] ?? '')
      .filter((p) => p.startsWith(work));
    for (const p of left.reverse()) sh('umount', ['-l', p]);
    rmSync(work, { recursive: true, force: true });
    assert.deepEqual(left, [], 'buildah left mounts behind');
  }
});

describe('overlay diff vs buildah commit', () => {
  it('the same change gives the same layer entries (files, modes, owners, whiteouts, opaque dirs, hardlinks, xattrs)', async (t) => {
    // ours
    const snap: Snapshotter = await openSnapshotter({ root: join(work, 'snap'), driver: 'overlay' });
    t.after(() => snap.close());
    await snap.addLayer(lower.baseDiff, createReadStream(lower.layout.blobPath(lower.base.digest)));
    await snap.addLayer(lower.fixtureDiff, Readable.from([lower.fixtureTar]));
    const { rootfs } = await snap.prepare('step', [lower.baseDiff, lower.fixtureDiff]);
    assert.ok(isMounted(rootfs));
    const res = await new BuiltinRunner().run(['/bin/sh', '-ec', SCRIPT], { rootfs, network: 'none', stdio: { stdout: 'ignore' } });
    assert.equal(res.exitCode, 0);
    hostEdits(rootfs);
    const ours = await listTar(Readable.from([await toBuffer(snap.diff('step'))]));
    await snap.remove('step');

    // buildah
    const ctr = sh('buildah', ['from', '-q', '--pull-never', 'oci:img:latest'], { env, cwd: work }).trim();
    sh('buildah', ['run', '--isolation', 'chroot', ctr, '--', '/bin/sh', '-ec', SCRIPT], { env });
    const mnt = sh('buildah', ['mount', ctr], { env }).trim();
    try {
      hostEdits(mnt);
    } finally {
      sh('buildah', ['umount', ctr], { env });
    }
    sh('buildah', ['commit', '--quiet', '--format', 'oci', '--disable-compression', ctr, 'oci:out:latest'], { env, cwd: work });
    sh('buildah', ['rm', ctr], { env });
    const out = await OciLayout.open(join(work, 'out'));
    const man = parseManifest(await out.readBytes((await out.resolve('latest')).digest)).doc as ImageManifest;
    assert.equal(man.layers.length, 3);
    const top = man.layers[2]!;
    const theirs = await listTar(createReadStream(out.blobPath(top.digest)));

    const a = describeLayer(ours);
    const b = describeLayer(theirs);
    // buildah 1.28's chroot isolation leaves the empty bind-mount targets it made for the run in
    // the container (newer buildah removes them): not part of the change, and nothing we write
    const artefacts = ['etc/hostname', 'etc/hosts', 'etc/resolv.conf', 'run'];
    for (const n of artefacts) {
      if (b.get(n)?.startsWith(n === 'run' ? 'directory' : 'file size=0')) b.delete(n);
    }
    for (const n of artefacts) assert.ok(!a.has(n), `our diff holds the runtime's ${n}`);
    // the oracle really saw the change
    for (const n of ['data/.wh.del.txt', 'data/.wh.dir', 'data/ren/.wh.old.txt', 'data/opq/.wh..wh..opq', 'data/sticky', 'data/fifo']) assert.ok(b.has(n), `buildah's layer has ${n}`);
    const diffs: string[] = [];
    for (const n of new Set([...a.keys(), ...b.keys()])) {
      if (a.get(n) !== b.get(n)) diffs.push(`${n}\n    ours:    ${a.get(n) ?? '(absent)'}\n    buildah: ${b.get(n) ?? '(absent)'}`);
    }
    assert.deepEqual(diffs, [], `layer entries differ:\n  ${diffs.join('\n  ')}`);
    assert.deepEqual(hardlinkSets(ours), hardlinkSets(theirs), 'hardlink sets');
  });
});
