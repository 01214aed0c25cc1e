#!/usr/bin/env node
// Thin launcher: the command's logic lives in dist/src/cli (built by `npm install` via prepare). tscopy starts from
// its bundle (scripts/bundle.mjs: one CommonJS file, run with a V8 code cache by bin/bundle-loader.js; ~60 ms less
// start-up than the modules) unless a later `tsc -b` made it stale, or TSIMAGE_NO_BUNDLE=1.
import { statSync } from 'node:fs';

const dist = new URL('../dist/', import.meta.url);
const mtime = (rel) => statSync(new URL(rel, dist), { throwIfNoEntry: false })?.mtimeMs ?? 0;
const bundle = 'bundle/tscopy/tscopy.cjs';
if (process.env.TSIMAGE_NO_BUNDLE !== '1' && mtime(bundle) >= mtime('.tsbuildinfo')) {
  // src/copy/registry/client.ts sets --liftoff-only (implies --no-wasm-tier-up --no-wasm-dynamic-tiering)
  const resetFlags = ['--no-liftoff-only', '--wasm-tier-up', '--wasm-dynamic-tiering'];
  import('./bundle-loader.js').then((l) => l.runBundle('tscopy', new URL(bundle, dist).pathname, { resetFlags }));
} else {
  import('../dist/src/cli/tscopy.js').then((m) => m.run());
}
