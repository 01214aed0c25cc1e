/**
 * registries.conf validation and lookup as containers/image (sysregistriesv2) does them, with skopeo 1.9.3 reading
 * the same file as the oracle: configurations skopeo refuses are refused by tscopy with the same message (exit 1),
 * and the valid corner cases (wildcard prefix with a location, the first of two entries with one prefix) resolve
 * to the same registry.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { requireTool, sh, startDistribution, tempDir } from '../helpers.js';
import { baseLayout, type BaseLayout } from '../fixtures/base.js';
import { tscopy, tscopyFail } from './engine-util.js';
import { digestOf } from '../../src/oci/digest.js';

let base: BaseLayout;
before(async () => {
  requireTool('skopeo');
  base = await baseLayout();
});

/** skopeo's message for a refused registries.conf (the text after `loading registries configuration "FILE": `). */
function skopeoConfError(conf: string, image: string): string {
  const r = spawnSync('skopeo', ['--registries-conf', conf, 'inspect', '--raw', `docker://${image}`], { encoding: 'utf8' });
  assert.equal(r.status, 1, `skopeo accepted ${conf}: ${r.stdout}${r.stderr}`);
  const m = /loading registries configuration "[^"]*": (.*?)"?\s*$/.exec(r.stderr.replace(/\\"/g, '"'));
  assert.ok(m, `skopeo did not refuse the configuration: ${r.stderr}`);
  return m[1]!;
}

describe('registries.conf validation (containers/image rules)', () => {
  it('refuses what skopeo refuses, with its message, exit 1, for every command', async (t) => {
    const d = tempDir(t, 'regconf');
    const conf = join(d, 'registries.conf');
    const env = { CONTAINERS_REGISTRIES_CONF: conf };
    // a loopback port where nothing listens: no lookup leaves the machine if a tool ignored the file
    const image = '127.0.0.1:9/team/app:v1';
    const cases: [string, string][] = [
      ['non-wildcard prefix without location', '[[registry]]\nprefix = "127.0.0.1:9/team"\ninsecure = true\n'],
      ['neither prefix nor location', '[[registry]]\ninsecure = true\n'],
      ['empty location', '[[registry]]\nprefix = "127.0.0.1:9"\nlocation = ""\n'],
      ['URI scheme in location', '[[registry]]\nlocation = "http://127.0.0.1:9"\n'],
      ['URI scheme in prefix', '[[registry]]\nprefix = "https://127.0.0.1:9"\nlocation = "127.0.0.1:9"\n'],
      ['wildcard prefix with a path', '[[registry]]\nprefix = "*.example.com/team"\nlocation = "127.0.0.1:9"\n'],
      ['mirror without location', '[[registry]]\nlocation = "127.0.0.1:9"\n[[registry.mirror]]\ninsecure = true\n'],
      ['pull-from-mirror on the registry', '[[registry]]\nlocation = "127.0.0.1:9"\npull-from-mirror = "all"\n'],
      ['pull-from-mirror with mirror-by-digest-only', '[[registry]]\nlocation = "127.0.0.1:9"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = "127.0.0.1:8"\npull-from-mirror = "all"\n'],
      ['bad pull-from-mirror', '[[registry]]\nlocation = "127.0.0.1:9"\n[[registry.mirror]]\nlocation = "127.0.0.1:8"\npull-from-mirror = "sometimes"\n'],
      ['conflicting insecure', '[[registry]]\nlocation = "127.0.0.1:9"\ninsecure = true\n[[registry]]\nprefix = "127.0.0.1:9/team"\nlocation = "127.0.0.1:9"\n'],
      ['conflicting blocked', '[[registry]]\nlocation = "127.0.0.1:9"\nblocked = true\n[[registry]]\nprefix = "127.0.0.1:9/team"\nlocation = "127.0.0.1:9"\n'],
      ['V1 and V2 mixed', '[registries.insecure]\nregistries = ["127.0.0.1:9"]\n[[registry]]\nlocation = "127.0.0.1:9"\n'],
      ['URI scheme in a V1 list', '[registries.block]\nregistries = ["https://127.0.0.1:9"]\n'],
      ['bad unqualified-search-registries', 'unqualified-search-registries = ["example.com/team"]\n'],
      ['bad short-name-mode', 'short-name-mode = "sometimes"\n'],
    ];
    for (const [what, text] of cases) {
      writeFileSync(conf, text);
      const want = skopeoConfError(conf, image);
      const r = tscopyFail(['inspect', '--raw', `docker://${image}`], env);
      assert.equal(r.status, 1, `${what}: tscopy exit ${r.status}: ${r.stderr}`);
      assert.ok(r.stderr.includes(`loading registries configuration ${JSON.stringify(conf)}: `), `${what}: ${r.stderr}`);
      assert.ok(r.stderr.includes(want), `${what}: skopeo says ${JSON.stringify(want)}, tscopy: ${r.stderr}`);
    }
    // the same refusal on the other commands that read it
    writeFileSync(conf, cases[0]![1]);
    for (const args of [
      ['copy', base.ociRef, `docker://${image}`],
      ['list-tags', 'docker://127.0.0.1:9/team/app'],
      ['delete', `docker://${image}`],
      ['sync', '--src', 'docker', '--dest', 'dir', '127.0.0.1:9/team/app:v1', d],
    ]) {
      const r = tscopyFail(args, env);
      assert.equal(r.status, 1, `${args[0]}: exit ${r.status}: ${r.stderr}`);
      assert.match(r.stderr, /invalid condition: location is unset and prefix is not in the format: \*\.example\.com/, args[0]);
    }
  });

  it('resolves like skopeo: wildcard prefix with a location, first entry of a prefix, wildcard without location', async (t) => {
    const d = tempDir(t, 'regconf');
    const reg = await startDistribution(t);
    sh('skopeo', ['copy', '-q', '--dest-tls-verify=false', base.ociRef, `docker://${reg.addr}/lib/app:v1`]);
    const conf = join(d, 'registries.conf');
    const env = { CONTAINERS_REGISTRIES_CONF: conf };
    const both = (image: string): void => {
      assert.equal(digestOf(sh('skopeo', ['--registries-conf', conf, 'inspect', '--raw', `docker://${image}`])), base.manifestDigest, `skopeo ${image}`);
      assert.equal(digestOf(tscopy(['inspect', '--raw', `docker://${image}`], env)), base.manifestDigest, `tscopy ${image}`);
    };
    // a wildcard prefix with a location: the name's host is replaced by the location ("*.0.0.1" matches 127.0.0.1,
    // where nothing listens on 443)
    writeFileSync(conf, `[[registry]]\nprefix = "*.0.0.1"\nlocation = "${reg.addr}"\ninsecure = true\n`);
    both('127.0.0.1/lib/app:v1');
    // two entries with one prefix in a file: the first counts (the second points where nothing listens)
    writeFileSync(conf, `[[registry]]\nprefix = "127.0.0.1:9/lib"\nlocation = "${reg.addr}/lib"\ninsecure = true\n[[registry]]\nprefix = "127.0.0.1:9/lib"\nlocation = "127.0.0.1:8/lib"\ninsecure = true\n`);
    both('127.0.0.1:9/lib/app:v1');
    // location-less wildcard entries (only flags) apply to the name as it is; the longer one wins
    writeFileSync(conf, `[[registry]]\nprefix = "*.0.1"\nblocked = true\n[[registry]]\nprefix = "*.0.0.1"\ninsecure = true\n`);
    both(`${reg.addr}/lib/app:v1`);
  });

  it('blocked = true: every command fails (exit 1, not usage) before any request, as skopeo', async (t) => {
    const d = tempDir(t, 'regconf');
    const reg = await startDistribution(t);
    const A = reg.addr;
    for (const r of ['blk', 'ok']) sh('skopeo', ['copy', '-q', '--dest-tls-verify=false', base.ociRef, `docker://${A}/${r}/app:v1`]);
    const dirSrc = join(d, 'dirsrc');
    mkdirSync(dirSrc);
    sh('skopeo', ['copy', '-q', base.ociRef, `dir:${join(dirSrc, 'img')}`]);
    const conf = join(d, 'registries.conf');
    // the registry serves the image: only the blocked entry (by prefix) stops the tools
    writeFileSync(conf, `[[registry]]\nlocation = "${A}"\ninsecure = true\n[[registry]]\nprefix = "${A}/blk"\nlocation = "${A}/blk"\nblocked = true\n`);
    const env = { CONTAINERS_REGISTRIES_CONF: conf };
    const out = (w: string) => join(d, `${w}-${Math.random().toString(36).slice(2)}`);
    const commands = (w: string): string[][] => [
      ['inspect', `docker://${A}/blk/app:v1`],
      ['copy', `docker://${A}/blk/app:v1`, `dir:${out(w)}`],
      ['copy', base.ociRef, `docker://${A}/blk/other:v1`],
      ['list-tags', `docker://${A}/blk/app`],
      ['delete', `docker://${A}/blk/app:v1`],
      ['sync', '--src', 'docker', '--dest', 'dir', `${A}/blk/app:v1`, out(w)],
      ['sync', '--src', 'docker', '--dest', 'dir', `${A}/blk/app`, out(w)],
      ['sync', '--src', 'dir', '--dest', 'docker', dirSrc, `${A}/blk`],
    ];
    const skopeo = commands('sk');
    commands('ts').forEach((args, i) => {
      const sk = spawnSync('skopeo', ['--registries-conf', conf, ...skopeo[i]!], { encoding: 'utf8' });
      assert.equal(sk.status, 1, `skopeo ${skopeo[i]!.join(' ')}: ${sk.stderr}`);
      assert.match(sk.stderr, new RegExp(`registry ${A}/blk is blocked in `));
      const ts = tscopyFail(args, env);
      assert.equal(ts.status, 1, `tscopy ${args.join(' ')}: exit ${ts.status}: ${ts.stderr}`);
      assert.match(ts.stderr, new RegExp(`registry ${A}/blk is blocked in registries\\.conf \\(${conf.replace(/[.]/g, '\\.')}\\)`), args.join(' '));
    });
    // nothing was deleted or pushed; the registry's other repositories are usable
    assert.equal(digestOf(tscopy(['inspect', '--raw', '--tls-verify=false', `docker://${A}/ok/app:v1`])), base.manifestDigest);
    assert.deepEqual(JSON.parse(sh('skopeo', ['list-tags', '--tls-verify=false', `docker://${A}/blk/app`])).Tags, ['v1']);
    assert.notEqual(spawnSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${A}/blk/other:v1`]).status, 0);
  });

  it('insecure per prefix (the entry matching the name, not the host): copy to/from, inspect, sync, as skopeo', async (t) => {
    const d = tempDir(t, 'regconf');
    const reg = await startDistribution(t);
    const A = reg.addr;
    const conf = join(d, 'registries.conf');
    const env = { CONTAINERS_REGISTRIES_CONF: conf };
    // no TLS flag anywhere below: plain HTTP only where registries.conf allows it
    const both = (args: (tool: 'sk' | 'ts') => string[], ok: boolean, what: string): void => {
      const sk = spawnSync('skopeo', ['--registries-conf', conf, ...args('sk')], { encoding: 'utf8' });
      const ts = tscopyFail(args('ts'), env);
      assert.equal(sk.status, ok ? 0 : 1, `skopeo ${what}: ${sk.stderr}`);
      assert.equal(ts.status, ok ? 0 : 1, `tscopy ${what}: ${ts.stderr}`);
      if (!ok) assert.match(ts.stderr, /https:\/\/127\.0\.0\.1:\d+\/v2\//, what);
    };
    // an insecure namespace on a registry that is otherwise TLS-only
    writeFileSync(conf, `[[registry]]\nprefix = "${A}/team"\nlocation = "${A}/team"\ninsecure = true\n`);
    both((w) => ['copy', '-q', base.ociRef, `docker://${A}/team/${w}:v1`], true, 'push under the prefix');
    both((w) => ['copy', '-q', base.ociRef, `docker://${A}/other/${w}:v1`], false, 'push outside the prefix');
    both((w) => ['inspect', '--raw', `docker://${A}/team/${w}:v1`], true, 'inspect under the prefix');
    both((w) => ['copy', '-q', `docker://${A}/team/${w}:v1`, `dir:${join(d, `pull-${w}`)}`], true, 'pull under the prefix');
    both((w) => ['copy', '-q', `docker://${A}/team/${w}:v1`, `docker://${A}/team/${w}-copy:v1`], true, 'registry to registry under the prefix');
    both((w) => ['sync', '--src', 'docker', '--dest', 'dir', `${A}/team/${w}`, join(d, `sync-${w}`)], true, 'sync a repository under the prefix');
    assert.equal(digestOf(readFileSync(join(d, 'pull-ts', 'manifest.json'))), base.manifestDigest);
    assert.deepEqual(readFileSync(join(d, 'sync-ts', 'ts:v1', 'manifest.json')), readFileSync(join(d, 'sync-sk', 'sk:v1', 'manifest.json')));
    // and the reverse: an insecure host with a namespace that does not say insecure (the longest prefix decides)
    writeFileSync(conf, `[[registry]]\nlocation = "${A}"\ninsecure = true\n[[registry]]\nprefix = "${A}/sec"\nlocation = "${A}/sec"\n`);
    both((w) => ['copy', '-q', base.ociRef, `docker://${A}/sec/${w}:v1`], false, 'push to a secure namespace of an insecure host');
    both((w) => ['inspect', '--raw', `docker://${A}/sec/${w}:v1`], false, 'inspect in a secure namespace of an insecure host');
    both((w) => ['copy', '-q', base.ociRef, `docker://${A}/open/${w}:v1`], true, 'push elsewhere on the insecure host');
  });
});
