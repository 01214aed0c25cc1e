/**
 * Layer compression: gzip (node:zlib) and zstd (zstd-napi, loaded on first use), plus
 * magic-number detection so readers can take a blob whose media type lies or is unknown.
 *
 * Output is deterministic for the same input, compression and level (the gzip header
 * carries no name and mtime 0), which is what makes rebuilt layers keep their digests.
 */
import { createRequire } from 'node:module';
import { Duplex, PassThrough, Transform, type TransformCallback } from 'node:stream';
import * as zlib from 'node:zlib';
import { BlockGzip, blockGzipAvailable } from './pgzip.js';
import type { Compression } from './mediatypes.js';
import { TsimageError } from './errors.js';

export type { Compression } from './mediatypes.js';

const GZIP_MAGIC = [0x1f, 0x8b] as const;
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd] as const;

/** The compression a blob starts with (gzip and zstd magic numbers), else 'none'. */
export function detectCompression(head: Uint8Array): Compression {
  if (head.length >= 2 && head[0] === GZIP_MAGIC[0] && head[1] === GZIP_MAGIC[1]) return 'gzip';
  if (head.length >= 4 && ZSTD_MAGIC.every((b, i) => head[i] === b)) return 'zstd';
  return 'none';
}

type ZstdModule = typeof import('zstd-napi');
let zstdMod: ZstdModule | undefined;
/** zstd-napi is a native addon: load it only when zstd is actually used (keeps CLI start lean). */
function zstd(): ZstdModule {
  zstdMod ??= createRequire(import.meta.url)('zstd-napi') as ZstdModule;
  return zstdMod;
}

/** Default levels: gzip 6 (as `gzip`, pigz and Go's compress/gzip default), zstd 3 (zstd's default). */
export const DEFAULT_LEVEL: Record<Exclude<Compression, 'none'>, number> = { gzip: 6, zstd: 3 };

export interface CompressOptions {
  level?: number | undefined;
  /**
   * gzip only: worker threads for pigz-style block compression (default TSIMAGE_GZIP_THREADS or
   * the machine's parallelism; the bytes do not depend on it); 0 = one zlib stream (the output of
   * zlib's gzip, as before).
   */
  threads?: number | undefined;
}

/** A Transform compressing with `c` ('none' passes through). */
export function compressStream(c: Compression, opts: CompressOptions = {}): Transform {
  switch (c) {
    case 'none':
      return new PassThrough();
    case 'gzip': {
      const level = opts.level ?? DEFAULT_LEVEL.gzip;
      if (!Number.isInteger(level) || level < 0 || level > 9) throw new TsimageError(`invalid gzip level ${level} (0-9)`);
      if (opts.threads === 0 || !blockGzipAvailable) return zlib.createGzip({ level, chunkSize: 128 * 1024 });
      return new BlockGzip({ level, threads: opts.threads });
    }
    case 'zstd': {
      const level = opts.level ?? DEFAULT_LEVEL.zstd;
      if (!Number.isInteger(level) || level < -7 || level > 22) throw new TsimageError(`invalid zstd level ${level} (-7..22)`);
      return new (zstd().CompressStream)({ compressionLevel: level }) as unknown as Transform;
    }
    default:
      throw new TsimageError(`unknown compression ${JSON.stringify(c)}`);
  }
}

/** Decompression errors in words a user can act on (zlib's "unexpected end of file" means truncated). */
export class CompressionError extends TsimageError {}

function wrapError(c: Compression, err: unknown): Error {
  if (err instanceof TsimageError) return err;
  const e = err as NodeJS.ErrnoException;
  const msg = e?.message ?? String(err);
  if (c === 'gzip') {
    if (e?.code === 'Z_BUF_ERROR' || /unexpected end of file/i.test(msg))
      return new CompressionError('truncated gzip stream (unexpected end of file)', { cause: err });
    return new CompressionError(`corrupt gzip stream: ${msg}`, { cause: err });
  }
  if (c === 'zstd') {
    if (/incomplete|truncated|ended in (the )?middle|end of/i.test(msg)) return new CompressionError(`truncated zstd stream: ${msg}`, { cause: err });
    return new CompressionError(`corrupt zstd stream: ${msg}`, { cause: err });
  }
  return err instanceof Error ? err : new Error(msg);
}

function rawDecompressor(c: Compression): Transform {
  if (c === 'gzip') return zlib.createGunzip({ chunkSize: 128 * 1024 });
  if (c === 'zstd') return new (zstd().DecompressStream)() as unknown as Transform;
  return new PassThrough();
}

/**
 * Wraps an inner Transform chosen from the first bytes (or up front), forwarding data both
 * ways with backpressure, and translating its errors into CompressionError.
 */
class Decompressor extends Duplex {
  private inner: Transform | undefined;
  private head: Buffer[] = [];
  private headLen = 0;
  private kind: Compression | undefined;

  constructor(private readonly wanted: Compression | 'auto') {
    super();
    if (wanted !== 'auto') this.attach(wanted);
  }

  /** The compression in use (known after the first bytes when 'auto'). */
  get compression(): Compression | undefined {
    return this.kind;
  }

  private attach(c: Compression): Transform {
    this.kind = c;
    const inner = rawDecompressor(c);
    this.inner = inner;
    inner.on('data', (d: Buffer) => {
      if (!this.push(d)) inner.pause();
    });
    inner.on('end', () => this.push(null));
    inner.on('error', (err) => this.destroy(wrapError(c, err)));
    return inner;
  }

  override _read(): void {
    this.inner?.resume();
  }

  private forward(chunk: Buffer, cb: (err?: Error | null) => void): void {
    const inner = this.inner!;
    if (inner.write(chunk)) cb();
    else inner.once('drain', () => cb());
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.inner) return this.forward(chunk, cb);
    this.head.push(chunk);
    this.headLen += chunk.length;
    if (this.headLen < 4) return cb();
    const all = Buffer.concat(this.head);
    this.head = [];
    this.attach(detectCompression(all));
    this.forward(all, cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.inner) {
      const all = Buffer.concat(this.head);
      this.head = [];
      this.attach(detectCompression(all));
      if (all.length) this.inner!.write(all);
    }
    const inner = this.inner!;
    inner.end();
    // Our readable side ends when the inner one does; _final may complete now.
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.inner?.destroy();
    cb(err);
  }
}

/**
 * A stream decompressing `c`; 'auto' sniffs gzip/zstd magic and passes anything else
 * through unchanged (plain tar). Truncated or corrupt input fails with CompressionError.
 */
export function decompressStream(c: Compression | 'auto'): Duplex & { readonly compression: Compression | undefined } {
  return new Decompressor(c);
}

/** A Transform that only counts bytes (for progress and uncompressed sizes). */
export class CountingStream extends Transform {
  bytes = 0;
  constructor(private readonly onBytes?: (total: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.onBytes?.(this.bytes);
    cb(null, chunk);
  }
}
