#!/usr/bin/env node
// Thin launcher: the command's logic lives in dist/src/cli (built by `npm install` via prepare).
import('../dist/src/cli/tscopy.js').then((m) => m.run());
