import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseReference, formatReference, familiarName, repositoryName, registryHost, isValidRepositoryName, isValidTag } from '../../src/oci/reference.js';
import { UsageError } from '../../src/oci/errors.js';

const D = 'sha256:' + 'a'.repeat(64);

describe('references', () => {
  const valid: [string, string][] = [
    ['busybox', 'docker.io/library/busybox:latest'],
    ['busybox:1.36', 'docker.io/library/busybox:1.36'],
    ['library/busybox', 'docker.io/library/busybox:latest'],
    ['docker.io/busybox', 'docker.io/library/busybox:latest'],
    ['index.docker.io/busybox', 'docker.io/library/busybox:latest'],
    ['registry-1.docker.io/foo/bar', 'docker.io/foo/bar:latest'],
    ['foo/bar', 'docker.io/foo/bar:latest'],
    ['localhost/foo', 'localhost/foo:latest'],
    ['localhost:5000/foo/bar:v1', 'localhost:5000/foo/bar:v1'],
    ['127.0.0.1:5000/x', '127.0.0.1:5000/x:latest'],
    ['[::1]:5000/x', '[::1]:5000/x:latest'],
    ['[fe80::1]/a/b:t', '[fe80::1]/a/b:t'],
    ['quay.io/a/b/c@' + D, 'quay.io/a/b/c@' + D],
    ['quay.io/a:tag@' + D, 'quay.io/a:tag@' + D],
    ['Example.COM/a', 'Example.COM/a:latest'],
    ['a__b/c-d/e.f_g', 'docker.io/a__b/c-d/e.f_g:latest'],
    ['a---b', 'docker.io/library/a---b:latest'],
    ['x:' + 'T'.repeat(128), 'docker.io/library/x:' + 'T'.repeat(128)],
    ['localhost:5000', 'docker.io/library/localhost:5000'],
  ];
  for (const [input, want] of valid) {
    it(`parses ${input.length > 40 ? input.slice(0, 40) + '…' : input}`, () => {
      assert.equal(formatReference(parseReference(input)), want);
    });
  }

  it('splits fields', () => {
    assert.deepEqual(parseReference('[::1]:5000/ns/img:v2@' + D), { registry: '[::1]:5000', repository: 'ns/img', tag: 'v2', digest: D });
    assert.deepEqual(parseReference('localhost:5000/foo@' + D), { registry: 'localhost:5000', repository: 'foo', tag: undefined, digest: D });
    assert.deepEqual(parseReference('foo', { normalize: false }), { registry: '', repository: 'foo', tag: undefined, digest: undefined });
    assert.equal(parseReference('foo', { defaultTag: false }).tag, undefined);
  });

  const invalid: [string, RegExp][] = [
    ['', /empty reference/],
    ['Busybox', /repository name "Busybox" must be lowercase/],
    ['docker.io/Foo/bar', /must be lowercase/],
    ['foo:bad tag', /contains whitespace/],
    ['foo:-tag', /invalid tag "-tag"/],
    ['foo:' + 't'.repeat(129), /invalid tag/],
    ['foo:ta@g', /invalid digest|not algorithm/],
    ['foo@sha256:abc', /want 64 lowercase hex/],
    ['foo@md5:' + 'a'.repeat(32), /unsupported digest algorithm "md5"/],
    ['foo@', /empty digest/],
    [':tag', /missing repository name/],
    ['localhost:5000/', /missing repository name/],
    ['-foo', /invalid repository name "-foo"/],
    ['foo..bar', /invalid repository name/],
    ['foo_-bar', /invalid repository name/],
    ['foo//bar', /invalid repository name/],
    ['foo/', /invalid repository name/],
    ['host:port/x', /invalid registry host "host:port"/],
    ['-bad.com/x', /invalid registry host/],
    ['a/' + 'b'.repeat(260), /longer than 255/],
  ];
  for (const [input, re] of invalid) {
    it(`rejects ${JSON.stringify(input.length > 40 ? input.slice(0, 40) + '…' : input)}`, () => {
      assert.throws(
        () => parseReference(input),
        (e: unknown) => e instanceof UsageError && e.message.startsWith(`invalid image reference ${JSON.stringify(input)}: `) && re.test(e.message),
      );
    });
  }

  it('familiar names, repository names, hosts', () => {
    assert.equal(familiarName(parseReference('busybox')), 'busybox:latest');
    assert.equal(familiarName(parseReference('docker.io/foo/bar:1')), 'foo/bar:1');
    assert.equal(familiarName(parseReference('docker.io/library/a/b')), 'library/a/b:latest');
    assert.equal(familiarName(parseReference('localhost:5000/x@' + D)), 'localhost:5000/x@' + D);
    assert.equal(repositoryName(parseReference('quay.io/a/b:c')), 'quay.io/a/b');
    assert.equal(registryHost('docker.io'), 'registry-1.docker.io');
    assert.equal(registryHost('quay.io'), 'quay.io');
    assert.equal(isValidRepositoryName('a/b-c'), true);
    assert.equal(isValidRepositoryName('A'), false);
    assert.equal(isValidTag('v1.0_rc-1'), true);
    assert.equal(isValidTag('.x'), false);
  });
});
