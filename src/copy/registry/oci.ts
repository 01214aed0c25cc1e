/**
 * The parts of src/oci the registry client needs, imported file by file: src/oci/index.ts also loads the layout
 * store, tar, compression and archives (native addons included), which `tscopy login/list-tags/delete` and a
 * registry-only copy path do not need at start-up.
 */
export * from '../../oci/errors.js';
export * from '../../oci/digest.js';
export * from '../../oci/io.js';
export * from '../../oci/mediatypes.js';
export * from '../../oci/reference.js';
export { parseManifest, type Descriptor } from '../../oci/manifest.js';
