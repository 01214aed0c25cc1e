#!/usr/bin/env node
// Thin launcher: the command's logic lives in dist/src/cli (built by `npm install` via prepare). tscopy starts from
// its bundle (scripts/bundle.mjs: one file per command, ~30 ms less start-up) unless a later `tsc -b` made it stale.
import { statSync } from 'node:fs';

const dist = new URL('../dist/', import.meta.url);
const mtime = (rel) => statSync(new URL(rel, dist), { throwIfNoEntry: false })?.mtimeMs ?? 0;
const fresh = process.env.TSIMAGE_NO_BUNDLE !== '1' && mtime('bundle/tscopy/tscopy.js') >= mtime('.tsbuildinfo');
import(fresh ? '../dist/bundle/tscopy/tscopy.js' : '../dist/src/cli/tscopy.js').then((m) => m.run());
