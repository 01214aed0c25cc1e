/**
 * oci: layouts whose blobs live in a directory shared by several layouts (containers/image's OCISharedBlobDirPath:
 * skopeo copy --src-shared-blob-dir/--dest-shared-blob-dir, inspect --shared-blob-dir), round trips with skopeo
 * 1.9.3: the same files on disk (index.json and oci-layout in the layout, an empty blobs/, every blob and manifest
 * in DIR/sha256), each tool reading what the other wrote with the same digests.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { requireTool, sh, tempDir } from '../helpers.js';
import { baseLayout, type BaseLayout } from '../fixtures/base.js';
import { tscopy, tscopyFail } from './engine-util.js';

let base: BaseLayout;
before(async () => {
  requireTool('skopeo');
  base = await baseLayout();
});

/** Every path under dir (directories with a trailing /), sorted. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) {
        out.push(`${relative(dir, p)}/`);
        walk(p);
      } else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

const blobsOf = (layout: string) => readdirSync(join(layout, 'blobs', 'sha256')).sort();

describe('--shared-blob-dir (oci: layouts sharing one blob directory)', () => {
  it('tscopy writes and reads what skopeo writes and reads, file for file', (t) => {
    const d = tempDir(t, 'shared');
    const baseBlobs = blobsOf(base.dir);
    // tscopy writes: the layout holds index.json, oci-layout and an empty blobs/; the blobs are in the shared dir
    tscopy(['copy', '-q', '--dest-shared-blob-dir', join(d, 'ts-blobs'), base.ociRef, `oci:${join(d, 'ts-a')}:a`]);
    // skopeo writes the same thing
    sh('skopeo', ['copy', '-q', '--dest-shared-blob-dir', join(d, 'sk-blobs'), base.ociRef, `oci:${join(d, 'sk-a')}:a`]);
    assert.deepEqual(tree(join(d, 'ts-a')), tree(join(d, 'sk-a')));
    assert.deepEqual(tree(join(d, 'ts-a')), ['blobs/', 'index.json', 'oci-layout']);
    assert.deepEqual(tree(join(d, 'ts-blobs')), tree(join(d, 'sk-blobs')));
    assert.deepEqual(readdirSync(join(d, 'ts-blobs', 'sha256')).sort(), baseBlobs);
    assert.equal(readFileSync(join(d, 'ts-a', 'index.json'), 'utf8'), readFileSync(join(d, 'sk-a', 'index.json'), 'utf8'));

    // each reads the other's, with the same digests
    const theirs = JSON.parse(sh('skopeo', ['inspect', '--shared-blob-dir', join(d, 'ts-blobs'), `oci:${join(d, 'ts-a')}:a`]));
    assert.equal(theirs.Digest, base.manifestDigest);
    const ours = JSON.parse(tscopy(['inspect', '--shared-blob-dir', join(d, 'sk-blobs'), `oci:${join(d, 'sk-a')}:a`]));
    delete ours.LayersData; // newer than skopeo 1.9 (engine.test.ts checks it)
    delete ours.Variant;
    assert.deepEqual(ours, JSON.parse(sh('skopeo', ['inspect', '--shared-blob-dir', join(d, 'sk-blobs'), `oci:${join(d, 'sk-a')}:a`])));
    sh('skopeo', ['copy', '-q', '--src-shared-blob-dir', join(d, 'ts-blobs'), `oci:${join(d, 'ts-a')}:a`, `oci:${join(d, 'sk-out')}:x`]);
    tscopy(['copy', '-q', '--src-shared-blob-dir', join(d, 'sk-blobs'), `oci:${join(d, 'sk-a')}:a`, `oci:${join(d, 'ts-out')}:x`]);
    for (const out of ['sk-out', 'ts-out']) {
      assert.deepEqual(blobsOf(join(d, out)), baseBlobs, out);
      assert.equal(JSON.parse(readFileSync(join(d, out, 'index.json'), 'utf8')).manifests[0].digest, base.manifestDigest, out);
    }

    // a second layout sharing the directory: nothing is written twice, both layouts stay readable
    const again = tscopy(['copy', '--dest-shared-blob-dir', join(d, 'ts-blobs'), base.ociRef, `oci:${join(d, 'ts-b')}:b`]);
    assert.match(again, /2 blobs \(0 copied, 2 skipped, 0 mounted\)/);
    assert.deepEqual(tree(join(d, 'ts-b')), ['blobs/', 'index.json', 'oci-layout']);
    for (const [l, ref] of [['ts-a', 'a'], ['ts-b', 'b']]) {
      assert.equal(JSON.parse(sh('skopeo', ['inspect', '--shared-blob-dir', join(d, 'ts-blobs'), `oci:${join(d, l!)}:${ref}`])).Digest, base.manifestDigest);
    }
    // a shared layout read without the flag: the missing blob is named
    const miss = tscopyFail(['inspect', `oci:${join(d, 'ts-a')}:a`]);
    assert.equal(miss.status, 1);
    assert.match(miss.stderr, new RegExp(`${base.manifestDigest}.*not found`));
  });
});
