import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import { parseDigest, isDigest, digestOf, digestAlgorithm, digestHex, Hasher, verifying, EMPTY_JSON_DIGEST } from '../../src/oci/digest.js';
import { readAll, MAX_MANIFEST_SIZE } from '../../src/oci/io.js';
import { DigestMismatchError, SizeMismatchError, ValidationError } from '../../src/oci/errors.js';

const hex = (s: string, alg = 'sha256') => createHash(alg).update(s).digest('hex');
const D = `sha256:${hex('hello')}`;

async function run(data: Buffer[], v: ReturnType<typeof verifying>): Promise<number> {
  let n = 0;
  await pipeline(Readable.from(data), v, async function* (src: AsyncIterable<Buffer>) {
    for await (const c of src) n += c.length;
  });
  return n;
}

describe('digests', () => {
  it('parses sha256 and sha512 and rejects everything else, naming the problem', () => {
    assert.equal(parseDigest(D), D);
    const d512 = `sha512:${hex('x', 'sha512')}`;
    assert.equal(parseDigest(d512), d512);
    assert.equal(digestAlgorithm(parseDigest(d512)), 'sha512');
    assert.equal(digestHex(parseDigest(D)), hex('hello'));
    assert.throws(() => parseDigest(''), /empty digest/);
    assert.throws(() => parseDigest('sha256'), /not algorithm:hex/);
    assert.throws(() => parseDigest(`md5:${'a'.repeat(32)}`), /unsupported digest algorithm "md5"/);
    assert.throws(() => parseDigest(`sha256:${'a'.repeat(63)}`), /want 64 lowercase hex characters/);
    assert.throws(() => parseDigest(`sha256:${'A'.repeat(64)}`), /want 64 lowercase hex characters/);
    assert.throws(() => parseDigest(`sha256:${'g'.repeat(64)}`), /want 64 lowercase hex/);
    assert.throws(() => parseDigest('SHA256:' + 'a'.repeat(64)), /not algorithm:hex/);
    assert.throws(() => parseDigest('bad', 'layers[2].digest'), (e: unknown) => e instanceof ValidationError && e.message.startsWith('layers[2].digest: '));
    assert.equal(isDigest(D), true);
    assert.equal(isDigest('nope'), false);
    assert.equal(isDigest(42), false);
  });

  it('digestOf, Hasher and the empty JSON digest', () => {
    assert.equal(digestOf('hello'), D);
    assert.equal(digestOf(Buffer.from('hello'), 'sha512'), `sha512:${hex('hello', 'sha512')}`);
    const h = new Hasher();
    h.update(Buffer.from('hel')).update(Buffer.from('lo'));
    assert.equal(h.size, 5);
    assert.equal(h.digest(), D);
    assert.equal(EMPTY_JSON_DIGEST, 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a');
  });

  it('verifying(): passes matching content through and reports digest and size', async () => {
    const v = verifying({ digest: parseDigest(D), size: 5 });
    assert.equal(await run([Buffer.from('he'), Buffer.from('llo')], v), 5);
    assert.deepEqual(v.result, { digest: D, size: 5 });
    assert.equal(v.bytes, 5);
  });

  it('verifying(): digest mismatch fails at the end naming expected and actual', async () => {
    await assert.rejects(run([Buffer.from('hellO')], verifying({ digest: parseDigest(D), what: 'blob X' })), (e: unknown) => {
      assert.ok(e instanceof DigestMismatchError);
      assert.equal(e.message, `digest mismatch for blob X: expected ${D}, got sha256:${hex('hellO')}`);
      return true;
    });
  });

  it('verifying(): short content is a size mismatch; oversize fails as soon as it arrives', async () => {
    await assert.rejects(run([Buffer.from('hell')], verifying({ digest: parseDigest(D), size: 5 })), (e: unknown) => {
      assert.ok(e instanceof SizeMismatchError);
      assert.match(e.message, /expected 5 bytes, got 4/);
      return true;
    });
    let pulled = 0;
    const src = Readable.from(
      (function* () {
        for (let i = 0; i < 100; i++) {
          pulled++;
          yield Buffer.alloc(10);
        }
      })(),
    );
    await assert.rejects(
      pipeline(src, verifying({ size: 25, what: 'layer' }), async function* (s: AsyncIterable<Buffer>) {
        for await (const _ of s) void _;
      }),
      /size mismatch for layer: expected 25 bytes, got 30/,
    );
    assert.ok(pulled < 100, 'stopped early');
    await assert.rejects(run([Buffer.alloc(3), Buffer.alloc(3)], verifying({ limit: 4, what: 'manifest' })), /manifest exceeds the size limit of 4 bytes/);
  });

  it('readAll enforces its limit', async () => {
    assert.equal((await readAll(Readable.from([Buffer.from('ab'), Buffer.from('c')]))).toString(), 'abc');
    await assert.rejects(readAll(Readable.from([Buffer.alloc(3), Buffer.alloc(3)]), 5, 'config'), /config exceeds the size limit of 5 bytes/);
    assert.equal(MAX_MANIFEST_SIZE, 4 * 1024 * 1024);
  });
});
