/** src/oci: the shared core. Imports none of the other modules. */
export * from './errors.js';
export * from './digest.js';
export * from './io.js';
export * from './mediatypes.js';
export * from './manifest.js';
export * from './reference.js';
export * from './platform.js';
export * from './paths.js';
export * from './store.js';
export * from './compress.js';
export { BlockGzip, GZIP_BLOCK, defaultGzipThreads } from './pgzip.js';
export * from './xattr.js';
export * from './tar.js';
export * from './layer.js';
export * from './extract.js';
export * from './base-image.js';
export * from './archive.js';
