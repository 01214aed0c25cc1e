/**
 * tscopy's V8 code cache (bin/bundle-loader.js): the first run of a command stores what V8 compiled, later runs
 * deserialize it (TSIMAGE_DEBUG=code-cache says which, on stderr only). Real processes on the real bundle.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDistribution, tempDir } from '../helpers.js';
import { baseLayout, pushBase, type BaseLayout } from '../fixtures/base.js';
import { BIN, NOTLS } from './engine-util.js';

let base: BaseLayout;
before(async () => {
  base = await baseLayout();
});

type Run = { status: number | null; stdout: string; stderr: string; cache: string | undefined; event: string | undefined };

/** Run tscopy with a clean cache environment plus `env` (TSIMAGE_DEBUG=code-cache unless debug is false). */
function tscopy(args: string[], env: NodeJS.ProcessEnv, debug = true, nodeFlags: string[] = []): Run {
  const e: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const k of ['TSIMAGE_CODE_CACHE', 'XDG_CACHE_HOME', 'HOME', 'TSIMAGE_DEBUG'] as const) if (!(k in env)) delete e[k];
  if (debug) e.TSIMAGE_DEBUG = 'code-cache';
  const r = spawnSync(process.execPath, [...nodeFlags, BIN, ...args], { encoding: 'utf8', env: e });
  const m = /^code-cache: (accepted|missing|rejected|off)(?: (\S+))?$/m.exec(r.stderr);
  if (debug) assert.ok(m, `no code-cache line on stderr (is dist/bundle fresh? npm run build):\n${r.stderr}`);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, event: m?.[1], cache: m?.[2] };
}

const inspect = () => ['inspect', '--raw', base.ociRef];

describe('tscopy code cache', () => {
  it('a second run of a command reuses the cache the first wrote, also after a docker:// copy (V8 flags set at run time)', async (t) => {
    const d = tempDir(t, 'codecache');
    const reg = await startDistribution(t);
    await pushBase(reg.addr, 'cc/base', 'v1');
    const env = { TSIMAGE_CODE_CACHE: d, TSIMAGE_BLOB_INFO_CACHE: 'none' };
    const ref = `docker://${reg.addr}/cc/base:v1`;
    const noop = ['copy', '-q', ...NOTLS, ref, ref];
    const first = tscopy(noop, env);
    assert.equal(first.status, 0, first.stderr);
    assert.equal(first.event, 'missing');
    assert.match(first.stderr, /^code-cache: wrote \S+ \(\d+ bytes\)$/m);
    assert.ok(first.cache!.startsWith(`${d}/`) && existsSync(first.cache!), first.cache);
    assert.ok(statSync(first.cache!).size > 100_000, 'the cache holds the functions the run compiled');
    const second = tscopy(noop, env);
    assert.equal(second.status, 0, second.stderr);
    assert.equal(second.event, 'accepted', second.stderr);
    assert.equal(second.cache, first.cache);
    assert.doesNotMatch(second.stderr, /wrote/, 'an accepted cache is not written again');
    // another command has its own file; the copy's stays
    const ins = tscopy(['inspect', '--raw', '--tls-verify=false', ref], env);
    assert.equal(ins.status, 0, ins.stderr);
    assert.equal(ins.event, 'missing');
    assert.notEqual(ins.cache, first.cache);
    assert.equal(tscopy(['inspect', '--raw', '--tls-verify=false', ref], env).event, 'accepted');
    assert.deepEqual(readdirSync(d).sort(), [first.cache!, ins.cache!].map((p) => p.slice(d.length + 1)).sort());
    // without TSIMAGE_DEBUG nothing is said
    const quiet = tscopy(noop, env, false);
    assert.equal(quiet.status, 0, quiet.stderr);
    assert.equal(quiet.stderr, '');
  });

  it('the run that writes the cache keeps what it compiled at start-up, however many collections it went through', (t) => {
    // A long first run (a big copy) collects often and V8 flushes the bytecode of functions it has not called
    // lately: the start-up functions. --gc-global --stress-flush-code gives a short run that fate (every collection
    // is a full one, flushing ages fast): without --no-flush-bytecode in the writing run its cache came out ~20%
    // smaller (284 against 352 KB for this inspect), and every later run compiled the missing functions again.
    const plain = tempDir(t, 'cc-plain');
    const stressed = tempDir(t, 'cc-stressed');
    const stress = ['--gc-global', '--stress-flush-code'];
    const a = tscopy(inspect(), { TSIMAGE_CODE_CACHE: plain });
    const b = tscopy(inspect(), { TSIMAGE_CODE_CACHE: stressed }, true, stress);
    assert.equal(a.status, 0, a.stderr);
    assert.equal(b.status, 0, b.stderr);
    assert.equal(b.stdout, a.stdout);
    const [sa, sb] = [statSync(a.cache!).size, statSync(b.cache!).size];
    assert.ok(sb >= sa * 0.98, `cache written under collections: ${sb} bytes, without: ${sa}`);
    // made under the same flags the next run has (the run-time flag is reset first): accepted
    assert.equal(tscopy(inspect(), { TSIMAGE_CODE_CACHE: stressed }, true, stress).event, 'accepted');
  });

  it('a corrupt, truncated or empty cache is rejected and replaced; the command still works', (t) => {
    const d = tempDir(t, 'codecache');
    const env = { TSIMAGE_CODE_CACHE: d };
    const good = tscopy(inspect(), env);
    assert.equal(good.status, 0, good.stderr);
    const file = good.cache!;
    const bytes = readFileSync(file);
    const damage: [string, () => void][] = [
      ['bytes changed in the middle', () => {
        const b = Buffer.from(bytes);
        b.write('\u00ff\u0013\u0037\u0042garbage', Math.floor(b.length / 2), 'latin1');
        writeFileSync(file, b);
      }],
      ['bytes changed near the start', () => {
        const b = Buffer.from(bytes);
        b.write('\u00ff\u00fe\u0000\u0013', 1000, 'latin1');
        writeFileSync(file, b);
      }],
      ['truncated', () => {
        writeFileSync(file, bytes);
        truncateSync(file, Math.floor(bytes.length / 3));
      }],
      ['empty', () => writeFileSync(file, '')],
      ['text', () => writeFileSync(file, 'not a code cache\n')],
    ];
    for (const [what, harm] of damage) {
      harm();
      const harmed = readFileSync(file);
      const r = tscopy(inspect(), env);
      assert.equal(r.status, 0, `${what}: ${r.stderr}`);
      assert.equal(r.event, 'rejected', `${what}: ${r.stderr}`);
      assert.equal(JSON.parse(r.stdout).schemaVersion, 2, what);
      assert.equal(r.stdout, good.stdout, what);
      assert.notDeepEqual(readFileSync(file), harmed, `${what}: the cache was not replaced`);
      assert.equal(tscopy(inspect(), env).event, 'accepted', `${what}: the replaced cache`);
    }
  });

  it('none (or empty) writes nothing; the default is $XDG_CACHE_HOME/tsimage/code-cache, else ~/.cache/tsimage/code-cache', (t) => {
    const d = tempDir(t, 'codecache');
    const xdg = join(d, 'xdg');
    const home = join(d, 'home');
    mkdirSync(xdg);
    mkdirSync(home);
    for (const off of ['none', '']) {
      const r = tscopy(inspect(), { TSIMAGE_CODE_CACHE: off, XDG_CACHE_HOME: xdg, HOME: home });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.event, 'off');
      assert.deepEqual([readdirSync(xdg), readdirSync(home)], [[], []], `TSIMAGE_CODE_CACHE=${JSON.stringify(off)} wrote something`);
    }
    const x = tscopy(inspect(), { XDG_CACHE_HOME: xdg, HOME: home });
    assert.equal(x.status, 0, x.stderr);
    assert.equal(x.event, 'missing');
    assert.ok(x.cache!.startsWith(join(xdg, 'tsimage', 'code-cache') + '/'), x.cache);
    assert.ok(existsSync(x.cache!));
    const h = tscopy(inspect(), { HOME: home });
    assert.equal(h.status, 0, h.stderr);
    assert.ok(h.cache!.startsWith(join(home, '.cache', 'tsimage', 'code-cache') + '/'), h.cache);
    assert.ok(existsSync(h.cache!));
  });

  it('a failed run writes no cache; a cache directory that cannot be written changes nothing', (t) => {
    const d = tempDir(t, 'codecache');
    const dir = join(d, 'cache');
    const bad = tscopy(['inspect', '--raw', `oci:${join(d, 'missing')}:latest`], { TSIMAGE_CODE_CACHE: dir });
    assert.notEqual(bad.status, 0, bad.stderr);
    assert.equal(bad.event, 'missing');
    assert.equal(existsSync(dir), false, 'a failed run wrote a cache');
    // a regular file where the directory should be
    writeFileSync(dir, 'x');
    const r = tscopy(inspect(), { TSIMAGE_CODE_CACHE: join(dir, 'sub') });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.event, 'missing');
    assert.equal(JSON.parse(r.stdout).schemaVersion, 2);
    assert.doesNotMatch(r.stderr, /wrote/);
  });

  it("writing removes this installation's caches of other bundles and Node versions and old temp files, not other installations'", (t) => {
    const d = tempDir(t, 'codecache');
    const env = { TSIMAGE_CODE_CACHE: d };
    const name = tscopy(inspect(), env).cache!.slice(d.length + 1);
    // tscopy-<installation>-<command>-<bundle id>-<node version>-<arch>.v8
    const m = /^(tscopy-[0-9a-f]{8}-)inspect-([0-9a-f]+)-(v[\d.]+)-(\w+)\.v8$/.exec(name);
    assert.ok(m, name);
    const [, prefix, id, version, arch] = m;
    const otherBundle = `${prefix}copy-${'0'.repeat(id!.length)}-${version}-${arch}.v8`;
    const otherNode = `${prefix}inspect-${id}-v0.0.1-${arch}.v8`;
    const otherInstall = `tscopy-ffffffff-inspect-${id}-${version}-${arch}.v8`;
    const sameKeyOtherCommand = `${prefix}sync-${id}-${version}-${arch}.v8`;
    const oldTmp = `.${prefix}copy-${id}-${version}-${arch}.v8.1.tmp`;
    const newTmp = `.${prefix}copy-${id}-${version}-${arch}.v8.2.tmp`;
    for (const f of [otherBundle, otherNode, otherInstall, sameKeyOtherCommand, oldTmp, newTmp]) writeFileSync(join(d, f), 'x');
    const hourAgo = Date.now() / 1000 - 3600;
    utimesSync(join(d, oldTmp), hourAgo, hourAgo);
    // files are only removed when a cache is written
    assert.equal(tscopy(inspect(), env).event, 'accepted');
    assert.equal(readdirSync(d).length, 7);
    assert.equal(tscopy(['--version'], env).event, 'missing');
    assert.deepEqual(readdirSync(d).sort(), [name, otherInstall, sameKeyOtherCommand, newTmp, `${prefix}none-${id}-${version}-${arch}.v8`].sort());
  });
});
