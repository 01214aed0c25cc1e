// Runs a CommonJS bundle (scripts/bundle.mjs) with a V8 code cache, so a short CLI command does not parse and
// compile the same ~2 MB of JavaScript on every run: the first run of a command compiles as usual and, at exit,
// stores what V8 compiled (vm.Script#createCachedData, made after the run so it holds every function the run
// needed); later runs deserialize it instead (~30 ms less per run of tscopy). The run that makes the cache keeps
// V8 from flushing the bytecode of functions it has not called lately (--no-flush-bytecode, reset before the cache
// is made): else a long first run (a 1 s copy) drops its start-up functions before exit and every later short
// run compiles them again (a no-op copy: 140 ms instead of 112).
//
// Cache: $TSIMAGE_CODE_CACHE (a directory; `none` or empty turns it off), else ${XDG_CACHE_HOME:-$HOME/.cache}/tsimage/
// code-cache. One file per tool, installation, command (the first non-option argument: `copy`, `sync`... compile
// different functions), bundle (the hash scripts/bundle.mjs writes next to it), Node version and architecture.
// Written atomically (temp + rename) only when missing or rejected by V8, and only after a successful run; files
// of other bundles/Node versions of the same installation are removed then. A cache that cannot be read or written,
// or is corrupt (V8 checks its version, flags, source length and a checksum, and rejects it), changes nothing: the
// command compiles as without a cache and every error here is ignored.
// TSIMAGE_DEBUG=code-cache (or a comma list containing it) prints what happened to stderr.
// CommonJS (bin/package.json): an ES module entry costs Node's ESM loader start-up, ~3-6 ms per run.
'use strict';
const { mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } = require('node:fs');
const { createRequire } = require('node:module');
const { basename, dirname, join } = require('node:path');
const { setFlagsFromString } = require('node:v8');
const { Script } = require('node:vm');

const debug = (process.env.TSIMAGE_DEBUG ?? '').split(',').includes('code-cache');
const say = (msg) => debug && process.stderr.write(`code-cache: ${msg}\n`);

/** The cache directory, or undefined when turned off (or no place for it). */
function cacheDir() {
  const env = process.env.TSIMAGE_CODE_CACHE;
  if (env !== undefined) return env === '' || env === 'none' ? undefined : env;
  const base = process.env.XDG_CACHE_HOME || join(process.env.HOME || require('node:os').homedir(), '.cache');
  return join(base, 'tsimage', 'code-cache');
}

/** FNV-1a of a string, 8 hex digits (names the installation in cache file names; no crypto module at start-up). */
function fnv(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}

/** What the cache of this run is for: the command, or `help` (a help text compiles little). */
function commandOf(argv) {
  if (argv.includes('--help') || argv.includes('-h')) return 'help';
  const cmd = argv.find((a) => !a.startsWith('-'));
  return cmd && /^[a-z][a-z0-9-]{0,39}$/.test(cmd) ? cmd : 'none';
}

/**
 * Compile and run `file` (a CommonJS bundle exporting run()) as `tool`, with the code cache.
 * resetFlags: V8 flags that undo what the bundle sets at run time (v8.setFlagsFromString), applied before the cache
 * is made. V8 stores its flags' hash in the cache and rejects a cache made under other flags than the compile's; and
 * flags are only set after start-up, since after a flag change Node compiles its built-in modules from source.
 */
function runBundle(tool, file, { resetFlags = [] } = {}) {
  const source = readFileSync(file, 'latin1'); // ASCII (scripts/bundle.mjs makes it so)
  let dir, cacheFile, prefix, key, cached;
  try {
    dir = cacheDir();
    if (dir) {
      const id = readFileSync(`${file}.id`, 'utf8').trim();
      if (!/^[0-9a-f]{8,64}$/.test(id)) throw new Error('no bundle id');
      prefix = `${tool}-${fnv(file)}-`;
      key = `${id}-${process.version}-${process.arch}`;
      cacheFile = join(dir, `${prefix}${commandOf(process.argv.slice(2))}-${key}.v8`);
      cached = readFileSync(cacheFile);
    }
  } catch {}
  // Node's CommonJS wrapper, on the source's first line: line numbers in stack traces stay the file's
  const wrapper = `(function (exports, require, module, __filename, __dirname) { ${source}\n})`;
  // V8 checks a cache's version, flags and source length, but its payload only with this flag (a cache damaged on
  // disk would crash the process): on while compiling and while making the cache, off again at once (see above)
  if (cached) setFlagsFromString('--verify-snapshot-checksum');
  // (no import() in the bundle: scripts/bundle.mjs checks. A vm.Script's import() needs importModuleDynamically,
  // which Node 20 loses on a script deserialized from a code cache.)
  const script = new Script(wrapper, { filename: file, cachedData: cached });
  if (cached) setFlagsFromString('--no-verify-snapshot-checksum');
  const accepted = cached !== undefined && !script.cachedDataRejected;
  say(!cacheFile ? 'off' : accepted ? `accepted ${cacheFile}` : `${cached ? 'rejected' : 'missing'} ${cacheFile}`);
  if (cacheFile && !accepted) {
    setFlagsFromString('--no-flush-bytecode');
    process.once('exit', (code) => {
      if (code !== 0) return; // a failed run compiled too little of the command to be worth keeping
      const tmp = join(dir, `.${basename(cacheFile)}.${process.pid}.tmp`);
      try {
        for (const f of [...resetFlags, '--flush-bytecode']) setFlagsFromString(f);
        setFlagsFromString('--verify-snapshot-checksum');
        const data = script.createCachedData();
        mkdirSync(dir, { recursive: true });
        try {
          writeFileSync(tmp, data);
          renameSync(tmp, cacheFile);
        } catch (e) {
          try {
            unlinkSync(tmp);
          } catch {}
          throw e;
        }
        say(`wrote ${cacheFile} (${data.length} bytes)`);
        // this installation's caches for other bundles or Node versions, and temp files a killed run left
        for (const f of readdirSync(dir)) {
          const stale = f.startsWith(prefix) && !f.endsWith(`-${key}.v8`);
          const leftTmp = f.startsWith(`.${prefix}`) && f.endsWith('.tmp') && !f.endsWith(`.${process.pid}.tmp`);
          if (stale || (leftTmp && Date.now() - statSync(join(dir, f)).mtimeMs > 600_000)) {
            try {
              unlinkSync(join(dir, f));
            } catch {}
          }
        }
      } catch {}
    });
  }
  const module = { exports: {} };
  script.runInThisContext()(module.exports, createRequire(file), module, file, dirname(file));
  return module.exports.run();
}

module.exports = { runBundle };
