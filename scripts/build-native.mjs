#!/usr/bin/env node
// Builds src/ns's native helper (tsimage-run, a small C program: namespaces, pivot_root, mounts,
// capabilities) into dist/src/ns/native/ with the system C compiler. Runs after `tsc -b` in
// `npm run build`/`prepare`; src/ns also builds it on first use when it is missing or stale.
const { helperPath } = await import('../dist/src/ns/helper.js');
try {
  console.log(`built ${helperPath()}`);
} catch (e) {
  console.error(`build-native: ${e.message}\n(the container runtime needs it; tsregistry and tscopy work without it)`);
}
