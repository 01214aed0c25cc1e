/** Small stream helpers shared by every module. */
import { Readable } from 'node:stream';
import { SizeMismatchError } from './errors.js';

/** Options every long operation takes: cancellation and byte progress. */
export type Io = { signal?: AbortSignal | undefined; onProgress?: ((bytes: number) => void) | undefined };

/** Manifests, indexes and configs are read into memory only up to this size. */
export const MAX_MANIFEST_SIZE = 4 * 1024 * 1024;

/** Read a (small) stream into a Buffer, failing once it exceeds `limit` bytes. */
export async function readAll(src: AsyncIterable<Uint8Array> | Readable, limit = MAX_MANIFEST_SIZE, what = 'content'): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of src as AsyncIterable<Uint8Array>) {
    n += c.length;
    if (n > limit) {
      (src as Readable).destroy?.();
      throw new SizeMismatchError(limit, n, what, 'limit');
    }
    chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c));
  }
  return Buffer.concat(chunks, n);
}

/**
 * The chunks of a byte stream one at a time, as they were pushed, for a `for await` loop. Iterating a Readable
 * itself calls read(), which joins everything buffered into one new Buffer at every step: when the loop's body
 * (a hash, a send) lags behind the socket, that copies each byte once more (~60 ms of CPU and the garbage of it
 * per 250 MB copied registry to registry). Here 'data' events hand each chunk on as it came; the stream is paused
 * while `high` chunks wait. Errors and a close before 'end' (ERR_STREAM_PREMATURE_CLOSE) are thrown as the
 * Readable's own iterator throws them; leaving the loop early destroys the stream. Other iterables pass through.
 */
export function chunksOf<T extends Uint8Array>(src: AsyncIterable<T> | Readable, high = 16): AsyncIterable<T> {
  if (!(src instanceof Readable) || src.readableObjectMode) return src as AsyncIterable<T>;
  return chunksOfReadable<T>(src, high);
}

async function* chunksOfReadable<T>(r: Readable, high: number): AsyncGenerator<T> {
  const queue: T[] = [];
  let ended = false;
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  const poke = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onData = (c: T) => {
    queue.push(c);
    if (queue.length >= high) r.pause();
    poke();
  };
  const onEnd = () => {
    ended = true;
    poke();
  };
  const onError = (error: unknown) => {
    failure ??= { error };
    poke();
  };
  const prematureClose = () => Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
  const onClose = () => {
    if (!ended && !failure) failure = { error: prematureClose() };
    poke();
  };
  if (r.errored) throw r.errored;
  // destroyed before the end (its 'close' has been or is being emitted): no event would ever wake the loop
  if (r.destroyed && !r.readableEnded) throw prematureClose();
  r.on('data', onData);
  r.on('end', onEnd);
  r.on('error', onError);
  r.on('close', onClose);
  try {
    for (;;) {
      if (queue.length > 0) {
        const c = queue.shift()!;
        if (queue.length <= high >> 1 && r.isPaused() && !ended) r.resume();
        yield c;
      } else if (failure) throw failure.error;
      else if (ended || r.readableEnded) return;
      else await new Promise<void>((res) => (wake = res));
    }
  } finally {
    r.off('data', onData);
    r.off('end', onEnd);
    r.off('error', onError);
    r.off('close', onClose);
    if (!ended) r.destroy();
  }
}
