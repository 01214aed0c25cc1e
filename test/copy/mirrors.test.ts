/**
 * registries.conf [[registry]] prefix -> location rewriting and [[registry.mirror]] pull sources, as
 * containers/image does them, against two real tsregistry processes (a primary location and a mirror), with
 * skopeo reading the same registries.conf as the oracle.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { requireTool, sh, tempDir } from '../helpers.js';
import { baseLayout, type BaseLayout } from '../fixtures/base.js';
import { spawnRegistry } from '../registry/util.js';
import { tscopy, tscopyFail } from './engine-util.js';
import { digestOf } from '../../src/oci/digest.js';

let base: BaseLayout;
before(async () => {
  requireTool('skopeo');
  base = await baseLayout();
});

describe('registries.conf mirrors and rewriting', () => {
  it('pulls try the mirrors then the location; pull-from-mirror digest-only; pushes go to the name as written', async (t) => {
    const d = tempDir(t, 'mirrors');
    const primary = await spawnRegistry(t, join(d, 'p'));
    const mirror = await spawnRegistry(t, join(d, 'm'));
    // the image is only on the mirror (under its own path), and a second one only at the location
    tscopy(['copy', '-q', '--dest-tls-verify=false', base.ociRef, `docker://${mirror.addr}/cache/lib/app:v1`]);
    tscopy(['copy', '-q', '--dest-tls-verify=false', base.ociRef, `docker://${primary.addr}/lib/only-primary:v1`]);
    const conf = join(d, 'registries.conf');
    const write = (pullFromMirror: string) =>
      writeFileSync(
        conf,
        [
          '[[registry]]',
          'prefix = "127.0.0.1:9/lib"',
          `location = "${primary.addr}/lib"`,
          'insecure = true',
          '[[registry.mirror]]',
          `location = "${mirror.addr}/cache/lib"`,
          'insecure = true',
          `pull-from-mirror = "${pullFromMirror}"`,
          '',
        ].join('\n'),
      );
    write('all');
    // no TLS flags: insecure comes from registries.conf, for the mirror and for the location
    const env = { CONTAINERS_REGISTRIES_CONF: conf };
    const raw = (img: string) => tscopy(['inspect', '--raw', `docker://${img}`], env);
    assert.equal(digestOf(raw('127.0.0.1:9/lib/app:v1')), base.manifestDigest);
    // (a name on a loopback port where nothing listens: no lookup leaves the machine if a tool ignored the file)
    assert.equal(digestOf(sh('skopeo', ['--registries-conf', conf, 'inspect', '--raw', 'docker://127.0.0.1:9/lib/app:v1'])), base.manifestDigest);
    // not on the mirror: the location serves it
    assert.equal(digestOf(raw('127.0.0.1:9/lib/only-primary:v1')), base.manifestDigest);
    const out = join(d, 'out');
    tscopy(['copy', '-q', 'docker://127.0.0.1:9/lib/app:v1', `oci:${out}:x`], env);
    assert.equal(digestOf(sh('skopeo', ['inspect', '--raw', `oci:${out}:x`])), base.manifestDigest);
    // digest-only: a tag is pulled from the location only (which does not have app), a digest from the mirror
    write('digest-only');
    const byTag = tscopyFail(['inspect', '--raw', 'docker://127.0.0.1:9/lib/app:v1'], env);
    assert.notEqual(byTag.status, 0);
    assert.match(byTag.stderr, new RegExp(`${primary.addr}/lib/app:v1`));
    assert.equal(digestOf(raw(`127.0.0.1:9/lib/app@${base.manifestDigest}`)), base.manifestDigest);
    // neither has it: every source tried is named
    write('all');
    const none = tscopyFail(['inspect', '--raw', 'docker://127.0.0.1:9/lib/nowhere:v1'], env);
    assert.notEqual(none.status, 0);
    assert.match(none.stderr, /no pull source has it/);
    assert.match(none.stderr, new RegExp(`mirror ${mirror.addr}/cache/lib/nowhere:v1: .*; ${primary.addr}/lib/nowhere:v1: `));
    // a push goes to the name as written, as skopeo's (rewriting and mirrors are for pulls): 127.0.0.1:9, where
    // nothing listens, so both fail naming it, and neither the location nor the mirror receives anything
    const push = tscopyFail(['copy', '-q', '--retry-times', '0', base.ociRef, 'docker://127.0.0.1:9/lib/pushed:v2'], env);
    assert.equal(push.status, 1, push.stderr);
    assert.match(push.stderr, /127\.0\.0\.1:9/);
    const peer = spawnSync('skopeo', ['--registries-conf', conf, 'copy', '-q', base.ociRef, 'docker://127.0.0.1:9/lib/pushed:v2'], { encoding: 'utf8' });
    assert.notEqual(peer.status, 0);
    assert.match(peer.stderr, /127\.0\.0\.1:9/);
    for (const at of [`${primary.addr}/lib/pushed:v2`, `${mirror.addr}/cache/lib/pushed:v2`])
      assert.notEqual(tscopyFail(['inspect', '--raw', '--tls-verify=false', `docker://${at}`]).status, 0, at);
    // with the location written out, the push lands there
    tscopy(['copy', '-q', '--dest-tls-verify=false', base.ociRef, `docker://${primary.addr}/lib/pushed:v2`], env);
    assert.equal(digestOf(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${primary.addr}/lib/pushed:v2`])), base.manifestDigest);
    // a bad mirror table is refused with the file and entry named
    writeFileSync(conf, `[[registry]]\nprefix = "127.0.0.1:9/lib"\nlocation = "${primary.addr}/lib"\n[[registry.mirror]]\npull-from-mirror = "sometimes"\nlocation = "x"\n`);
    const bad = tscopyFail(['inspect', '--raw', 'docker://127.0.0.1:9/lib/app:v1'], env);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /registries\.conf": \[\[registry\]\] #1 mirror #1: unsupported pull-from-mirror value "sometimes" for mirror "x"/);
  });
});
