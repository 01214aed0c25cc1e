/**
 * The build cache: step keys and the index from key to result (layer digest + diffID + history).
 *
 * A step key is sha256 over a canonical JSON of { parent key, the instruction after expansion,
 * its inputs }: the files a COPY/ADD reads (path, type, mode, content hash, owner for --from
 * sources), the base image digest (FROM), the build args in effect, the env, the mount sources
 * (RUN --mount), anything else the executor adds. mtimes are not part of a key (as BuildKit's
 * contenthash): touching a file is a hit, changing its content is a miss. Object keys are sorted
 * and file lists are sorted by path, so the key does not depend on the order things were found in.
 *
 * On disk (`<root>/cache/index/`), one small JSON file per entry, each written atomically, so
 * concurrent builds need no lock:
 *   entries/<hex>.json     the entry (parent, instruction, result, created); its mtime = last use
 *   inputs/<hex>.json      the inputs in a diffable form (for --explain-cache)
 *   children/<parent>/<hex> empty markers: the entries built on a parent (explain's candidates)
 * The blobs the results name live in the local image store; `referencedDigests()` is what the
 * store's GC must keep, `prune()` bounds the index (LRU by last use, age, total layer bytes).
 */
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { TsimageError } from '../oci/index.js';
import { defaultRoot } from '../oci/paths.js';
import { writeFileAtomic } from './context.js';
import type { FileInput } from './copyfiles.js';

export interface CacheInputs {
  /** files a COPY/ADD reads (CopyPlan.inputs.files) */
  files?: FileInput[] | undefined;
  /** FROM: the base image (manifest or config digest) */
  base?: string | undefined;
  /** build args in effect for this step (name -> value); proxy args should be left out */
  args?: Record<string, string> | undefined;
  /** the environment of a RUN */
  env?: string[] | undefined;
  /** RUN --mount sources: mount target -> content key (another step key, a context hash...) */
  mounts?: Record<string, string> | undefined;
  /** anything else the executor wants in the key (platform, user, shell, ...) */
  other?: Record<string, unknown> | undefined;
}

export interface CachedLayer {
  digest: string;
  diffID: string;
  size: number;
  mediaType: string;
}

export interface CacheResult {
  /** the layer the step produced (absent for a step without a layer) */
  layer?: CachedLayer | undefined;
  /** an image config history entry ({created, created_by, comment, empty_layer}) */
  history?: Record<string, unknown> | undefined;
  /** free-form data the executor keeps (e.g. config changes) */
  extra?: Record<string, unknown> | undefined;
}

export interface CacheEntry {
  key: string;
  parent?: string | undefined;
  instruction: string;
  created: string;
  /** last use (the entry file's mtime) */
  lastUsed?: Date | undefined;
  result: CacheResult;
}

// ---------------------------------------------------------------------------------------------
// keys

function canonical(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v as object).sort()) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined) out[k] = canonical(x);
    }
    return out;
  }
  return v;
}

function normInputs(inputs: CacheInputs): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (inputs.files) {
    out.files = [...inputs.files]
      .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
      .map((f) => (f.xattrs ? [f.path, f.type, f.mode, f.hash ?? null, f.owner ?? null, f.xattrs] : [f.path, f.type, f.mode, f.hash ?? null, f.owner ?? null]));
  }
  if (inputs.base !== undefined) out.base = inputs.base;
  if (inputs.args) out.args = inputs.args;
  if (inputs.env) out.env = inputs.env;
  if (inputs.mounts) out.mounts = inputs.mounts;
  if (inputs.other) out.other = inputs.other;
  return canonical(out) as Record<string, unknown>;
}

/** The key of a step: sha256 over {v, parent, instruction, inputs} (canonical JSON). */
export function cacheKey(parent: string | undefined, instruction: string, inputs: CacheInputs = {}): string {
  const body = JSON.stringify({ v: 1, parent: parent ?? null, instruction, inputs: normInputs(inputs) });
  return 'sha256:' + createHash('sha256').update(body).digest('hex');
}

const hexOf = (key: string) => {
  const m = /^sha256:([a-f0-9]{64})$/.exec(key);
  if (!m) throw new TsimageError(`invalid cache key ${JSON.stringify(key)}`);
  return m[1]!;
};
const ROOT_PARENT = 'root';

// ---------------------------------------------------------------------------------------------
// explain

function shortHash(h: string | undefined): string {
  if (h === undefined) return '-';
  const i = h.indexOf(':');
  return (i >= 0 ? h.slice(i + 1) : h).slice(0, 8);
}

type StoredInputs = ReturnType<typeof normInputs>;

/** Human-readable differences between the inputs of a previous build of a step and now. */
export function diffInputs(prevInstr: string, prev: StoredInputs, instruction: string, now: CacheInputs, max = 6): string[] {
  const cur = normInputs(now);
  const out: string[] = [];
  if (prevInstr !== instruction) out.push(`instruction changed (was: ${prevInstr})`);
  if (prev.base !== cur.base) out.push(`base image changed (${shortHash(prev.base as string)} -> ${shortHash(cur.base as string)})`);
  const pa = (prev.args ?? {}) as Record<string, string>;
  const ca = (cur.args ?? {}) as Record<string, string>;
  for (const k of new Set([...Object.keys(pa), ...Object.keys(ca)])) {
    if (!(k in pa)) out.push(`build arg ${k} set (${JSON.stringify(ca[k])})`);
    else if (!(k in ca)) out.push(`build arg ${k} unset (was ${JSON.stringify(pa[k])})`);
    else if (pa[k] !== ca[k]) out.push(`build arg ${k} changed (${JSON.stringify(pa[k])} -> ${JSON.stringify(ca[k])})`);
  }
  if (JSON.stringify(prev.env ?? null) !== JSON.stringify(cur.env ?? null)) {
    const pe = new Set((prev.env ?? []) as string[]);
    const ce = new Set((cur.env ?? []) as string[]);
    const changed = [...new Set([...pe, ...ce].filter((e) => !pe.has(e) || !ce.has(e)).map((e) => e.split('=')[0]))];
    out.push(`environment changed (${changed.join(', ')})`);
  }
  const pm = (prev.mounts ?? {}) as Record<string, string>;
  const cm = (cur.mounts ?? {}) as Record<string, string>;
  for (const k of new Set([...Object.keys(pm), ...Object.keys(cm)]))
    if (pm[k] !== cm[k]) out.push(`mount ${k} changed (${shortHash(pm[k])} -> ${shortHash(cm[k])})`);
  if (JSON.stringify(prev.other ?? null) !== JSON.stringify(cur.other ?? null)) {
    const po = (prev.other ?? {}) as Record<string, unknown>;
    const co = (cur.other ?? {}) as Record<string, unknown>;
    for (const k of new Set([...Object.keys(po), ...Object.keys(co)]))
      if (JSON.stringify(po[k]) !== JSON.stringify(co[k])) out.push(`${k} changed (${JSON.stringify(po[k])} -> ${JSON.stringify(co[k])})`);
  }
  type Row = [string, string, number, string | null, string | null, string?];
  const pf = new Map(((prev.files ?? []) as Row[]).map((r) => [r[0], r]));
  const cf = new Map(((cur.files ?? []) as Row[]).map((r) => [r[0], r]));
  const fileMsgs: string[] = [];
  for (const [p, c] of cf) {
    const o = pf.get(p);
    if (!o) fileMsgs.push(`${p} added`);
    else {
      const parts: string[] = [];
      if (o[1] !== c[1]) parts.push(`type ${o[1]} -> ${c[1]}`);
      else if (o[3] !== c[3]) parts.push(c[1] === 'l' ? `link target ${o[3]} -> ${c[3]}` : `hash ${shortHash(o[3] ?? undefined)} -> ${shortHash(c[3] ?? undefined)}`);
      if (o[2] !== c[2]) parts.push(`mode ${o[2].toString(8)} -> ${c[2].toString(8)}`);
      if (o[4] !== c[4]) parts.push(`owner ${o[4]} -> ${c[4]}`);
      if (o[5] !== c[5]) parts.push('xattrs changed');
      if (parts.length) fileMsgs.push(`${p} changed (${parts.join(', ')})`);
    }
  }
  for (const p of pf.keys()) if (!cf.has(p)) fileMsgs.push(`${p} removed`);
  if (fileMsgs.length > max) out.push(...fileMsgs.slice(0, max), `... and ${fileMsgs.length - max} more file changes`);
  else out.push(...fileMsgs);
  return out;
}

// ---------------------------------------------------------------------------------------------
// the index

export interface PruneOptions {
  /** remove everything */
  all?: boolean | undefined;
  /** keep at most this many entries (least recently used go first) */
  maxEntries?: number | undefined;
  /** remove entries not used for this long (ms) */
  maxAgeMs?: number | undefined;
  /** keep the layers the entries name under this many bytes in total (LRU) */
  maxBytes?: number | undefined;
  dryRun?: boolean | undefined;
}

export interface PruneResult {
  removed: CacheEntry[];
  kept: number;
  /** bytes of the layers named by removed entries (freed once the store GC runs) */
  bytes: number;
}

export class BuildCache {
  private constructor(readonly dir: string) {}

  /** Open the cache index (default `<defaultRoot>/cache/index`). */
  static async open(cacheDir = join(defaultRoot(), 'cache')): Promise<BuildCache> {
    const dir = join(cacheDir, 'index');
    await fsp.mkdir(join(dir, 'entries'), { recursive: true });
    await fsp.mkdir(join(dir, 'inputs'), { recursive: true });
    await fsp.mkdir(join(dir, 'children'), { recursive: true });
    return new BuildCache(dir);
  }

  private entryPath(hex: string): string {
    return join(this.dir, 'entries', hex + '.json');
  }

  /** The entry of a key, or undefined (a hit marks the entry as used). */
  async get(key: string, opts: { touch?: boolean } = {}): Promise<CacheEntry | undefined> {
    const hex = hexOf(key);
    const p = this.entryPath(hex);
    let text: string;
    try {
      text = await fsp.readFile(p, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    let e: CacheEntry;
    try {
      e = JSON.parse(text) as CacheEntry;
      if (e.key !== key || typeof e.instruction !== 'string' || !e.result) return undefined;
    } catch {
      return undefined; // damaged: a miss, rewritten by the next put
    }
    if (opts.touch !== false) {
      const now = new Date();
      await fsp.utimes(p, now, now).catch(() => {});
      e.lastUsed = now;
    }
    return e;
  }

  /** Record a step's result. */
  async put(key: string, e: { parent?: string | undefined; instruction: string; inputs?: CacheInputs | undefined; result: CacheResult }): Promise<CacheEntry> {
    const hex = hexOf(key);
    const entry: CacheEntry = { key, instruction: e.instruction, created: new Date().toISOString(), result: e.result };
    if (e.parent !== undefined) entry.parent = e.parent;
    await writeFileAtomic(join(this.dir, 'inputs', hex + '.json'), JSON.stringify({ instruction: e.instruction, inputs: normInputs(e.inputs ?? {}) }));
    await writeFileAtomic(this.entryPath(hex), JSON.stringify(entry));
    const pdir = join(this.dir, 'children', e.parent ? hexOf(e.parent) : ROOT_PARENT);
    await fsp.mkdir(pdir, { recursive: true });
    await fsp.writeFile(join(pdir, hex), '');
    return entry;
  }

  /** Remove one entry. */
  async remove(key: string): Promise<boolean> {
    const hex = hexOf(key);
    const e = await this.get(key, { touch: false });
    await fsp.rm(join(this.dir, 'inputs', hex + '.json'), { force: true });
    let had = false;
    try {
      await fsp.unlink(this.entryPath(hex));
      had = true;
    } catch {}
    if (e) await fsp.rm(join(this.dir, 'children', e.parent ? hexOf(e.parent) : ROOT_PARENT, hex), { force: true });
    return had;
  }

  /**
   * Why a step missed: compared with the closest entry built on the same parent (same
   * instruction first, then fewest differences). `label` (default: the instruction) starts the
   * line, e.g. the instruction as written when the key text is a normalised form. One line, e.g.
   * `COPY app.js /app/: app.js changed (hash a1b2c3d4 -> 0f9e8d7c)`.
   */
  async explain(parent: string | undefined, instruction: string, inputs: CacheInputs = {}, label = instruction): Promise<string> {
    const pdir = join(this.dir, 'children', parent ? hexOf(parent) : ROOT_PARENT);
    let kids: string[] = [];
    try {
      kids = await fsp.readdir(pdir);
    } catch {}
    let best: { reasons: string[]; score: number } | undefined;
    for (const hex of kids) {
      let stored: { instruction: string; inputs: StoredInputs };
      try {
        stored = JSON.parse(await fsp.readFile(join(this.dir, 'inputs', hex + '.json'), 'utf8'));
      } catch {
        continue;
      }
      const reasons = diffInputs(stored.instruction, stored.inputs, instruction, inputs);
      const score = (stored.instruction === instruction ? 0 : 1000) + reasons.length;
      if (!best || score < best.score) best = { reasons, score };
    }
    if (!best) {
      return parent
        ? `${label}: not cached (no earlier build from this point: first build, or an earlier step changed)`
        : `${label}: not cached (first build from this base)`;
    }
    if (!best.reasons.length) return `${label}: not cached (inputs unchanged; the entry was pruned or is incomplete)`;
    return `${label}: ${best.reasons.join('; ')}`;
  }

  /** Every entry (no particular order). */
  async *entries(): AsyncGenerator<CacheEntry> {
    let names: string[] = [];
    try {
      names = await fsp.readdir(join(this.dir, 'entries'));
    } catch {}
    for (const n of names) {
      if (!/^[a-f0-9]{64}\.json$/.test(n)) continue;
      const e = await this.get('sha256:' + n.slice(0, 64), { touch: false });
      if (!e) continue;
      const st = await fsp.stat(this.entryPath(n.slice(0, 64))).catch(() => undefined);
      if (st) e.lastUsed = st.mtime;
      yield e;
    }
  }

  /** Digests of the blobs the entries name (layers): the store's GC must keep these. */
  async referencedDigests(): Promise<Set<string>> {
    const out = new Set<string>();
    for await (const e of this.entries()) if (e.result.layer) out.add(e.result.layer.digest);
    return out;
  }

  /** Bound the index: LRU by last use (see PruneOptions). The blobs are freed by the store's GC afterwards. */
  async prune(opts: PruneOptions = {}): Promise<PruneResult> {
    const all: CacheEntry[] = [];
    for await (const e of this.entries()) all.push(e);
    all.sort((a, b) => (b.lastUsed?.getTime() ?? 0) - (a.lastUsed?.getTime() ?? 0)); // most recent first
    const now = Date.now();
    const keep: CacheEntry[] = [];
    const removed: CacheEntry[] = [];
    let bytes = 0;
    let keptBytes = 0;
    for (const e of all) {
      const size = e.result.layer?.size ?? 0;
      const drop =
        opts.all ||
        (opts.maxAgeMs !== undefined && now - (e.lastUsed?.getTime() ?? 0) > opts.maxAgeMs) ||
        (opts.maxEntries !== undefined && keep.length >= opts.maxEntries) ||
        (opts.maxBytes !== undefined && keptBytes + size > opts.maxBytes);
      if (drop) {
        removed.push(e);
        bytes += size;
      } else {
        keep.push(e);
        keptBytes += size;
      }
    }
    if (!opts.dryRun) for (const e of removed) await this.remove(e.key);
    if (!opts.dryRun) {
      // empty parent dirs
      const cdir = join(this.dir, 'children');
      for (const d of await fsp.readdir(cdir).catch(() => [] as string[])) await fsp.rmdir(join(cdir, d)).catch(() => {});
    }
    // a layer shared by kept entries is not freed
    const still = new Set(keep.map((e) => e.result.layer?.digest).filter(Boolean));
    bytes = 0;
    const counted = new Set<string>();
    for (const e of removed) {
      const d = e.result.layer?.digest;
      if (d && !still.has(d) && !counted.has(d)) {
        counted.add(d);
        bytes += e.result.layer!.size;
      }
    }
    return { removed, kept: keep.length, bytes };
  }
}
