/** Small stream helpers shared by every module. */
import type { Readable } from 'node:stream';
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
