import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { gunzipSync, gzipSync } from 'node:zlib';
import { tempDir, sh, requireTool } from '../helpers.js';
import { compressStream, decompressStream, detectCompression, CompressionError } from '../../src/oci/compress.js';
import { BlockGzip, GZIP_BLOCK } from '../../src/oci/pgzip.js';
import { collect, prng, sha256 } from './tarutil.js';

const data = Buffer.concat([prng(300_000, 3), Buffer.alloc(300_000, 0x61), prng(100_000, 4)]);

async function through(input: Buffer, ...t: NodeJS.ReadWriteStream[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  // feed in odd-sized pieces to exercise buffering
  const pieces: Buffer[] = [];
  for (let i = 0; i < input.length; i += 7777) pieces.push(input.subarray(i, i + 7777));
  await (pipeline as (...a: unknown[]) => Promise<void>)(Readable.from(pieces), ...t, async function* (src: AsyncIterable<Buffer>) {
    for await (const c of src) chunks.push(c);
  });
  return Buffer.concat(chunks);
}

describe('compression', () => {
  it('detects gzip, zstd and plain data by magic', () => {
    assert.equal(detectCompression(gzipSync('x')), 'gzip');
    assert.equal(detectCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0])), 'zstd');
    assert.equal(detectCompression(Buffer.from('ustar')), 'none');
    assert.equal(detectCompression(Buffer.from([0x1f])), 'none');
  });

  for (const c of ['gzip', 'zstd'] as const) {
    it(`${c}: round trip, deterministic, decompress explicit and auto`, async () => {
      const z1 = await through(data, compressStream(c));
      const z2 = await through(data, compressStream(c));
      assert.ok(z1.equals(z2), 'same input and level give the same bytes');
      assert.ok(z1.length < data.length);
      assert.equal(detectCompression(z1), c);
      assert.equal(sha256(await through(z1, decompressStream(c))), sha256(data));
      assert.equal(sha256(await through(z1, decompressStream('auto'))), sha256(data));
      const fast = await through(data, compressStream(c, { level: 1 }));
      assert.equal(sha256(await through(fast, decompressStream('auto'))), sha256(data));
    });

    it(`${c}: a truncated stream fails with a clear error`, async () => {
      const z = await through(data, compressStream(c));
      await assert.rejects(through(z.subarray(0, Math.floor(z.length / 2)), decompressStream('auto')), (e: Error) => {
        assert.ok(e instanceof CompressionError, String(e));
        assert.match(e.message, new RegExp(`truncated ${c} stream`));
        return true;
      });
    });
  }

  it('auto passes plain data (and tiny inputs) through unchanged', async () => {
    assert.ok((await through(data, decompressStream('auto'))).equals(data));
    assert.deepEqual(await through(Buffer.from('ab'), decompressStream('auto')), Buffer.from('ab'));
    assert.deepEqual(await through(Buffer.alloc(0), decompressStream('auto')), Buffer.alloc(0));
  });

  it('corrupt gzip data fails', async () => {
    const z = Buffer.from(await through(data, compressStream('gzip')));
    z.fill(0x55, 100, 200);
    await assert.rejects(through(z, decompressStream('auto')), /corrupt gzip stream|truncated gzip/);
  });

  it('reads multi-member gzip (pigz/concatenated) and our gzip is read by gzip(1)', async (t) => {
    requireTool('gzip');
    const multi = Buffer.concat([gzipSync(data.subarray(0, 1000)), gzipSync(data.subarray(1000))]);
    assert.equal(sha256(await through(multi, decompressStream('gzip'))), sha256(data));
    const d = tempDir(t, 'gz');
    writeFileSync(join(d, 'x.gz'), await through(data, compressStream('gzip')));
    sh('gzip', ['-t', join(d, 'x.gz')]);
    assert.equal(sh('sh', ['-c', `gzip -dc ${join(d, 'x.gz')} | sha256sum`]).split(' ')[0], sha256(data));
  });

  it('rejects invalid levels', () => {
    assert.throws(() => compressStream('gzip', { level: 11 }), /invalid gzip level 11/);
    assert.throws(() => compressStream('zstd', { level: 99 }), /invalid zstd level 99/);
  });

  it('collects', async () => {
    assert.equal((await collect(Readable.from([Buffer.from('a')]))).toString(), 'a');
  });
});

describe('block gzip (pigz-style, parallel)', () => {
  // compressible but not trivial: text-like lines plus some random runs
  const text = (n: number, seed: number) => {
    const words = ['layer', 'digest', 'manifest', 'overlay', 'tar', 'sha256', 'busybox', 'registry', '\n', ' '];
    const r = prng(n, seed);
    const parts: string[] = [];
    let len = 0;
    for (let i = 0; len < n; i++) {
      const w = words[r[i % n]! % words.length]!;
      parts.push(w);
      len += w.length;
    }
    return Buffer.from(parts.join('')).subarray(0, n);
  };
  const B = GZIP_BLOCK;

  it('round trips every size around the block boundaries; the bytes do not depend on threads or chunking', async () => {
    for (const size of [0, 1, 1000, B - 1, B, B + 1, 3 * B + 12_345]) {
      const input = Buffer.concat([text(Math.ceil(size / 2), size + 1), prng(Math.floor(size / 2), size + 2)]);
      const one = await through(input, new BlockGzip({ threads: 1 }));
      const two = await through(input, new BlockGzip({ threads: 2 }));
      const three = await collect(Readable.from([input]).pipe(new BlockGzip({ threads: 3 })));
      assert.ok(one.equals(two) && one.equals(three), `size ${size}: output depends on threads/chunking`);
      assert.equal(detectCompression(one), 'gzip');
      assert.ok(gunzipSync(one).equals(input), `size ${size}: zlib round trip`);
      assert.ok((await through(one, decompressStream('auto'))).equals(input), `size ${size}: decompressStream`);
    }
  });

  it('works in an ESM entry point (--input-type=module is not inherited by the CommonJS worker)', () => {
    const script = `import { BlockGzip } from ${JSON.stringify(new URL('../../src/oci/pgzip.js', import.meta.url).pathname)};
      import { Readable } from 'node:stream';
      import { gunzipSync } from 'node:zlib';
      const input = Buffer.alloc(3 * 1024 * 1024 + 5, 'abc');
      const out = [];
      for await (const c of Readable.from([input]).pipe(new BlockGzip({ threads: 2 }))) out.push(c);
      console.log(gunzipSync(Buffer.concat(out)).equals(input) ? 'OK' : 'BAD');`;
    assert.equal(sh(process.execPath, ['--input-type=module', '-e', script]).trim(), 'OK');
  });

  it('is read by gzip(1) and pigz, compresses as well as one zlib stream, and is compressStream gzip default', async (t) => {
    requireTool('gzip');
    requireTool('pigz');
    const input = Buffer.concat([text(2 * B + 777, 9), prng(B / 2, 10), text(B, 11)]);
    const ours = await through(input, compressStream('gzip'));
    assert.ok(ours.equals(await through(input, new BlockGzip({ threads: 1 }))), 'compressStream gzip = block gzip');
    const classic = await through(input, compressStream('gzip', { threads: 0 }));
    assert.ok(classic.equals(gzipSync(input, { level: 6 })), 'threads: 0 = one zlib stream');
    assert.ok(ours.length <= classic.length * 1.005, `block gzip ${ours.length} vs zlib ${classic.length}`);
    const dir = tempDir(t, 'pgzip');
    const f = join(dir, 'x.gz');
    writeFileSync(f, ours);
    sh('gzip', ['-t', f]);
    assert.equal(sh('sh', ['-c', `gzip -dc '${f}' | sha256sum | cut -d' ' -f1`]).trim(), sha256(input));
    assert.equal(sh('sh', ['-c', `pigz -dc '${f}' | sha256sum | cut -d' ' -f1`]).trim(), sha256(input));
    // levels: header XFL as zlib writes it, and a higher level is not bigger
    const l1 = await through(input, new BlockGzip({ level: 1, threads: 2 }));
    const l9 = await through(input, new BlockGzip({ level: 9, threads: 2 }));
    assert.equal(l1[8], 4);
    assert.equal(l9[8], 2);
    assert.equal(ours[8], 0);
    assert.ok(l9.length <= ours.length && ours.length <= l1.length);
    assert.ok(gunzipSync(l1).equals(input) && gunzipSync(l9).equals(input));
  });
});
