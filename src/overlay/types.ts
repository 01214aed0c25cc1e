/** Snapshots: writable root filesystems stacked on cached layers, and their changes as layers. */
import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { Io } from '../oci/io.js';
import type { DiffOptions } from './diff.js';

export type Driver = 'overlay' | 'vfs';

export interface Snapshotter {
  readonly driver: Driver;
  readonly root: string;
  /** Is the layer (by diffID) unpacked in the layer cache? */
  hasLayer(diffID: Digest): Promise<boolean>;
  /**
   * Unpack a layer blob (plain, gzip or zstd) into the layer cache once, with the safe extractor;
   * the uncompressed stream must hash to `diffID`, else nothing is kept.
   */
  addLayer(diffID: Digest, blob: Readable | AsyncIterable<Uint8Array>, io?: Io): Promise<void>;
  /** A writable rootfs: the parents (diffIDs, base layer first) plus a fresh empty layer on top. */
  prepare(key: string, parents: Digest[], io?: Io): Promise<{ rootfs: string }>;
  /** The rootfs of a prepared snapshot. */
  rootfs(key: string): string;
  /** The snapshot's changes as an uncompressed OCI layer tar (whiteouts, opaque dirs, xattrs, hardlinks). */
  diff(key: string, opts?: DiffOptions): Readable;
  /**
   * Keep the snapshot's changes in the layer cache as `diffID` (the diffID of what diff() gave), so
   * later snapshots can stack on it without unpacking it again; the snapshot is removed.
   */
  commit(key: string, diffID: Digest): Promise<void>;
  /** Unmount and delete a snapshot (no error when it does not exist). */
  remove(key: string): Promise<void>;
  /** Remove every snapshot this process still holds. */
  close(): Promise<void>;
}

export type SnapshotterOptions = {
  /** State root (default: defaultRoot(), i.e. $TSIMAGE_ROOT or /var/lib/tsimage): layers/ and containers/ go under it. */
  root?: string;
  /** 'auto' (default): overlay when this process can mount overlayfs there, else vfs with a notice. */
  driver?: Driver | 'auto';
  /** Where notices go (default: stderr). */
  notice?: (msg: string) => void;
};
