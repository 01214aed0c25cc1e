/** src/overlay: layer cache + snapshots (overlayfs, or the copy-based vfs driver) and upperdir -> layer diff. */
export * from './types.js';
export { openSnapshotter, OverlaySnapshotter, BaseSnapshotter } from './snapshotter.js';
export { VfsSnapshotter, applyLayerDir } from './vfs.js';
export { diffUpper, overlayChanges, isWhiteout, type DiffOptions } from './diff.js';
export { mountOverlay, unmount, isMounted, overlaySupported } from './mount.js';
