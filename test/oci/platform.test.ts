import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parsePlatform, formatPlatform, normalizePlatform, hostPlatform, platformMatches, selectPlatform } from '../../src/oci/platform.js';
import type { Descriptor } from '../../src/oci/manifest.js';
import { UsageError } from '../../src/oci/errors.js';

const desc = (p: Descriptor['platform'], n: number): Descriptor => ({
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  digest: `sha256:${String(n).repeat(64).slice(0, 64)}` as Descriptor['digest'],
  size: n,
  platform: p,
});

describe('platforms', () => {
  it('parses and normalises', () => {
    assert.deepEqual(parsePlatform('linux/amd64'), { os: 'linux', architecture: 'amd64' });
    assert.deepEqual(parsePlatform('linux/x86_64'), { os: 'linux', architecture: 'amd64' });
    assert.deepEqual(parsePlatform('Linux/AARCH64'), { os: 'linux', architecture: 'arm64', variant: 'v8' });
    assert.deepEqual(parsePlatform('linux/arm64/8'), { os: 'linux', architecture: 'arm64', variant: 'v8' });
    assert.deepEqual(parsePlatform('linux/arm'), { os: 'linux', architecture: 'arm', variant: 'v7' });
    assert.deepEqual(parsePlatform('linux/arm/6'), { os: 'linux', architecture: 'arm', variant: 'v6' });
    assert.deepEqual(parsePlatform('linux/armhf'), { os: 'linux', architecture: 'arm', variant: 'v7' });
    assert.deepEqual(parsePlatform('linux/armel'), { os: 'linux', architecture: 'arm', variant: 'v6' });
    assert.deepEqual(parsePlatform('linux/i386'), { os: 'linux', architecture: '386' });
    assert.deepEqual(parsePlatform('linux/amd64/v1'), { os: 'linux', architecture: 'amd64' });
    assert.deepEqual(parsePlatform('linux/amd64/v3'), { os: 'linux', architecture: 'amd64', variant: 'v3' });
    assert.deepEqual(normalizePlatform({ os: 'macos', architecture: 'arm64' }), { os: 'darwin', architecture: 'arm64', variant: 'v8' });
    assert.deepEqual(normalizePlatform({ os: 'windows', architecture: 'amd64', 'os.version': '10.0.17763' }), {
      os: 'windows',
      architecture: 'amd64',
      'os.version': '10.0.17763',
    });
  });

  for (const bad of ['linux', 'linux/', '/amd64', 'linux/amd64/v8/x', 'linux/am d64', '']) {
    it(`rejects ${JSON.stringify(bad)}`, () => {
      assert.throws(() => parsePlatform(bad), (e: unknown) => e instanceof UsageError && /want os\/arch\[\/variant\]/.test(e.message));
    });
  }

  it('formats', () => {
    assert.equal(formatPlatform(parsePlatform('linux/arm64')), 'linux/arm64/v8');
    assert.equal(formatPlatform({ os: 'linux', architecture: 'amd64' }), 'linux/amd64');
  });

  it('host platform is this machine', () => {
    const h = hostPlatform();
    assert.equal(h.os, 'linux');
    assert.equal(h.architecture, process.arch === 'x64' ? 'amd64' : process.arch);
  });

  it('matches and selects from an index (exact variant first)', () => {
    assert.ok(platformMatches({ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'aarch64' }));
    assert.ok(!platformMatches({ os: 'linux', architecture: 'arm', variant: 'v7' }, { os: 'linux', architecture: 'arm', variant: 'v6' }));
    assert.ok(!platformMatches({ os: 'linux', architecture: 'amd64' }, { os: 'windows', architecture: 'amd64' }));
    const index = [
      desc({ os: 'linux', architecture: 'arm', variant: 'v6' }, 1),
      desc({ os: 'linux', architecture: 'arm', variant: 'v7' }, 2),
      desc({ os: 'linux', architecture: 'amd64' }, 3),
      desc({ os: 'linux', architecture: 'arm64' }, 4),
      desc(undefined, 5),
    ];
    assert.equal(selectPlatform(index, { os: 'linux', architecture: 'arm' })?.size, 2);
    assert.equal(selectPlatform(index, parsePlatform('linux/arm/v6'))?.size, 1);
    assert.equal(selectPlatform(index, parsePlatform('linux/x86_64'))?.size, 3);
    assert.equal(selectPlatform(index, parsePlatform('linux/arm64/v8'))?.size, 4);
    assert.equal(selectPlatform(index, parsePlatform('linux/s390x')), undefined);
  });
});
