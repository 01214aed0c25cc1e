import { startTs, startDist } from './dist/bench/registry.bench.js';
import { pushBlob } from './dist/test/registry/util.js';
import { rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
const ts = await startTs('/tmp/dbg-pull-root');
const dist = startDist(47000 + Math.floor(Math.random() * 1000));
const ds = [];
for (let i = 0; i < 5; i++) { const b = randomBytes(64 << 20); ds.push(await pushBlob(ts.url, 'a/b', b)); await pushBlob(dist.url, 'a/b', b); }
const time = (url) => { const t0 = performance.now(); execFileSync('sh', ['-c', ds.map((d) => `curl -s -o /dev/null ${url}/v2/a/b/blobs/${d} &`).join(' ') + ' wait']); return Math.round(performance.now() - t0); };
for (let i = 0; i < 4; i++) console.log('ts', time(ts.url), 'dist', time(dist.url));
ts.stop(); dist.stop(); rmSync('/tmp/dbg-pull-root', { recursive: true, force: true });
