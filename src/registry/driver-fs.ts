/**
 * Filesystem StorageDriver: driver paths map under a root directory. Small files are
 * written atomically (temp file in the same directory + fsync + rename); writers append
 * to upload data files with positional writes and fsync on commit.
 */
import { createReadStream, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { PathNotFoundError, type FileInfo, type FileWriter, type StorageDriver } from './driver.js';

export interface FsDriverOptions {
  /** fsync files (and their directory after a rename) before acknowledging. Default true. */
  fsync?: boolean;
  /** Read buffer size for streaming blobs (default 1 MiB). */
  readBufferSize?: number;
}

function checkPath(p: string): void {
  if (!p.startsWith('/') || p.split('/').some((s) => s === '..' || s === '.')) throw new Error(`invalid storage path ${JSON.stringify(p)}`);
}

function notFound(p: string, e: unknown): never {
  if ((e as { code?: string }).code === 'ENOENT' || (e as { code?: string }).code === 'ENOTDIR') throw new PathNotFoundError(p, { cause: e });
  throw e;
}

class FsFileWriter extends Writable implements FileWriter {
  private pos: number;
  private fhClosed = false;
  constructor(
    private readonly fh: FileHandle,
    private readonly file: string,
    start: number,
    private readonly created: boolean,
    private readonly doSync: boolean,
  ) {
    super({ highWaterMark: 4 * 1024 * 1024 });
    this.pos = start;
  }
  get size(): number {
    return this.pos;
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.writeAll([chunk]).then(() => cb(), cb);
  }
  override _writev(chunks: { chunk: Buffer }[], cb: (e?: Error | null) => void): void {
    this.writeAll(chunks.map((c) => c.chunk)).then(() => cb(), cb);
  }
  private async writeAll(bufs: Buffer[]): Promise<void> {
    let total = 0;
    for (const b of bufs) total += b.length;
    let written = 0;
    let list = bufs;
    while (written < total) {
      const { bytesWritten } = await this.fh.writev(list, this.pos);
      this.pos += bytesWritten;
      written += bytesWritten;
      if (written < total) {
        // partial write: rebuild the remaining list
        let skip = bytesWritten;
        const rest: Buffer[] = [];
        for (const b of list) {
          if (skip >= b.length) {
            skip -= b.length;
            continue;
          }
          rest.push(skip ? b.subarray(skip) : b);
          skip = 0;
        }
        list = rest;
      }
    }
  }
  override _final(cb: (e?: Error | null) => void): void {
    cb();
  }
  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    this.close().then(
      () => cb(err),
      () => cb(err),
    );
  }
  private async close(): Promise<void> {
    if (this.fhClosed) return;
    this.fhClosed = true;
    await this.fh.close();
  }
  async commit(): Promise<void> {
    if (!this.writableFinished && !this.destroyed) {
      await new Promise<void>((resolve, reject) => {
        this.once('error', reject);
        this.end(() => resolve());
      });
    }
    if (this.doSync && !this.fhClosed) await this.fh.sync();
    await this.close();
  }
  async cancel(): Promise<void> {
    this.destroy();
    await this.close().catch(() => {});
    if (this.created) await fsp.rm(this.file, { force: true });
  }
}

export class FilesystemDriver implements StorageDriver {
  readonly name = 'filesystem';
  readonly fsync: boolean;
  readonly readBufferSize: number;
  constructor(
    readonly root: string,
    opts: FsDriverOptions = {},
  ) {
    this.fsync = opts.fsync ?? true;
    this.readBufferSize = opts.readBufferSize ?? 1024 * 1024;
  }

  localPath(p: string): string {
    checkPath(p);
    return join(this.root, p);
  }

  async getContent(p: string): Promise<Buffer> {
    try {
      return await fsp.readFile(this.localPath(p));
    } catch (e) {
      notFound(p, e);
    }
  }

  async putContent(p: string, content: Uint8Array | string): Promise<void> {
    const file = this.localPath(p);
    const tmp = `${file}.tmp-${randomBytes(6).toString('hex')}`;
    const write = async () => {
      const fh = await fsp.open(tmp, 'wx', 0o644);
      try {
        await fh.writeFile(content);
        if (this.fsync) await fh.sync();
      } finally {
        await fh.close();
      }
    };
    try {
      try {
        await write();
      } catch (e) {
        if ((e as { code?: string }).code !== 'ENOENT') throw e;
        await fsp.mkdir(dirname(file), { recursive: true });
        await write();
      }
      await fsp.rename(tmp, file);
      if (this.fsync) await this.syncDir(dirname(file));
    } catch (e) {
      await fsp.rm(tmp, { force: true }).catch(() => {});
      throw e;
    }
  }

  private async syncDir(dir: string): Promise<void> {
    let fh: FileHandle | undefined;
    try {
      fh = await fsp.open(dir, 'r');
      await fh.sync();
    } catch {
      // directories that cannot be opened/synced (some filesystems) are not fatal
    } finally {
      await fh?.close().catch(() => {});
    }
  }

  async reader(p: string, offset = 0, end?: number): Promise<Readable> {
    const file = this.localPath(p);
    let fh: FileHandle;
    try {
      fh = await fsp.open(file, 'r');
    } catch (e) {
      notFound(p, e);
    }
    const opts: Parameters<typeof createReadStream>[1] = { fd: fh, start: offset, highWaterMark: this.readBufferSize };
    if (end !== undefined) opts.end = end;
    return createReadStream(file, opts);
  }

  async writer(p: string, append: boolean): Promise<FileWriter> {
    const file = this.localPath(p);
    await fsp.mkdir(dirname(file), { recursive: true });
    let fh: FileHandle;
    let created = false;
    if (append) {
      try {
        fh = await fsp.open(file, 'r+');
      } catch (e) {
        if ((e as { code?: string }).code !== 'ENOENT') throw e;
        fh = await fsp.open(file, 'w+', 0o644);
        created = true;
      }
    } else {
      fh = await fsp.open(file, 'w', 0o644);
      created = true;
    }
    const st = await fh.stat();
    return new FsFileWriter(fh, file, append ? st.size : 0, created, this.fsync);
  }

  async stat(p: string): Promise<FileInfo> {
    try {
      const st = await fsp.stat(this.localPath(p));
      return { path: p, size: st.size, modTime: st.mtime, isDir: st.isDirectory() };
    } catch (e) {
      notFound(p, e);
    }
  }

  async list(p: string): Promise<string[]> {
    try {
      return (await fsp.readdir(this.localPath(p))).filter((n) => !n.includes('.tmp-'));
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return [];
      throw e;
    }
  }

  async move(from: string, to: string): Promise<void> {
    const a = this.localPath(from);
    const b = this.localPath(to);
    try {
      await fsp.rename(a, b);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code !== 'ENOENT') throw e;
      try {
        await fsp.stat(a);
      } catch (e2) {
        notFound(from, e2);
      }
      await fsp.mkdir(dirname(b), { recursive: true });
      await fsp.rename(a, b);
    }
    if (this.fsync) await this.syncDir(dirname(b));
  }

  async delete(p: string): Promise<void> {
    await fsp.rm(this.localPath(p), { recursive: true, force: true });
  }
}
