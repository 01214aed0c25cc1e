#!/usr/bin/env node
// Bundles tscopy (dist/src/cli/tscopy.js and everything it imports, lazily loaded commands kept as separate chunks)
// into dist/bundle/tscopy/ with esbuild. Runs after `tsc -b` in `npm run build`/`prepare`/`test`/`bench`.
//
// Why: tscopy is a short-lived CLI (a no-op copy is ~150 ms, and skopeo's whole run is ~40 ms). Node resolves,
// reads and compiles each of the ~150 ES modules of a docker:// copy one by one; one file per command chunk
// costs ~30 ms less per run (measured: no-op copy 180 -> 150 ms). bin/tscopy.js loads the bundle only when it is
// newer than the last `tsc -b` (dist/.tsbuildinfo), else the modules themselves: a stale bundle never runs.
import { build } from 'esbuild';
import { rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const outdir = `${root}dist/bundle/tscopy`;
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: { tscopy: `${root}dist/src/cli/tscopy.js` },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // native addons stay packages (loaded through createRequire at run time)
  external: ['zstd-napi', '@node-rs/*', '@napi-rs/*'],
  // CommonJS dependencies (commander, fastq...) call require() for Node's built-ins
  banner: { js: "import { createRequire as __tsimageRequire } from 'node:module'; const require = __tsimageRequire(import.meta.url);" },
  logLevel: 'warning',
  legalComments: 'none',
});
writeFileSync(`${outdir}/package.json`, '{"type":"module"}\n');
console.log(`bundled ${outdir}`);
