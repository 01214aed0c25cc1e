#!/usr/bin/env node
// Runs the compiled benches (dist/bench/*.bench.js) in sequence; filters match file names.
// usage: npm run bench [-- filter...]
import { spawnSync } from 'node:child_process';
import { readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const dir = join(root, 'dist', 'bench');
const filters = process.argv.slice(2);
const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.bench.js') && (filters.length === 0 || filters.some((x) => f.includes(x)))).sort() : [];
if (files.length === 0) {
  console.error('run-bench: no benches matched');
  process.exit(1);
}
let failed = 0;
for (const f of files) {
  console.log(`\n=== ${f}`);
  const r = spawnSync(process.execPath, [join(dir, f)], { stdio: 'inherit', cwd: root });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
