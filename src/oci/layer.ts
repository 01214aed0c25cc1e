/**
 * Layer blobs: one pass over a tar stream computes the diffID (sha256 of the uncompressed
 * tar) and the compressed blob's digest and size while the compressed bytes flow to a sink
 * (a content store ingest, a registry upload, a file).
 */
import { PassThrough, Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Hasher, type Digest } from './digest.js';
import type { Compression } from './mediatypes.js';
import { compressStream, decompressStream } from './compress.js';

/** A pass-through Transform feeding a Hasher (sha256 and byte count). */
export class HashingStream extends Transform {
  readonly hasher = new Hasher('sha256');
  constructor(private readonly onBytes?: (n: number) => void) {
    super({ highWaterMark: 1024 * 1024 });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hasher.update(chunk);
    this.onBytes?.(this.hasher.size);
    cb(null, chunk);
  }
}

export interface LayerResult {
  /** Digest and size of the blob as stored (compressed). */
  digest: Digest;
  size: number;
  /** sha256 of the uncompressed tar (the config's rootfs.diff_ids entry). */
  diffID: Digest;
  uncompressedSize: number;
  compression: Compression;
}

export interface WriteLayerOptions {
  level?: number | undefined;
  /** gzip worker threads (see CompressOptions.threads; 0 = one zlib stream). */
  threads?: number | undefined;
  signal?: AbortSignal | undefined;
  /** Uncompressed bytes read so far. */
  onProgress?: ((bytes: number) => void) | undefined;
}

/**
 * Compress a layer tar and hand the compressed stream to `sink`, computing the diffID and
 * the blob digest/size in the same pass. If the sink fails, the tar side is destroyed; if
 * the tar side fails, the sink's stream errors (so it can discard its temp file).
 */
export async function writeLayer(
  tar: Readable,
  compression: Compression,
  sink: (body: Readable) => Promise<void>,
  opts: WriteLayerOptions = {},
): Promise<LayerResult> {
  const diff = new HashingStream(opts.onProgress);
  const out = compression === 'none' ? undefined : new HashingStream();
  const body = new PassThrough({ highWaterMark: 1024 * 1024 });
  const stages: (Readable | Transform | PassThrough)[] =
    compression === 'none' ? [tar, diff, body] : [tar, diff, compressStream(compression, { level: opts.level, threads: opts.threads }), out!, body];
  const piping = (pipeline as (...a: unknown[]) => Promise<void>)(...stages, { signal: opts.signal });
  let sinkErr: unknown;
  const sinking = sink(body)
    .then(() => {
      if (!body.readableEnded) {
        const e = new Error('layer sink returned before reading the whole layer stream');
        body.destroy(e);
        tar.destroy(e);
        throw e;
      }
    })
    .catch((e) => {
    sinkErr = e;
    body.destroy(e as Error);
    tar.destroy(e as Error);
    throw e;
  });
  const [p, s] = await Promise.allSettled([piping, sinking]);
  if (s.status === 'rejected') throw s.reason;
  if (p.status === 'rejected') throw sinkErr ?? p.reason;
  const diffID = diff.hasher.digest();
  const uncompressedSize = diff.hasher.size;
  if (!out) return { digest: diffID, size: uncompressedSize, diffID, uncompressedSize, compression };
  return { digest: out.hasher.digest(), size: out.hasher.size, diffID, uncompressedSize, compression };
}

/** The diffID (sha256 of the uncompressed tar) of a layer blob, compressed or not (auto-detected). */
export async function diffIDOf(blob: Readable | AsyncIterable<Uint8Array>, opts: { signal?: AbortSignal } = {}): Promise<{ diffID: Digest; size: number }> {
  const h = new HashingStream();
  await pipeline(blob, decompressStream('auto'), h, async function* (src: AsyncIterable<Buffer>) {
    for await (const _ of src) void _;
  }, { signal: opts.signal });
  return { diffID: h.hasher.digest(), size: h.hasher.size };
}
