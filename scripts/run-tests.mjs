#!/usr/bin/env node
// Runs every compiled test file with node's test runner, then checks that the suite left
// nothing behind: no new mounts, no tsimage temp dirs, no stray registry/tsimage processes.
// usage: node scripts/run-tests.mjs [filter...]   (filters match test file paths)
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { tmpdir } from 'node:os';

const root = new URL('..', import.meta.url).pathname;
const testDir = join(root, 'dist', 'test');

function findTests(dir) {
  if (!existsSync(dir)) return [];
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...findTests(p));
    else if (e.name.endsWith('.test.js')) out.push(p);
  }
  return out.sort();
}

// Every run gets its own TMPDIR and run id, so leftovers are judged for this run only
// (several checkouts may run their suites on one machine at the same time).
const runTmp = mkdtempSync(join(tmpdir(), 'tsimage-testrun-'));
const runId = runTmp.slice(runTmp.lastIndexOf('-') + 1);
const mounts = () =>
  readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' ')[4])
    .filter((m) => m.startsWith(runTmp) || m.startsWith('/var/lib/tsimage'));
// tscopy's blob-info cache and V8 code cache for this run (CLI tests share them, as skopeo's tests share their
// blob-info cache); not leftovers
const BLOB_INFO_CACHE = 'blob-info-cache-v1.jsonl';
const CODE_CACHE = 'code-cache';
const temps = () => readdirSync(runTmp).filter((f) => f !== BLOB_INFO_CACHE && f !== CODE_CACHE);
function procs() {
  const out = new Map();
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    try {
      const env = readFileSync(`/proc/${pid}/environ`, 'utf8');
      if (!env.includes(`TSIMAGE_TEST_RUN=${runId}`)) continue;
      out.set(pid, readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim());
    } catch {}
  }
  return out;
}

const filters = process.argv.slice(2);
const files = findTests(testDir).filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)));
if (files.length === 0) {
  console.error(`run-tests: no test files under ${relative(root, testDir)} (did tsc -b run?)`);
  process.exit(1);
}

// tscopy's CLI tests run its bundle (bin/tscopy.js): rebuild it when a later `tsc -b` (land.sh, a manual build) made
// it stale, as `npm test` does, else the suite would run the modules instead of what users run
const bundle = join(root, 'dist', 'bundle', 'tscopy', 'tscopy.cjs');
const mtime = (p) => (existsSync(p) ? statSync(p).mtimeMs : 0);
if (mtime(bundle) < mtime(join(root, 'dist', '.tsbuildinfo'))) {
  const b = spawnSync(process.execPath, [join(root, 'scripts', 'bundle.mjs')], { stdio: 'inherit', cwd: root });
  if (b.status !== 0) process.exit(b.status ?? 1);
}

const before = { mounts: new Set(mounts()), temps: new Set(temps()), procs: procs() };
const concurrency = process.env.TEST_CONCURRENCY ?? '2';
const args = ['--test', `--test-concurrency=${concurrency}`, '--test-timeout=600000', ...files];
const r = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root, env: { ...process.env, TSIMAGE_TEST: '1', TSIMAGE_TEST_RUN: runId, TMPDIR: runTmp, TSIMAGE_BLOB_INFO_CACHE: join(runTmp, BLOB_INFO_CACHE), TSIMAGE_CODE_CACHE: join(runTmp, CODE_CACHE) } });

const leftMounts = mounts().filter((m) => !before.mounts.has(m));
const leftTemps = temps().filter((n) => !before.temps.has(n));
const leftProcs = [...procs()].filter(([pid]) => !before.procs.has(pid));
let bad = false;
if (leftMounts.length) {
  bad = true;
  console.error(`run-tests: the suite left mounts behind:\n  ${leftMounts.join('\n  ')}`);
}
if (leftTemps.length) {
  bad = true;
  console.error(`run-tests: the suite left temp dirs behind in ${runTmp}:\n  ${leftTemps.join('\n  ')}`);
}
if (!leftMounts.length) rmSync(runTmp, { recursive: true, force: true });
if (leftProcs.length) {
  bad = true;
  console.error(`run-tests: the suite left processes running:\n  ${leftProcs.map(([p, c]) => `${p} ${c}`).join('\n  ')}`);
}
if (!bad) console.log('run-tests: no leftovers (mounts, temp dirs, processes)');
process.exit(r.status !== 0 ? (r.status ?? 1) : bad ? 1 : 0);
