/** chunksOf (src/oci/io.ts): a Readable's chunks one by one as pushed, with the Readable iterator's errors. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Readable, PassThrough } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { chunksOf } from '../../src/oci/io.js';

/** A byte stream that has `n` chunks of `size` bytes buffered before anyone reads. */
function buffered(n: number, size: number): { r: Readable; pushed: Buffer[] } {
  const pushed = Array.from({ length: n }, (_, i) => Buffer.alloc(size, i));
  const r = new Readable({ read() {}, highWaterMark: n * size * 2 });
  for (const c of pushed) r.push(c);
  r.push(null);
  return { r, pushed };
}

describe('chunksOf', () => {
  it('hands on each pushed chunk itself, where iterating the Readable joins what is buffered into new Buffers', async () => {
    const a = buffered(50, 1000);
    const got: Buffer[] = [];
    for await (const c of chunksOf<Buffer>(a.r)) got.push(c);
    assert.equal(got.length, 50);
    assert.ok(got.every((c, i) => c === a.pushed[i]), 'the very Buffers that were pushed, in order');
    // what the Readable's own iterator does with the same stream: one joined copy (the reason for chunksOf)
    const b = buffered(50, 1000);
    const joined: Buffer[] = [];
    for await (const c of b.r) joined.push(c as Buffer);
    assert.ok(joined.length < 50, `the Readable iterator gave ${joined.length} chunks`);
    assert.deepEqual(Buffer.concat(joined), Buffer.concat(got));
  });

  it('pauses the stream while `high` chunks wait and resumes as they are taken; nothing is lost', async () => {
    const src = new PassThrough();
    let paused = 0;
    const it = chunksOf<Buffer>(src, 4)[Symbol.asyncIterator]();
    const first = it.next(); // starts the flow
    for (let i = 0; i < 20; i++) {
      src.write(Buffer.from([i]));
      await tick();
      if (src.isPaused()) paused++;
    }
    src.end();
    const got = [(await first).value![0]];
    for (let r = await it.next(); !r.done; r = await it.next()) got.push(r.value[0]);
    assert.ok(paused > 0, 'paused while the consumer did not read');
    assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => i));
  });

  it("throws the stream's error after the chunks before it, and a close before the end as ERR_STREAM_PREMATURE_CLOSE", async () => {
    const src = new PassThrough();
    const got: number[] = [];
    const done = (async () => {
      for await (const c of chunksOf<Buffer>(src)) got.push(c[0]!);
    })();
    src.write(Buffer.from([1]));
    src.write(Buffer.from([2]));
    await tick();
    src.destroy(Object.assign(new Error('socket reset'), { code: 'ECONNRESET' }));
    await assert.rejects(done, { code: 'ECONNRESET' });
    assert.deepEqual(got, [1, 2]);

    const closed = new PassThrough();
    const done2 = (async () => {
      for await (const c of chunksOf<Buffer>(closed)) void c;
    })();
    closed.write(Buffer.from([1]));
    await tick();
    closed.destroy();
    await assert.rejects(done2, { code: 'ERR_STREAM_PREMATURE_CLOSE' });

    const gone = new PassThrough();
    gone.write(Buffer.from([1]));
    gone.destroy();
    await tick(); // its 'close' is over before the loop starts
    await assert.rejects(
      (async () => {
        for await (const c of chunksOf<Buffer>(gone)) void c;
      })(),
      { code: 'ERR_STREAM_PREMATURE_CLOSE' },
      'a stream destroyed before the loop fails it (no wait for events that will not come)',
    );

    const failed = new PassThrough();
    failed.on('error', () => {}); // (failed before anyone iterates)
    failed.destroy(new Error('already failed'));
    await tick();
    await assert.rejects(
      (async () => {
        for await (const c of chunksOf<Buffer>(failed)) void c;
      })(),
      /already failed/,
    );
  });

  it('leaving the loop early destroys the stream and removes its listeners; other iterables pass through as they are', async () => {
    const { r } = buffered(10, 10);
    for await (const c of chunksOf<Buffer>(r)) {
      void c;
      break;
    }
    assert.ok(r.destroyed);
    assert.equal(r.listenerCount('data'), 0);
    const gen = (async function* () {
      yield new Uint8Array([1]);
    })();
    assert.equal(chunksOf(gen), gen);
    const objects = Readable.from([Buffer.from('a')]);
    assert.equal(chunksOf(objects), objects, 'an object-mode stream already yields what was pushed');
  });
});
