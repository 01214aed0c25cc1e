/**
 * The storage seam (as distribution's storagedriver.go): bytes at slash-separated paths,
 * nothing OCI-specific. The filesystem driver implements it; an S3-compatible driver can
 * later. The OCI meaning (blobs, links, manifests, tags, uploads) lives in store.ts above it.
 *
 * Paths are absolute within the driver ("/blobs/sha256/ab/ab12..."), never contain "..",
 * and are built only by paths.ts.
 */
import type { Readable, Writable } from 'node:stream';
import { TsimageError } from '../oci/index.js';

export interface FileInfo {
  path: string;
  size: number;
  modTime: Date;
  isDir: boolean;
}

/** An open writer: data is only visible at its path after commit() (or, in append mode, as it is written). */
export interface FileWriter extends Writable {
  /** Bytes in the file, including what existed before an append. */
  readonly size: number;
  /** Flush and make durable (fsync). */
  commit(): Promise<void>;
  /** Abandon: close and remove what this writer created. */
  cancel(): Promise<void>;
}

export interface StorageDriver {
  readonly name: string;
  /** Whole small file (links, tags, manifests). PathNotFoundError when absent. */
  getContent(path: string): Promise<Buffer>;
  /** Write a small file atomically (temp + fsync + rename). */
  putContent(path: string, content: Uint8Array | string): Promise<void>;
  /** Stream a file from an offset (and optionally up to an inclusive end). */
  reader(path: string, offset?: number, end?: number): Promise<Readable>;
  /** Open a writer; append=true continues an existing file (upload sessions). */
  writer(path: string, append: boolean): Promise<FileWriter>;
  stat(path: string): Promise<FileInfo>;
  /** Names (not paths) of the direct children of a directory; [] when it does not exist. */
  list(path: string): Promise<string[]>;
  /** Atomic rename; replaces an existing destination. */
  move(from: string, to: string): Promise<void>;
  /** Delete a file or a whole directory tree; no error when absent. */
  delete(path: string): Promise<void>;
  /**
   * Optional: a local filesystem path for a driver path (fast paths such as
   * `fs.createReadStream` with a large highWaterMark). S3 drivers leave it out.
   */
  localPath?(path: string): string;
}

export class PathNotFoundError extends TsimageError {
  constructor(readonly path: string, options?: { cause?: unknown }) {
    super(`storage path not found: ${path}`, options);
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof PathNotFoundError || (typeof err === 'object' && err !== null && (err as { code?: string }).code === 'ENOENT');
}
