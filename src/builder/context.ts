/**
 * The build context: a directory filtered by `.dockerignore` (Docker's patternmatcher
 * semantics via @balena/dockerignore: `**`, `!` exceptions, last match wins, a pattern that
 * matches a directory excludes everything below it), and content hashes of its files.
 *
 * Hashes are xxh3 (local cache keys only; never leaves the machine) and go through a
 * persistent stat cache (path, size, mtime, ctime, inode, mode -> hash), so a file whose
 * stat is unchanged since the last build is not read again. The stat cache lives under the
 * build cache dir (`<root>/cache/statcache/<sha256 of the context path>.json`) and is written
 * atomically (temp + fsync + rename).
 *
 * Ignore file lookup (BuildKit + podman): an explicit `ignoreFile`, else
 * `<Dockerfile>.dockerignore` beside the Dockerfile (also `<Containerfile>.containerignore`),
 * else `<context>/.containerignore`, else `<context>/.dockerignore`. The Dockerfile and the
 * ignore file are read by the builder even when ignored (as docker does); they are just not
 * COPY-able then.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants as FS, lstatSync, openSync, readSync, type BigIntStats, type Stats } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { TsimageError, UsageError, writeFileAtomic as writeOciFileAtomic } from '../oci/index.js';
import { defaultRoot } from '../oci/paths.js';

type XxhMod = typeof import('@node-rs/xxhash');
let xxhMod: XxhMod | undefined;
function xxh(): XxhMod {
  xxhMod ??= createRequire(import.meta.url)('@node-rs/xxhash') as XxhMod;
  return xxhMod;
}
type IgnoreMod = typeof import('@balena/dockerignore');
let ignoreMod: IgnoreMod['default'] | undefined;
function ignoreFactory(): IgnoreMod['default'] {
  if (!ignoreMod) {
    const m = createRequire(import.meta.url)('@balena/dockerignore') as IgnoreMod & { default?: IgnoreMod['default'] };
    ignoreMod = (m.default ?? m) as IgnoreMod['default'];
  }
  return ignoreMod;
}

/** Files up to this size are hashed in one call (xxh3-128); bigger ones are streamed (xxh3-64). */
const WHOLE_READ_MAX = 8 * 1024 * 1024;

/** xxh3 of a buffer: `x128:<hex>` (the format of small files). */
export function xxh3Hex(data: Uint8Array | string): string {
  return 'x128:' + xxh().xxh3.xxh128(data).toString(16).padStart(32, '0');
}

/** Hash a file's content (xxh3; `x128:` for files up to 8 MiB, else streamed `x64:`). */
export async function hashFileContent(path: string, size: number, counters?: { bytesRead: number; filesRead: number }): Promise<string> {
  if (counters) counters.filesRead++;
  if (size <= WHOLE_READ_MAX) {
    const buf = await fsp.readFile(path);
    if (counters) counters.bytesRead += buf.length;
    // a file that grew past the limit while we read keeps the small-file format; the stat check catches it next time
    return xxh3Hex(buf);
  }
  const h = xxh().xxh3.Xxh3.withSeed();
  const fh = await fsp.open(path, FS.O_RDONLY | FS.O_NOFOLLOW);
  try {
    const buf = Buffer.allocUnsafe(1024 * 1024);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
      if (counters) counters.bytesRead += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return 'x64:' + h.digest().toString(16).padStart(16, '0');
}

// ---------------------------------------------------------------------------------------------
// Patterns

/** A Go path.Match / filepath.Match pattern as a RegExp over one path (`*` and `?` stop at `/`). */
export function goPatternRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '\\') {
      i++;
      if (i >= pattern.length) throw new UsageError(`syntax error in pattern ${JSON.stringify(pattern)}: trailing backslash`);
      re += escapeRe(pattern[i]!);
    } else if (c === '[') {
      let j = i + 1;
      let cls = '';
      if (pattern[j] === '^') {
        cls += '^';
        j++;
      }
      let first = true;
      for (; j < pattern.length && (pattern[j] !== ']' || first); j++) {
        first = false;
        let ch = pattern[j]!;
        if (ch === '\\') {
          j++;
          if (j >= pattern.length) break;
          ch = pattern[j]!;
        }
        cls += ch === '-' && cls.length > 0 && pattern[j + 1] !== ']' ? '-' : escapeRe(ch);
      }
      if (j >= pattern.length) throw new UsageError(`syntax error in pattern ${JSON.stringify(pattern)}: unterminated [`);
      if (cls === '' || cls === '^') throw new UsageError(`syntax error in pattern ${JSON.stringify(pattern)}: empty character class`);
      re += `(?!/)[${cls}]`;
      i = j;
    } else re += escapeRe(c);
  }
  return new RegExp(`^${re}$`, 's');
}

function escapeRe(c: string): string {
  return /[\\^$.*+?()[\]{}|/-]/.test(c) ? '\\' + c : c;
}

export function hasWildcard(p: string): boolean {
  return /[*?[\\]/.test(p);
}

/** A Docker-semantics ignore matcher (patternmatcher): exceptions, `**`, last match wins, parents excluded. */
export class IgnoreMatcher {
  readonly patterns: string[];
  private readonly ig: ReturnType<IgnoreMod['default']> | undefined;
  private readonly exceptions: string[][];
  constructor(patterns: readonly string[]) {
    this.patterns = patterns.map((p) => p.trim()).filter((p) => p && !p.startsWith('#'));
    this.ig = this.patterns.length ? ignoreFactory()().add(this.patterns) : undefined;
    this.exceptions = this.patterns
      .filter((p) => p.startsWith('!'))
      .map((p) => cleanPosix(p.slice(1).trim()).split('/').filter(Boolean));
  }
  get empty(): boolean {
    return !this.ig;
  }
  /** Is the context-relative path (posix, no leading `/`) excluded? */
  ignores(rel: string): boolean {
    if (!this.ig || rel === '' || rel === '.') return false;
    return this.ig.ignores(rel);
  }
  /**
   * Could an exception pattern re-include something below the excluded directory `rel`?
   * (then the walk must still descend into it, as fsutil does).
   */
  mayIncludeBelow(rel: string): boolean {
    if (!this.exceptions.length) return false;
    const parts = rel.split('/');
    for (const ex of this.exceptions) {
      let ok = true;
      for (let i = 0; i < parts.length && i < ex.length; i++) {
        const pc = ex[i]!;
        if (pc === '**') break;
        if (!goPatternRegExp(pc).test(parts[i]!)) {
          ok = false;
          break;
        }
        if (i === ex.length - 1 && i < parts.length - 1) ok = false; // the pattern ends above rel
      }
      if (ok && (ex.length > parts.length || ex.includes('**'))) return true;
    }
    return false;
  }
}

export function cleanPosix(p: string): string {
  const out: string[] = [];
  for (const c of p.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (out.length && out[out.length - 1] !== '..') out.pop();
      else out.push('..');
      continue;
    }
    out.push(c);
  }
  return out.join('/');
}

/** Parse the text of a .dockerignore (comments, blank lines, `./` and leading `/` cleaned as Docker does). */
export function parseIgnoreText(text: string): string[] {
  const out: string[] = [];
  for (let line of text.split(/\r?\n/)) {
    if (line.startsWith('#')) continue;
    line = line.trim();
    if (!line) continue;
    let neg = false;
    if (line.startsWith('!')) {
      neg = true;
      line = line.slice(1).trim();
    }
    if (line.length > 0) {
      const cleaned = cleanPosix(line.replace(/^\/+/, ''));
      line = cleaned === '' ? '.' : cleaned;
    }
    if (!line) continue;
    out.push(neg ? '!' + line : line);
  }
  return out;
}

/** Find the ignore file for a context and Dockerfile (see the module comment for the order). */
export async function findIgnoreFile(contextDir: string, dockerfile?: string, explicit?: string): Promise<string | undefined> {
  if (explicit) {
    try {
      await fsp.access(explicit);
    } catch {
      throw new UsageError(`ignore file ${explicit} does not exist`);
    }
    return explicit;
  }
  const cands: string[] = [];
  if (dockerfile) {
    const df = resolve(contextDir, dockerfile);
    cands.push(join(dirname(df), basename(df) + '.dockerignore'), join(dirname(df), basename(df) + '.containerignore'));
  }
  cands.push(join(contextDir, '.containerignore'), join(contextDir, '.dockerignore'));
  for (const c of cands) {
    try {
      const st = await fsp.stat(c);
      if (st.isFile()) return c;
    } catch {}
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Stat cache

type StatRow = [size: number, mtimeNs: string, ctimeNs: string, ino: string, mode: number, hash: string];

/**
 * path -> (size, mtime, ctime, inode, mode) -> content hash, persisted as JSON. A row is used only
 * when every field matches the file's current lstat (nanosecond times, bigint inode).
 */
export class StatCache {
  private rows = new Map<string, StatRow>();
  private dirty = false;
  /** paths looked up in this process (set by the context) */
  seen: ReadonlySet<string> | undefined;
  private constructor(readonly file: string | undefined) {}

  /** Open (or start) the stat cache of a context; `file` undefined = in memory only. */
  static async open(file: string | undefined): Promise<StatCache> {
    const sc = new StatCache(file);
    if (file) {
      try {
        const data = JSON.parse(await fsp.readFile(file, 'utf8')) as { v: number; rows: Record<string, StatRow> };
        if (data.v === 1 && data.rows && typeof data.rows === 'object') sc.rows = new Map(Object.entries(data.rows));
      } catch {
        // missing or damaged: start empty (it is only a cache)
      }
    }
    return sc;
  }

  lookup(path: string, st: BigIntStats): string | undefined {
    const r = this.rows.get(path);
    if (!r) return undefined;
    if (r[0] !== Number(st.size) || r[1] !== String(st.mtimeNs) || r[2] !== String(st.ctimeNs) || r[3] !== String(st.ino) || r[4] !== Number(st.mode)) return undefined;
    return r[5];
  }

  store(path: string, st: BigIntStats, hash: string): void {
    this.rows.set(path, [Number(st.size), String(st.mtimeNs), String(st.ctimeNs), String(st.ino), Number(st.mode), hash]);
    this.dirty = true;
  }

  get size(): number {
    return this.rows.size;
  }

  /** Write the cache atomically (only when something changed). Rows for paths not seen in `keep` are dropped. */
  async save(keep?: ReadonlySet<string>): Promise<void> {
    if (!this.file) return;
    if (keep) {
      for (const k of this.rows.keys())
        if (!keep.has(k)) {
          this.rows.delete(k);
          this.dirty = true;
        }
    }
    // rows of files that are gone (checked only for the paths this build did not hash)
    if (this.seen) {
      for (const k of [...this.rows.keys()]) {
        if (this.seen.has(k)) continue;
        try {
          await fsp.lstat(k);
        } catch {
          this.rows.delete(k);
          this.dirty = true;
        }
      }
    }
    if (!this.dirty) return;
    await writeFileAtomic(this.file, JSON.stringify({ v: 1, rows: Object.fromEntries(this.rows) }));
    this.dirty = false;
  }
}

/**
 * Write `data` to `file` atomically, creating its directory first: src/oci/store.ts's writeFileAtomic (temp file in
 * the same directory, fsync, rename, directory fsync).
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  await fsp.mkdir(dirname(file), { recursive: true });
  await writeOciFileAtomic(file, data);
}

// ---------------------------------------------------------------------------------------------
// The context

export interface ContextOptions {
  /** The Dockerfile path (absolute or relative to the context): its `<name>.dockerignore` is looked up beside it. */
  dockerfile?: string | undefined;
  /** An explicit ignore file (buildah's --ignorefile). */
  ignoreFile?: string | undefined;
  /** Build cache dir (default `<defaultRoot>/cache`); the stat cache goes to `<cacheDir>/statcache/`. false = no persistent stat cache. */
  cacheDir?: string | false | undefined;
}

export interface ContextFile {
  /** context-relative posix path */
  rel: string;
  abs: string;
  st: Stats;
}

/** A context entry as walked: what COPY sees. */
export interface WalkEntry {
  rel: string;
  abs: string;
  st: Stats;
}

export class BuildContext {
  /** Files actually read for hashing, and bytes read (for tests and --explain-cache). */
  readonly counters = { filesRead: 0, bytesRead: 0, statHits: 0 };
  readonly seen = new Set<string>();
  private readonly memo = new Map<string, Promise<string>>();

  private constructor(
    /** real absolute path of the context directory */
    readonly dir: string,
    readonly ignore: IgnoreMatcher,
    readonly ignoreFile: string | undefined,
    private readonly statCache: StatCache,
  ) {}

  static async open(dir: string, opts: ContextOptions = {}): Promise<BuildContext> {
    let real: string;
    try {
      real = await fsp.realpath(dir);
      if (!(await fsp.stat(real)).isDirectory()) throw new Error('not a directory');
    } catch (e) {
      throw new UsageError(`build context ${dir}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : (e as Error).message}`);
    }
    const ignFile = await findIgnoreFile(real, opts.dockerfile, opts.ignoreFile);
    const patterns = ignFile ? parseIgnoreText(await fsp.readFile(ignFile, 'utf8')) : [];
    let scFile: string | undefined;
    if (opts.cacheDir !== false) {
      const cacheDir = opts.cacheDir ?? join(defaultRoot(), 'cache');
      scFile = join(cacheDir, 'statcache', createHash('sha256').update(real).digest('hex').slice(0, 32) + '.json');
    }
    const sc = await StatCache.open(scFile);
    const ctx = new BuildContext(real, new IgnoreMatcher(patterns), ignFile, sc);
    sc.seen = ctx.seen;
    return ctx;
  }

  /** Is a context-relative path excluded by the ignore file? */
  isIgnored(rel: string): boolean {
    return this.ignore.ignores(rel);
  }

  /** Same as isIgnored (the name the executor uses). */
  ignored(rel: string): boolean {
    return this.ignore.ignores(rel);
  }

  /** Absolute path of a context-relative path (cleaned; never outside the context). */
  abs(rel: string): string {
    const c = cleanPosix(rel);
    if (c === '..' || c.startsWith('../')) throw new UsageError(`${rel}: path is outside the build context`);
    return c ? join(this.dir, c) : this.dir;
  }

  /** Content hash of a context file (regular file), through the stat cache. */
  hashFile(rel: string, abs = this.abs(rel)): Promise<string> {
    let p = this.memo.get(abs);
    if (!p) {
      p = this.computeHash(abs);
      this.memo.set(abs, p);
    }
    return p;
  }

  private async computeHash(abs: string): Promise<string> {
    const st = lstatSync(abs, { bigint: true });
    this.seen.add(abs);
    const cached = this.statCache.lookup(abs, st);
    if (cached) {
      this.counters.statHits++;
      return cached;
    }
    const h = await hashFileContent(abs, Number(st.size), this.counters);
    // the file changed while we read it: don't remember this (maybe torn) hash
    const st2 = lstatSync(abs, { bigint: true });
    if (st2.mtimeNs === st.mtimeNs && st2.size === st.size && st2.ctimeNs === st.ctimeNs) this.statCache.store(abs, st, h);
    return h;
  }

  /**
   * Walk the context below `rel` (a directory; '' = the root), in sorted order, skipping ignored
   * entries but descending into ignored directories when an exception may re-include something.
   * Yields the entries (not `rel` itself). Excluded directories that are walked only for their
   * exceptions are yielded too (as the parents of what they contain), as fsutil does.
   */
  async *walk(rel: string, extraExclude?: IgnoreMatcher, excludeBase = rel): AsyncGenerator<WalkEntry> {
    const base = this.abs(rel);
    yield* this.walkDir(cleanPosix(rel), base, extraExclude, cleanPosix(excludeBase));
  }

  private async *walkDir(rel: string, abs: string, extra: IgnoreMatcher | undefined, exBase: string): AsyncGenerator<WalkEntry> {
    let names: string[];
    try {
      names = await fsp.readdir(abs);
    } catch (e) {
      throw new TsimageError(`cannot read context directory ${rel || '.'}: ${(e as Error).message}`, { cause: e });
    }
    names.sort();
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      const a = join(abs, n);
      const st = await fsp.lstat(a);
      const exRel = exBase ? (r.startsWith(exBase + '/') ? r.slice(exBase.length + 1) : r) : r;
      const ign = this.ignore.ignores(r) || (extra ? extra.ignores(exRel) : false);
      if (ign) {
        if (st.isDirectory() && (this.ignore.mayIncludeBelow(r) || (extra?.mayIncludeBelow(exRel) ?? false))) {
          const sub: WalkEntry[] = [];
          for await (const e of this.walkDir(r, a, extra, exBase)) sub.push(e);
          if (sub.length) {
            yield { rel: r, abs: a, st };
            yield* sub;
          }
        }
        continue;
      }
      yield { rel: r, abs: a, st };
      if (st.isDirectory()) yield* this.walkDir(r, a, extra, exBase);
    }
  }

  /**
   * One hash of a context path (a file, or a directory tree with .dockerignore applied), through
   * the stat cache: the cache-key input of `RUN --mount=type=bind` from the context.
   * `sha256:` over sorted lines of path, type, mode and content hash (or link target).
   */
  async treeHash(rel: string): Promise<string> {
    const root = cleanPosix(rel.replace(/^\/+/, ''));
    const h = createHash('sha256');
    const line = async (r: string, abs: string, st: Stats) => {
      const t = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isFile() ? 'f' : 'o';
      const x = st.isFile() ? await this.hashFile(r, abs) : st.isSymbolicLink() ? await fsp.readlink(abs) : '';
      h.update(`${r}\0${t}\0${(st.mode & 0o7777).toString(8)}\0${x}\n`);
    };
    const abs = this.abs(root);
    let st: Stats;
    try {
      st = await fsp.lstat(abs);
    } catch {
      throw new UsageError(`${rel || '.'}: no such file or directory in the build context`);
    }
    if (root && this.isIgnored(root)) throw new UsageError(`${rel}: excluded by .dockerignore`);
    await line(root || '.', abs, st);
    if (st.isDirectory()) for await (const e of this.walk(root)) await line(e.rel, e.abs, e.st);
    return 'sha256:' + h.digest('hex');
  }

  /** Persist the stat cache (drops rows of files not hashed in this build only when `prune`). */
  async save(prune = false): Promise<void> {
    await this.statCache.save(prune ? this.seen : undefined);
  }
}

/** Read a few bytes of a file (for tar detection). */
export function readHead(path: string, n: number): Buffer {
  const fd = openSync(path, FS.O_RDONLY | FS.O_NOFOLLOW);
  try {
    const b = Buffer.alloc(n);
    const got = readSync(fd, b, 0, n, 0);
    return b.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

/** Open a build context (see BuildContext.open). */
export function openContext(dir: string, opts: ContextOptions = {}): Promise<BuildContext> {
  return BuildContext.open(dir, opts);
}
