import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, createWriteStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { gunzipSync } from 'node:zlib';
import { tempDir } from '../helpers.js';
import { writeLayer, diffIDOf } from '../../src/oci/layer.js';
import { packDirectory } from '../../src/oci/tar.js';
import { collect, prng, sha256 } from './tarutil.js';

function tree(t: { after(fn: () => void): void }): string {
  const d = tempDir(t, 'layer');
  mkdirSync(join(d, 'src/etc'), { recursive: true });
  writeFileSync(join(d, 'src/etc/data'), prng(500_000, 9));
  writeFileSync(join(d, 'src/hello'), 'hello\n');
  return d;
}

describe('writeLayer', () => {
  for (const c of ['gzip', 'zstd', 'none'] as const) {
    it(`${c}: one pass gives the blob digest/size and the diffID`, async (t) => {
      const d = tree(t);
      const blob = join(d, 'blob');
      const r = await writeLayer(packDirectory(join(d, 'src')), c, (body) => pipeline(body, createWriteStream(blob)));
      const bytes = readFileSync(blob);
      assert.equal(r.digest, `sha256:${sha256(bytes)}`);
      assert.equal(r.size, bytes.length);
      const tar = await collect(packDirectory(join(d, 'src')));
      assert.equal(r.diffID, `sha256:${sha256(tar)}`);
      assert.equal(r.uncompressedSize, tar.length);
      if (c === 'gzip') assert.ok(gunzipSync(bytes).equals(tar));
      if (c === 'none') assert.equal(r.digest, r.diffID);
      const again = await diffIDOf(createReadStream(blob));
      assert.equal(again.diffID, r.diffID);
      assert.equal(again.size, tar.length);
    });
  }

  it('the same tree gives the same digests twice', async (t) => {
    const d = tree(t);
    const sink = async (b: Readable) => void (await collect(b));
    const a = await writeLayer(packDirectory(join(d, 'src')), 'gzip', sink);
    const b = await writeLayer(packDirectory(join(d, 'src')), 'gzip', sink);
    assert.deepEqual(a, b);
  });

  it('a failing sink fails writeLayer with its error', async (t) => {
    const d = tree(t);
    await assert.rejects(
      writeLayer(packDirectory(join(d, 'src')), 'gzip', async (body) => {
        for await (const _ of body) throw new Error('disk full');
      }),
      /disk full/,
    );
  });

  it('a failing tar stream errors the sink and writeLayer', async () => {
    let sinkSaw: unknown;
    const bad = new Readable({
      read() {
        this.destroy(new Error('tar source broke'));
      },
    });
    await assert.rejects(
      writeLayer(bad, 'gzip', async (body) => {
        try {
          await collect(body);
        } catch (e) {
          sinkSaw = e;
          throw e;
        }
      }),
      /tar source broke|premature close/i,
    );
    assert.ok(sinkSaw, 'the sink saw an error, so it can discard its temp file');
  });

  it('a sink that does not read the whole stream is an error', async (t) => {
    const d = tree(t);
    await assert.rejects(writeLayer(packDirectory(join(d, 'src')), 'none', async () => {}), /sink returned before reading the whole layer/);
  });
});
