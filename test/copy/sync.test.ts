/**
 * tscopy sync against tsregistry and distribution: whole repositories, incremental re-runs (up-to-date tags
 * skipped after one HEAD), --dry-run, --prune, YAML sources (images, images-by-tag-regex, tls-verify),
 * --keep-going, docker <-> dir; skopeo checks what landed.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { requireTool, sh, startDistribution, tempDir } from '../helpers.js';
import { baseLayout, type BaseLayout } from '../fixtures/base.js';
import { spawnRegistry } from '../registry/util.js';
import { NOTLS, tscopy, tscopyFail, tscopyTraced } from './engine-util.js';
import { digestOf } from '../../src/oci/digest.js';

const sha = (b: Buffer | string) => digestOf(b);

let base: BaseLayout;
before(async () => {
  requireTool('skopeo');
  base = await baseLayout();
});

/** Three distinct images (OCI, Docker schema 2, zstd layers) under tags a, b, c of `repo`. */
function seed(addr: string, repo: string): Record<string, string> {
  tscopy(['copy', '-q', ...NOTLS, base.ociRef, `docker://${addr}/${repo}:a`]);
  tscopy(['copy', '-q', ...NOTLS, '--format', 'v2s2', base.ociRef, `docker://${addr}/${repo}:b`]);
  tscopy(['copy', '-q', ...NOTLS, '--dest-compress-format', 'zstd', base.ociRef, `docker://${addr}/${repo}:c`]);
  const out: Record<string, string> = {};
  for (const t of ['a', 'b', 'c']) out[t] = sha(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${addr}/${repo}:${t}`]));
  assert.equal(new Set(Object.values(out)).size, 3);
  return out;
}

function tags(addr: string, repo: string): string[] {
  return (JSON.parse(sh('skopeo', ['list-tags', '--tls-verify=false', `docker://${addr}/${repo}`])) as { Tags: string[] }).Tags.sort();
}

describe('tscopy sync', () => {
  it('a repository to a registry: copies, then skips what is up to date; --dry-run writes nothing; --prune deletes', async (t) => {
    const reg = await spawnRegistry(t, tempDir(t, 'reg'));
    const digests = seed(reg.addr, 'src/app');
    const out1 = tscopy(['sync', '--src', 'docker', '--dest', 'docker', ...NOTLS, `${reg.addr}/src/app`, `${reg.addr}/mirror`]);
    assert.match(out1, /Synced 3 image\(s\): 3 copied, 0 skipped \(up to date\), 0 failed/);
    for (const [tag, d] of Object.entries(digests)) assert.equal(sha(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.addr}/mirror/app:${tag}`])), d);
    const out2 = tscopy(['sync', '--src', 'docker', '--dest', 'docker', ...NOTLS, `${reg.addr}/src/app`, `${reg.addr}/mirror`]);
    assert.match(out2, /0 copied, 3 skipped \(up to date\), 0 failed/);
    // a new tag: the dry run says so and copies nothing
    tscopy(['copy', '-q', ...NOTLS, `docker://${reg.addr}/src/app:a`, `docker://${reg.addr}/src/app:d`]);
    const dry = tscopy(['sync', '--dry-run', '--src', 'docker', '--dest', 'docker', ...NOTLS, `${reg.addr}/src/app`, `${reg.addr}/mirror`]);
    assert.match(dry, /Would copy docker:\/\/.*\/src\/app:d to docker:\/\/.*\/mirror\/app:d/);
    assert.match(dry, /Dry run: would sync 4 image\(s\): 1 to copy, 3 skipped/);
    assert.deepEqual(tags(reg.addr, 'mirror/app'), ['a', 'b', 'c']);
    // the source loses c: --prune makes the mirror true (dry run first)
    tscopy(['copy', '-q', ...NOTLS, `docker://${reg.addr}/src/app:d`, `docker://${reg.addr}/src/app:d`]);
    await fetch(`${reg.url}/v2/src/app/manifests/${digests.c}`, { method: 'DELETE' });
    assert.deepEqual(tags(reg.addr, 'src/app'), ['a', 'b', 'd']);
    const dryPrune = tscopy(['sync', '--dry-run', '--prune', '--src', 'docker', '--dest', 'docker', ...NOTLS, `${reg.addr}/src/app`, `${reg.addr}/mirror`]);
    assert.match(dryPrune, /Would delete docker:\/\/.*\/mirror\/app:c/);
    assert.deepEqual(tags(reg.addr, 'mirror/app'), ['a', 'b', 'c']);
    const pruned = tscopy(['sync', '--prune', '--src', 'docker', '--dest', 'docker', ...NOTLS, `${reg.addr}/src/app`, `${reg.addr}/mirror`]);
    assert.match(pruned, /1 copied, 2 skipped \(up to date\), 0 failed, 1 deleted/);
    assert.deepEqual(tags(reg.addr, 'mirror/app'), ['a', 'b', 'd']);
  });

  it('asks each registry once per tag: a changed tag is copied from what its check read; no lookups for a copy onto its own repository', async (t) => {
    const dist = await startDistribution(t);
    const digests = seed(dist.addr, 'src/app');
    tscopy(['sync', '-q', '--src', 'docker', '--dest', 'docker', ...NOTLS, `${dist.addr}/src/app`, `${dist.addr}/mirror`]);
    // the mirror's b and c now name a (changed at the source: copies), a is up to date
    for (const tag of ['b', 'c']) tscopy(['copy', '-q', ...NOTLS, `docker://${dist.addr}/src/app:a`, `docker://${dist.addr}/mirror/app:${tag}`]);
    const { stdout, requests } = tscopyTraced(['sync', '--src', 'docker', '--dest', 'docker', ...NOTLS, `${dist.addr}/src/app`, `${dist.addr}/mirror`]);
    assert.match(stdout, /Synced 3 image\(s\): 2 copied, 1 skipped \(up to date\), 0 failed/);
    for (const tag of ['a', 'b', 'c']) {
      assert.equal(requests.filter((r) => r.endsWith(`/v2/src/app/manifests/${tag}`)).length, 1, `source manifest ${tag} read once: ${requests.join('\n')}`);
      assert.equal(requests.filter((r) => r.endsWith(`/v2/mirror/app/manifests/${tag}`) && r.startsWith('HEAD')).length, 1, `destination ${tag} asked once`);
    }
    for (const [tag, d] of Object.entries(digests)) assert.equal(sha(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${dist.addr}/mirror/app:${tag}`])), d);
    // a copy within one repository (re-tag): its signatures and referrers are already there, nothing looked up
    const retag = tscopyTraced(['copy', '-q', ...NOTLS, `docker://${dist.addr}/src/app:a`, `docker://${dist.addr}/src/app:e`]);
    assert.deepEqual(retag.requests.filter((r) => /\.sig$|\/referrers\/|manifests\/sha256-/.test(r)), []);
    assert.equal(sha(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${dist.addr}/src/app:e`])), digests.a);
    // ... while a copy to another repository still looks for them
    const other = tscopyTraced(['copy', '-q', ...NOTLS, `docker://${dist.addr}/src/app:a`, `docker://${dist.addr}/other/app:a`]);
    assert.ok(other.requests.some((r) => r.endsWith(`/manifests/sha256-${digests.a!.slice(7)}.sig`)), other.requests.join('\n'));
  });

  it('YAML source (images, images-by-tag-regex, tls-verify) to distribution, --scoped, --keep-going, docker <-> dir', async (t) => {
    const src = await spawnRegistry(t, tempDir(t, 'reg'));
    const digests = seed(src.addr, 'team/app');
    const dist = await startDistribution(t);
    const d = tempDir(t, 'sync');
    const yml = join(d, 'sync.yml');
    writeFileSync(
      yml,
      `${src.addr}:\n  tls-verify: false\n  images:\n    team/app:\n      - a\n      - nosuch\n  images-by-tag-regex:\n    team/app: ^[bc]$\n`,
    );
    const r = tscopyFail(['sync', '--src', 'yaml', '--dest', 'docker', '--dest-tls-verify=false', '--keep-going', yml, `${dist.addr}/mirror`]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stdout, /3 copied, 0 skipped \(up to date\), 1 failed/);
    assert.match(r.stdout, /Failed docker:\/\/.*team\/app:nosuch/);
    assert.deepEqual(tags(dist.addr, 'mirror/app'), ['a', 'b', 'c']);
    for (const tag of ['a', 'b', 'c']) assert.equal(sha(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${dist.addr}/mirror/app:${tag}`])), digests[tag]);
    // --scoped keeps the source's registry and path under the destination (a host:port is no repository name: dir)
    tscopy(['sync', '-q', '--scoped', '--src', 'docker', '--dest', 'dir', '--src-tls-verify=false', `${src.addr}/team/app:a`, join(d, 'scoped')]);
    assert.equal(sha(sh('skopeo', ['inspect', '--raw', `dir:${join(d, 'scoped', src.addr, 'team', 'app:a')}`])), digests.a);
    // docker -> dir -> docker
    tscopy(['sync', '-q', '--src', 'docker', '--dest', 'dir', '--src-tls-verify=false', `${dist.addr}/mirror/app`, join(d, 'dirs')]);
    assert.deepEqual(readdirSync(join(d, 'dirs')).sort(), ['app:a', 'app:b', 'app:c']);
    assert.equal(sha(sh('skopeo', ['inspect', '--raw', `dir:${join(d, 'dirs', 'app:b')}`])), digests.b);
    const again = tscopy(['sync', '--src', 'docker', '--dest', 'dir', '--src-tls-verify=false', `${dist.addr}/mirror/app`, join(d, 'dirs')]);
    assert.match(again, /0 copied, 3 skipped/);
    tscopy(['sync', '-q', '--src', 'dir', '--dest', 'docker', '--dest-tls-verify=false', join(d, 'dirs'), `${dist.addr}/fromdir`]);
    assert.deepEqual(tags(dist.addr, 'fromdir/app'), ['a', 'b', 'c']);
    assert.equal(sha(sh('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${dist.addr}/fromdir/app:c`])), digests.c);
    const bad = tscopyFail(['sync', '--src', 'dir', '--dest', 'dir', join(d, 'dirs'), join(d, 'x')]);
    assert.equal(bad.status, 2);
  });
});
