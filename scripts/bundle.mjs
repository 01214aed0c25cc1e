#!/usr/bin/env node
// Bundles tscopy (dist/src/cli/tscopy.js and everything it imports) into one CommonJS file,
// dist/bundle/tscopy/tscopy.cjs, with esbuild. Runs after `tsc -b` in `npm run build`/`prepare`/`test`/`bench`.
//
// Why: tscopy is a short-lived CLI (skopeo's whole no-op copy is ~40 ms). Node resolves, reads and compiles each of
// the ~150 ES modules of a docker:// copy one by one; one file costs ~30 ms less per run. One CommonJS file (not ESM
// chunks) so that bin/tscopy-loader.cjs can compile it with a V8 code cache (vm.Script cachedData): a later run
// deserializes the functions the first run compiled instead of parsing and compiling them again (~30 ms less).
// The lazily loaded commands stay lazy: esbuild turns `await import()` into a call of the module's init function.
//
// Next to the bundle: tscopy.cjs.id, a hash of its bytes (the code cache's file name includes it, so a new bundle
// never meets an old cache: V8 itself checks only the source's length). bin/tscopy.js loads the bundle only when it
// is newer than the last `tsc -b` (dist/.tsbuildinfo), else the modules themselves: a stale bundle never runs.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const outdir = `${root}dist/bundle/tscopy`;
const outfile = `${outdir}/tscopy.cjs`;
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: [`${root}dist/src/cli/tscopy.js`],
  outfile,
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  // native addons stay packages (loaded through createRequire(import.meta.url) at run time: node_modules is found
  // walking up from dist/bundle/tscopy)
  external: ['zstd-napi', '@node-rs/*', '@napi-rs/*'],
  // the modules' import.meta.url is the bundle's URL (CommonJS has no import.meta)
  define: { 'import.meta.url': '__tsimageImportMetaUrl' },
  banner: { js: "const __tsimageImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  logLevel: 'warning',
  legalComments: 'none',
});
// bin/bundle-loader.js runs the bundle as a vm.Script, where import() does not work (Node 20 loses the script's
// importModuleDynamically when it comes from a code cache): every import() must have been bundled (a literal path)
const dynamic = readFileSync(outfile, 'utf8')
  .split('\n')
  .map((line, i) => [i + 1, line])
  .filter(([, line]) => /(^|[^\w$.])import\(/.test(line) && !/^\s*(\*|\/\/|\/\*)/.test(line));
if (dynamic.length) {
  rmSync(outdir, { recursive: true, force: true });
  throw new Error(`bundle.mjs: import() left in the bundle (use a literal path so that esbuild bundles it):\n${dynamic.map(([n, l]) => `  tscopy.cjs:${n}: ${l.trim()}`).join('\n')}`);
}
// written last: the launcher checks the bundle's mtime against dist/.tsbuildinfo, the loader reads the id
const id = createHash('sha256').update(readFileSync(outfile)).digest('hex').slice(0, 16);
writeFileSync(`${outfile}.id`, `${id}\n`);
console.log(`bundled ${outfile} (${id})`);
