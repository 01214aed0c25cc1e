/**
 * bin/tscopy.js starts from the bundle (scripts/bundle.mjs, run by bin/bundle-loader.js) when it is newer than the
 * last `tsc -b`, else from the modules: what the suite runs is what users run, and a stale bundle never runs.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, statSync, symlinkSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, tempDir } from '../helpers.js';

describe('tscopy launcher', () => {
  it('runs the bundle when it is fresh, the modules when a later tsc -b made it stale (or TSIMAGE_NO_BUNDLE=1)', (t) => {
    const bundle = join(ROOT, 'dist', 'bundle', 'tscopy', 'tscopy.cjs');
    const info = join(ROOT, 'dist', '.tsbuildinfo');
    // npm test/build/prepare bundle after tsc -b: the suite's tscopy runs are the bundle's
    assert.ok(statSync(bundle).mtimeMs >= statSync(info).mtimeMs, 'the bundle is older than dist/.tsbuildinfo: run `npm run build`');
    // a copy of the launcher and of dist whose bundle is made stale or broken, to see which one loads
    const d = tempDir(t, 'launcher');
    mkdirSync(join(d, 'bin'));
    for (const f of ['tscopy.js', 'deferred-ca.js', 'bundle-loader.js', 'package.json']) cpSync(join(ROOT, 'bin', f), join(d, 'bin', f));
    cpSync(join(ROOT, 'dist', 'bundle'), join(d, 'dist', 'bundle'), { recursive: true });
    cpSync(join(ROOT, 'dist', 'src'), join(d, 'dist', 'src'), { recursive: true });
    cpSync(info, join(d, 'dist', '.tsbuildinfo'));
    cpSync(join(ROOT, 'package.json'), join(d, 'package.json'));
    symlinkSync(join(ROOT, 'node_modules'), join(d, 'node_modules'));
    const run = (env: NodeJS.ProcessEnv = {}) =>
      spawnSync(process.execPath, [join(d, 'bin', 'tscopy.js'), '--version'], {
        encoding: 'utf8',
        env: { ...process.env, TSIMAGE_CODE_CACHE: join(d, 'cache'), TSIMAGE_DEBUG: 'code-cache', ...env },
      });
    const now = Date.now() / 1000;
    const times = (bundleTime: number, infoTime: number) => {
      utimesSync(join(d, 'dist', 'bundle', 'tscopy', 'tscopy.cjs'), bundleTime, bundleTime);
      utimesSync(join(d, 'dist', '.tsbuildinfo'), infoTime, infoTime);
    };
    times(now, now - 60);
    const first = run();
    assert.equal(first.status, 0, first.stderr);
    assert.match(first.stdout, /\d+\.\d+\.\d+/);
    assert.match(first.stderr, /^code-cache: missing /m, 'the bundle did not run');
    assert.match(run().stderr, /^code-cache: accepted /m);
    // break the copied bundle's entry: a fresh bundle is what runs, so --version now fails
    cpSync(join(ROOT, 'package.json'), join(d, 'dist', 'bundle', 'tscopy', 'tscopy.cjs'));
    times(now, now - 60);
    assert.notEqual(run().status, 0, 'the (broken) fresh bundle was not the one loaded');
    const modules = run({ TSIMAGE_NO_BUNDLE: '1' });
    assert.equal(modules.status, 0, modules.stderr);
    assert.doesNotMatch(modules.stderr, /code-cache/);
    // a later tsc -b: the modules run
    times(now, now + 60);
    const r = run();
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /\d+\.\d+\.\d+/);
    assert.doesNotMatch(r.stderr, /code-cache/);
  });
});
