/**
 * One upstream download of a blob into the mirror's cache, shared by every request for that
 * digest while it runs (MirrorStore keeps them in a map by digest).
 *
 * The download is written to an upload file at the upstream's pace, never paced by a client.
 * Each client reads that file through its own FillReader as it grows (positional reads on one
 * shared read-only handle): no client waits for the whole blob, a slow client does not slow the
 * others or the download, and nothing is buffered in memory beyond a read chunk. The last byte
 * of the blob is held back until the digest is verified, so a client never receives a complete
 * response for bytes that turn out to be wrong: a fill that fails (upstream gone mid-body,
 * digest mismatch, disk error) breaks every reader's response before its end.
 */
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';

const READ_CHUNK = 1024 * 1024;

export class BlobFill {
  /** Bytes written to the file and readable through the handle. */
  written = 0;
  /** The digest was checked: every written byte may be served. */
  verified = false;
  /** Why the fill failed (before verification); readers fail with it. */
  error: Error | undefined;
  /** The size the upstream announced (Content-Length), when known. */
  size: number | undefined;
  /** Repositories whose clients asked for the blob during the fill (linked when it is cached). */
  readonly repos = new Set<string>();
  /** Resolves when the first bytes are readable (or the fill ends); rejects when it fails first. */
  readonly ready: Promise<void>;
  /** Resolves when the fill is over, whatever the outcome. */
  readonly settled: Promise<void>;
  private resolveReady!: () => void;
  private rejectReady!: (e: Error) => void;
  private resolveSettled!: () => void;
  private wakers: (() => void)[] = [];
  private fh: FileHandle | undefined;
  /** The fill's own reference plus one per open reader. */
  private refs = 1;

  constructor(readonly digest: string) {
    this.ready = new Promise<void>((res, rej) => {
      this.resolveReady = res;
      this.rejectReady = rej;
    });
    this.ready.catch(() => {});
    this.settled = new Promise<void>((res) => (this.resolveSettled = res));
  }

  /** The read handle on the file being written (undefined: the driver has no local files). */
  setHandle(fh: FileHandle | undefined): void {
    this.fh = fh;
  }

  get readable(): boolean {
    return this.fh !== undefined;
  }

  /** `n` more bytes are in the file. */
  progress(n: number): void {
    this.written += n;
    if (this.written > 0) this.resolveReady();
    this.wake();
  }

  /** The whole blob is in the file and its digest matched. */
  verify(): void {
    this.verified = true;
    this.resolveReady();
    this.wake();
  }

  /** The fill failed before verification: every reader fails with `e`. */
  fail(e: Error): void {
    if (this.verified) return;
    this.error = e;
    this.rejectReady(e);
    this.wake();
  }

  /** The fill is over (after verify or fail): drop the fill's handle reference. */
  finish(): void {
    this.resolveReady();
    this.release();
    this.resolveSettled();
    this.wake();
  }

  /** Resolves on the next change (bytes, verification, failure). */
  changed(): Promise<void> {
    return new Promise((res) => this.wakers.push(res));
  }

  private wake(): void {
    const w = this.wakers;
    this.wakers = [];
    for (const f of w) f();
  }

  private release(): void {
    if (--this.refs === 0 && this.fh) {
      const fh = this.fh;
      this.fh = undefined;
      void fh.close().catch(() => {});
    }
  }

  /** A stream of bytes [start, end] (inclusive; end undefined = to the end of the blob) as they arrive. */
  reader(start: number, end: number | undefined): Readable {
    if (!this.fh) throw new Error(`blob fill ${this.digest}: no readable file`);
    this.refs++;
    return new FillReader(this, this.fh, start, end, () => this.release());
  }
}

class FillReader extends Readable {
  private pos: number;
  private pumping = false;
  private wanted = false;
  private released = false;

  constructor(
    private readonly fill: BlobFill,
    private readonly fh: FileHandle,
    start: number,
    private readonly end: number | undefined,
    private readonly onRelease: () => void,
  ) {
    super({ highWaterMark: READ_CHUNK });
    this.pos = start;
  }

  override _read(): void {
    this.wanted = true;
    if (!this.pumping) void this.pump();
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      const f = this.fill;
      const stop = this.end === undefined ? Infinity : this.end + 1;
      while (this.wanted && !this.destroyed) {
        if (f.error) throw f.error;
        if (this.pos >= stop || (f.verified && this.pos >= f.written)) {
          this.push(null);
          return;
        }
        // the blob's last byte goes out only once the digest is verified
        const avail = Math.min(stop, f.verified ? f.written : f.written - 1);
        if (this.pos >= avail) {
          await f.changed();
          continue;
        }
        const len = Math.min(READ_CHUNK, avail - this.pos);
        const buf = Buffer.allocUnsafe(len);
        const { bytesRead } = await this.fh.read(buf, 0, len, this.pos);
        if (this.destroyed) return;
        if (bytesRead === 0) throw new Error(`blob fill ${f.digest}: the cache file ended at ${this.pos} bytes, ${f.written} were written`);
        this.pos += bytesRead;
        this.wanted = false;
        if (this.push(bytesRead === len ? buf : buf.subarray(0, bytesRead))) this.wanted = true;
      }
    } catch (e) {
      this.destroy(e as Error);
    } finally {
      this.pumping = false;
    }
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    if (!this.released) {
      this.released = true;
      this.onRelease();
    }
    cb(err);
  }
}
