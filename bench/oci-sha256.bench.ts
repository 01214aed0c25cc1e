/**
 * Streaming sha256 of a 1 GiB file: our verifying stream (src/oci/digest.ts verifying(), as every
 * blob ingest and pull uses it: digest + size checked at the end) vs `sha256sum`.
 * The file is in the page cache for both (warm-up run), so this measures hashing + stream overhead.
 *   node dist/bench/oci-sha256.bench.js      (RUNS=5 WARMUP=1; SIZE_MB=1024)
 */
import { createReadStream, createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { benchPair, summary } from './harness.js';
import { verifying, type Digest } from '../src/oci/digest.js';

const SIZE = Number(process.env.SIZE_MB ?? 1024) * 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'tsimage-bench-sha-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const file = join(dir, 'blob');

async function makeFile(): Promise<Digest> {
  const block = randomBytes(16 * 1024 * 1024);
  const h = createHash('sha256');
  const out = createWriteStream(file);
  for (let n = 0; n < SIZE; n += block.length) {
    const b = block.subarray(0, Math.min(block.length, SIZE - n));
    h.update(b);
    if (!out.write(b)) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  await new Promise<void>((r, j) => out.end((e?: Error | null) => (e ? j(e) : r())));
  return `sha256:${h.digest('hex')}` as Digest;
}

const digest = await makeFile();
const discard = () =>
  new Writable({
    highWaterMark: 1024 * 1024,
    write(_c, _e, cb) {
      cb();
    },
  });

const results = [];
results.push(
  await benchPair({
    name: `sha256 of a ${SIZE >> 20} MiB file (streamed, verified)`,
    runs: Number(process.env.RUNS ?? 5),
    ours: {
      label: 'tsimage verifying()',
      fn: async () => {
        const v = verifying({ digest, size: SIZE });
        await pipeline(createReadStream(file, { highWaterMark: 1024 * 1024 }), v, discard());
        if (v.result?.digest !== digest) throw new Error('digest mismatch');
      },
    },
    peer: { label: 'sha256sum', cmd: ['sha256sum', file] },
  }),
);
summary(results);
