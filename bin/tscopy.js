#!/bin/sh
':' //; if [ -n "${NODE_EXTRA_CA_CERTS:-}" ]; then export TSIMAGE_DEFERRED_CA_CERTS="$NODE_EXTRA_CA_CERTS"; unset NODE_EXTRA_CA_CERTS; else unset TSIMAGE_DEFERRED_CA_CERTS; fi; exec node "$0" "$@"
// (line 2: /bin/sh runs it and starts node without NODE_EXTRA_CA_CERTS, see bin/deferred-ca.js; to JavaScript it is a string and a comment)
// Thin launcher: the command's logic lives in dist/src/cli (built by `npm install` via prepare). tscopy starts from
// its bundle (scripts/bundle.mjs: one CommonJS file, run with a V8 code cache by bin/bundle-loader.js; ~60 ms less
// start-up than the modules) unless a later `tsc -b` made it stale, or TSIMAGE_NO_BUNDLE=1.
// CommonJS (bin/package.json), like the loader: an ES module entry starts Node's ESM loader, ~3-6 ms per run.
'use strict';
require('./deferred-ca.js');
const { statSync } = require('node:fs');
const { join } = require('node:path');

const dist = join(__dirname, '..', 'dist');
const mtime = (rel) => statSync(join(dist, rel), { throwIfNoEntry: false })?.mtimeMs ?? 0;
const bundle = join('bundle', 'tscopy', 'tscopy.cjs');
if (process.env.TSIMAGE_NO_BUNDLE !== '1' && mtime(bundle) >= mtime('.tsbuildinfo')) {
  // src/copy/registry/client.ts sets --liftoff-only (which implies --no-wasm-tier-up --no-wasm-dynamic-tiering)
  const resetFlags = ['--no-liftoff-only', '--wasm-tier-up', '--wasm-dynamic-tiering'];
  require('./bundle-loader.js').runBundle('tscopy', join(dist, bundle), { resetFlags });
} else {
  import('../dist/src/cli/tscopy.js').then((m) => m.run());
}
