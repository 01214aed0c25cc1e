/**
 * gzip compression of a 200 MB layer: our writeLayer (tar in, gzip level 6 out to a file, diffID
 * and blob digest computed in the same pass; pigz-style block gzip on worker threads) vs `gzip -6`
 * and `pigz -6` (2 threads here) writing to a file; and our single zlib stream vs `gzip -6`. The layer is the first 200 MB of a tar of /usr (real binaries, libraries, text),
 * so it compresses like a real image layer. Input in the page cache for all sides.
 *   node dist/bench/oci-gzip.bench.js      (RUNS=3 WARMUP=1; SIZE_MB=200)
 */
import { createReadStream, createWriteStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { pipeline } from 'node:stream/promises';
import { benchPair, summary, type PairResult } from './harness.js';
import { writeLayer } from '../src/oci/layer.js';
import { defaultGzipThreads } from '../src/oci/pgzip.js';

const SIZE_MB = Number(process.env.SIZE_MB ?? 200);
const dir = mkdtempSync(join(tmpdir(), 'tsimage-bench-gzip-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const layer = join(dir, 'layer.tar');
execFileSync('sh', ['-c', `tar -C / -cf - usr 2>/dev/null | head -c ${SIZE_MB * 1024 * 1024} > '${layer}'`]);
const out = join(dir, 'out.gz');
const runs = Number(process.env.RUNS ?? 3);
let ratio = 0;

const oursWith = (threads: number | undefined, label: string) => ({
  label,
  fn: async () => {
    const r = await writeLayer(createReadStream(layer, { highWaterMark: 1024 * 1024 }), 'gzip', (body) => pipeline(body, createWriteStream(out)), { threads });
    ratio = r.uncompressedSize / r.size;
  },
});
const ours = oursWith(undefined, `tsimage writeLayer (${defaultGzipThreads()} thr)`);

const results: PairResult[] = [];
// single-threaded, one zlib stream (what writeLayer did before block gzip) vs gzip -6
results.push(
  await benchPair({
    name: `gzip -6 of a ${statSync(layer).size >> 20} MiB layer, one thread (vs gzip -6)`,
    runs,
    ours: oursWith(0, 'tsimage zlib stream'),
    peer: { label: 'gzip -6', cmd: ['sh', '-c', `gzip -6 -c '${layer}' > '${out}'`] },
  }),
);
for (const [label, tool] of [
  ['gzip -6', 'gzip'],
  ['pigz -6', 'pigz'],
] as const) {
  results.push(
    await benchPair({
      name: `gzip -6 of a ${statSync(layer).size >> 20} MiB layer (vs ${label})`,
      runs,
      ours,
      peer: { label, cmd: ['sh', '-c', `${tool} -6 -c '${layer}' > '${out}'`] },
    }),
  );
}
console.log(`compression ratio (ours): ${ratio.toFixed(2)}x`);
summary(results);
