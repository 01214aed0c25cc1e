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
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

/**
 * Start-up trims in dependencies' code, by exact text (a dependency update that changes the text only loses the
 * trim: a warning, never a failed build). Each defers a Node built-in a tscopy command seldom needs to its first use.
 */
const lazyRequires = [
  // undici's HTTP/2 client (node:http2, ~3 ms to load) is loaded by every Client; tscopy never enables allowH2
  { file: /undici\/lib\/dispatcher\/client\.js$/, from: "const connectH2 = require('./client-h2.js')",
    to: "let connectH2Mod\nconst connectH2 = (client, socket) => (connectH2Mod ??= require('./client-h2.js'))(client, socket)" },
  // commander spawns only for executable subcommands, which tscopy has none of (node:child_process loads net, dgram)
  { file: /commander\/lib\/command\.js$/, from: "const childProcess = require('node:child_process');",
    to: "const childProcess = { spawn: (...args) => require('node:child_process').spawn(...args) };" },
  // undici calls assert(x) only (node:assert: ~1 ms)
  { file: /undici\/lib\/.*\.js$/, all: true, from: "const assert = require('node:assert')",
    to: "const assert = (value, message) => { if (!value) require('node:assert')(value, message) }" },
];
const trims = {
  name: 'tsimage-start-up-trims',
  setup(b) {
    // client.ts imports undici's deep modules and the package's index only if those paths do not exist, which in the
    // bundle cannot happen (esbuild fails the build first): the index (fetch, WebSocket, mocks, caches: about half
    // of the bundle's text) is left out
    b.onResolve({ filter: /^undici$/ }, () => ({ path: 'undici', namespace: 'tsimage-stub' }));
    b.onLoad({ filter: /.*/, namespace: 'tsimage-stub' }, () => ({
      contents: "throw new Error('undici: the package index is not in the bundle (scripts/bundle.mjs)');",
      loader: 'js',
    }));
    const seen = new Set();
    b.onLoad({ filter: /node_modules\/(undici|commander)\/lib\/.*\.js$/ }, async (args) => {
      let text = await readFile(args.path, 'utf8');
      for (const [i, r] of lazyRequires.entries()) {
        if (!r.file.test(args.path) || !text.includes(r.from)) continue;
        text = r.all ? text.replaceAll(r.from, r.to) : text.replace(r.from, r.to);
        seen.add(i);
      }
      return { contents: text, loader: 'js' };
    });
    b.onEnd(() => {
      for (const [i, r] of lazyRequires.entries()) if (!seen.has(i)) console.warn(`bundle.mjs: start-up trim not applied (dependency changed?): ${r.from}`);
    });
  },
};
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
  plugins: [trims],
  logLevel: 'warning',
  legalComments: 'none',
});
// ASCII only, so that bin/bundle-loader.js reads it as latin1 (0.6 ms less than utf8) and V8 keeps it a one-byte
// string. esbuild escapes non-ASCII code already; what is left is in comments, where \uXXXX is as good (and in a
// string, regular expression or identifier it would mean the same character).
let text = readFileSync(outfile, 'utf8');
if (/[^\x00-\x7f]/.test(text)) {
  text = text.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  writeFileSync(outfile, text);
}
// bin/bundle-loader.js runs the bundle as a vm.Script, where import() does not work (Node 20 loses the script's
// importModuleDynamically when it comes from a code cache): every import() must have been bundled (a literal path)
const dynamic = text
  .split('\n')
  .map((line, i) => [i + 1, line])
  .filter(([, line]) => /(^|[^\w$.])import\(/.test(line) && !/^\s*(\*|\/\/|\/\*)/.test(line));
if (dynamic.length) {
  rmSync(outdir, { recursive: true, force: true });
  throw new Error(`bundle.mjs: import() left in the bundle (use a literal path so that esbuild bundles it):\n${dynamic.map(([n, l]) => `  tscopy.cjs:${n}: ${l.trim()}`).join('\n')}`);
}
// written last: the launcher checks the bundle's mtime against dist/.tsbuildinfo, the loader reads the id
const id = createHash('sha256').update(text).digest('hex').slice(0, 16);
writeFileSync(`${outfile}.id`, `${id}\n`);
console.log(`bundled ${outfile} (${id})`);
