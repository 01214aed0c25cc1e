/**
 * Parallel gzip, pigz-style: the input is cut into fixed blocks (1 MiB), each block is raw-deflated
 * independently (primed with the previous block's last 32 KiB as dictionary, so the ratio is
 * within a fraction of a percent of one stream), non-final blocks end with a sync flush (a byte
 * boundary, BFINAL=0), the last with Z_FINISH; the blocks concatenated are one valid deflate
 * stream, wrapped in a gzip header and a CRC-32/ISIZE trailer. Every reader (gzip, zlib, Go)
 * reads it as any gzip file.
 *
 * The output depends only on the input, the level and the block size — never on the number of
 * threads or the machine — so the same layer gives the same digest everywhere. Blocks go to a
 * shared pool of worker threads once the input is known to be large (two blocks seen); small
 * inputs are deflated inline (same bytes, no thread start-up cost).
 */
import { Transform, type TransformCallback } from 'node:stream';
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import type { Worker } from 'node:worker_threads';
import zlib from 'node:zlib';

export const GZIP_BLOCK = 1024 * 1024;
const DICT = 32 * 1024;

/**
 * Incompressible blocks (random data, already-compressed files) are stored (level 0) instead of
 * searched for matches: when 8 probes of 4 KiB spread over the block each save under 2% at level 1.
 * Deterministic (a function of the block's bytes only), so digests stay machine-independent.
 */
const PROBE = 4 * 1024;
const PROBES = 8;
function effectiveLevel(data: Buffer, level: number): number {
  if (level === 0 || data.length < 64 * 1024) return level;
  const step = Math.floor((data.length - PROBE) / (PROBES - 1));
  for (let i = 0; i < PROBES; i++) {
    const at = i * step;
    if (zlib.deflateRawSync(data.subarray(at, at + PROBE), { level: 1 }).length < PROBE * 0.98) return level;
  }
  return 0;
}

const WORKER_SRC = `
const { parentPort } = require('node:worker_threads');
const zlib = require('node:zlib');
parentPort.on('message', (m) => {
  try {
    const out = zlib.deflateRawSync(m.data, {
      level: m.level,
      ...(m.dict && m.dict.length ? { dictionary: m.dict } : {}),
      finishFlush: m.last ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH,
    });
    parentPort.postMessage({ id: m.id, out });
  } catch (e) {
    parentPort.postMessage({ id: m.id, error: String(e && e.message || e) });
  }
});`;

type Job = { resolve: (b: Buffer) => void; reject: (e: Error) => void };

/** A small pool of deflate workers shared by every stream of the process; idle workers do not keep it alive. */
class DeflatePool {
  private workers: { w: Worker; busy: number }[] = [];
  private jobs = new Map<number, Job & { slot: { w: Worker; busy: number } }>();
  private nextId = 0;
  constructor(readonly size: number) {}

  private spawn(): { w: Worker; busy: number } {
    // execArgv []: an inherited --input-type=module would make the CommonJS source ESM
    // loaded on first use: a process that never compresses big layers (most tscopy commands) skips node:worker_threads
    const { Worker } = createRequire(import.meta.url)('node:worker_threads') as typeof import('node:worker_threads');
    const w = new Worker(WORKER_SRC, { eval: true, execArgv: [] });
    const slot = { w, busy: 0 };
    w.unref();
    w.on('message', (m: { id: number; out?: Uint8Array; error?: string }) => {
      const j = this.jobs.get(m.id);
      if (!j) return;
      this.jobs.delete(m.id);
      if (--slot.busy === 0) w.unref();
      if (m.error !== undefined) j.reject(new Error(`gzip worker: ${m.error}`));
      else j.resolve(Buffer.from(m.out!.buffer, m.out!.byteOffset, m.out!.byteLength));
    });
    const fail = (e: Error) => {
      this.workers = this.workers.filter((s) => s !== slot);
      for (const [id, j] of this.jobs) {
        if (j.slot !== slot) continue;
        this.jobs.delete(id);
        j.reject(e);
      }
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`gzip worker exited (${code})`)));
    this.workers.push(slot);
    return slot;
  }

  deflate(data: Buffer, dict: Buffer | undefined, last: boolean, level: number): Promise<Buffer> {
    let slot = this.workers.reduce<{ w: Worker; busy: number } | undefined>((a, s) => (!a || s.busy < a.busy ? s : a), undefined);
    if (!slot || (slot.busy > 0 && this.workers.length < this.size)) slot = this.spawn();
    const id = this.nextId++;
    const s = slot;
    return new Promise<Buffer>((resolve, reject) => {
      this.jobs.set(id, { resolve, reject, slot: s });
      if (s.busy++ === 0) s.w.ref();
      s.w.postMessage({ id, data, dict, last, level });
    });
  }
}

let pool: DeflatePool | undefined;
function sharedPool(threads: number): DeflatePool {
  if (!pool || pool.size < threads) pool = new DeflatePool(threads);
  return pool;
}

function deflateInline(data: Buffer, dict: Buffer | undefined, last: boolean, level: number): Buffer {
  return zlib.deflateRawSync(data, {
    level: effectiveLevel(data, level),
    ...(dict && dict.length ? { dictionary: dict } : {}),
    finishFlush: last ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH,
  });
}

/** Default thread count: TSIMAGE_GZIP_THREADS, else the machine's parallelism (1 = deflate inline). */
export function defaultGzipThreads(): number {
  const env = Number(process.env.TSIMAGE_GZIP_THREADS);
  if (Number.isInteger(env) && env >= 1) return env;
  return Math.max(1, availableParallelism());
}

/** zlib.crc32 arrived in Node 20.15 / 22.2: block gzip needs it. */
export const blockGzipAvailable = typeof (zlib as { crc32?: unknown }).crc32 === 'function';
const crc32 = (zlib as unknown as { crc32(d: Uint8Array, v?: number): number }).crc32;

/** A gzip compressor producing pigz-style block output (see the module comment), in parallel. */
export class BlockGzip extends Transform {
  private pending: Buffer[] = [];
  private pendingLen = 0;
  private dict: Buffer | undefined;
  private crc = 0;
  private isize = 0;
  private queue: Promise<Buffer>[] = [];
  private blocks = 0;
  private readonly threads: number;
  private readonly level: number;

  constructor(opts: { level?: number | undefined; threads?: number | undefined } = {}) {
    super({ highWaterMark: GZIP_BLOCK });
    if (!blockGzipAvailable) throw new Error('block gzip needs zlib.crc32 (Node >= 20.15)');
    this.level = opts.level ?? 6;
    this.threads = Math.max(1, opts.threads ?? defaultGzipThreads());
    const xfl = this.level === 9 ? 2 : this.level < 2 ? 4 : 0;
    // as zlib writes it: no name, mtime 0, OS unix
    this.push(Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3]));
  }

  private submit(data: Buffer, last: boolean): void {
    const dict = this.dict;
    if (!last) this.dict = data.length >= DICT ? data.subarray(data.length - DICT) : Buffer.concat([this.dict ?? Buffer.alloc(0), data]).subarray(-DICT);
    this.blocks++;
    // threads from the second block on (the input is large): small layers pay no thread start-up
    // a worker that fails (cannot start, dies) costs speed, not the layer: the same bytes inline
    if (this.threads > 1 && this.blocks > 1)
      this.queue.push(sharedPool(this.threads).deflate(data, dict, last, effectiveLevel(data, this.level)).catch(() => deflateInline(data, dict, last, this.level)));
    else this.queue.push(Promise.resolve(deflateInline(data, dict, last, this.level)));
    // keep the order, and surface a failure only when its turn comes
    this.queue[this.queue.length - 1]!.catch(() => {});
  }

  private cut(): Buffer {
    const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingLen);
    const block = all.subarray(0, GZIP_BLOCK);
    const rest = all.subarray(block.length);
    this.pending = rest.length ? [rest] : [];
    this.pendingLen = rest.length;
    return block;
  }

  private async drain(max: number): Promise<void> {
    while (this.queue.length > max) this.push(await this.queue.shift()!);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.crc = crc32(chunk, this.crc);
    this.isize = (this.isize + chunk.length) >>> 0;
    this.pending.push(chunk);
    this.pendingLen += chunk.length;
    try {
      while (this.pendingLen > GZIP_BLOCK) this.submit(Buffer.from(this.cut()), false);
    } catch (e) {
      cb(e as Error);
      return;
    }
    this.drain(this.threads * 2).then(() => cb(), cb);
  }

  override _flush(cb: TransformCallback): void {
    const rest = this.pendingLen ? Buffer.concat(this.pending, this.pendingLen) : Buffer.alloc(0);
    this.pending = [];
    this.pendingLen = 0;
    try {
      this.submit(rest, true);
    } catch (e) {
      cb(e as Error);
      return;
    }
    this.drain(0).then(() => {
      const t = Buffer.alloc(8);
      t.writeUInt32LE(this.crc >>> 0, 0);
      t.writeUInt32LE(this.isize, 4);
      this.push(t);
      cb();
    }, cb);
  }
}
