/**
 * The blob-info cache: which repositories of a registry are known to hold a blob, so that a copy into another
 * repository of that registry mounts the blob (one request) instead of sending its bytes again. This is
 * containers/image's BlobInfoCache (skopeo's `blob-info-cache-v1.boltdb`) for its main use, known locations:
 *
 *   tscopy copy oci:layout docker://reg/team-a/app   (uploads every layer, records reg: team-a/app)
 *   tscopy copy oci:layout docker://reg/team-b/app   (mounts every layer from team-a/app)
 *
 * Locations are recorded when a copy finds a blob at (or reads it from) a registry repository, and forgotten
 * when a mount from them fails. The store is an append-only file of JSON lines (one `write` with O_APPEND per
 * copy, so concurrent processes do not tear each other's records; a torn last line from a crash is skipped).
 * When the file passes MAX_BYTES it is rewritten (temp + rename) with the newest records only. A cache that
 * cannot be read or written never fails a copy: it is a hint, and every mount is checked by the registry.
 *
 * Default path: $TSIMAGE_BLOB_INFO_CACHE (empty or "none" = no cache), else $XDG_CACHE_HOME/tsimage/, else
 * ~/.cache/tsimage/blob-info-cache-v1.jsonl.
 */
import { appendFile, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { isDigest, type Digest } from '../oci/digest.js';

/** Rewrite the file (newest records kept) when it grows past this. */
const MAX_BYTES = 4 * 1024 * 1024;
/** Records kept by a rewrite. */
const KEEP_RECORDS = 20_000;
/** Locations offered per blob (newest first): each one costs a request when it fails. */
const MAX_CANDIDATES = 3;
/** A location seen again within this time is not written again (the file would grow by every copy). */
const REFRESH_MS = 3600_000;

/** One line of the file: t = when (ms), r = registry (scope), p = repository, d = digest, x = forget. */
interface RecordLine {
  t: number;
  r: string;
  p: string;
  d: string;
  x?: 1;
}

export function defaultBlobInfoCachePath(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const v = env.TSIMAGE_BLOB_INFO_CACHE;
  if (v !== undefined) return v === '' || v === 'none' ? undefined : v;
  const base = env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'tsimage', 'blob-info-cache-v1.jsonl');
}

export class BlobInfoCache {
  /** registry \n digest -> repository -> time last seen */
  private readonly known = new Map<string, Map<string, number>>();
  private loading: Promise<void> | undefined;
  private pending: RecordLine[] = [];
  private size = 0;
  /** The file ends in a torn line: the next append starts a new line first. */
  private torn = false;

  private readonly maxBytes: number;
  private readonly keep: number;

  /** `limits`: when to rewrite the file and how many records to keep (tests use small ones). */
  constructor(
    readonly path: string,
    limits: { maxBytes?: number; keep?: number } = {},
  ) {
    this.maxBytes = limits.maxBytes ?? MAX_BYTES;
    this.keep = limits.keep ?? KEEP_RECORDS;
  }

  /** Read the file (once; later calls share the first). Never throws. */
  load(): Promise<void> {
    return (this.loading ??= this.read());
  }

  private async read(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch {
      return; // none yet, or unreadable: an empty cache
    }
    this.size = Buffer.byteLength(text);
    this.torn = text.length > 0 && !text.endsWith('\n');
    for (const line of text.split('\n')) {
      if (!line) continue;
      let r: RecordLine;
      try {
        r = JSON.parse(line) as RecordLine;
      } catch {
        continue; // a torn line (a writer killed mid-append)
      }
      if (typeof r.r !== 'string' || typeof r.p !== 'string' || !isDigest(r.d) || typeof r.t !== 'number') continue;
      this.apply(r);
    }
  }

  private apply(r: RecordLine): void {
    const key = `${r.r}\n${r.d}`;
    let repos = this.known.get(key);
    if (r.x) {
      repos?.delete(r.p);
      if (repos?.size === 0) this.known.delete(key);
      return;
    }
    if (!repos) this.known.set(key, (repos = new Map()));
    repos.set(r.p, Math.max(repos.get(r.p) ?? 0, r.t));
  }

  /** Repositories of `registry` known to hold `digest`, newest first, without `exclude` (call load() first). */
  candidates(registry: string, digest: Digest, exclude: readonly string[] = []): string[] {
    const repos = this.known.get(`${registry}\n${digest}`);
    if (!repos) return [];
    return [...repos]
      .filter(([p]) => !exclude.includes(p))
      .sort((a, b) => b[1] - a[1])
      .slice(0, MAX_CANDIDATES)
      .map(([p]) => p);
  }

  /** `repository` of `registry` holds `digest` (kept in memory until flush()). */
  record(registry: string, repository: string, digest: Digest): void {
    const r: RecordLine = { t: Date.now(), r: registry, p: repository, d: digest };
    const seen = this.known.get(`${registry}\n${digest}`)?.get(repository);
    this.apply(r);
    if (seen === undefined || seen < r.t - REFRESH_MS) this.pending.push(r);
  }

  /** A mount from `repository` failed: do not offer it again. */
  forget(registry: string, repository: string, digest: Digest): void {
    if (!this.known.get(`${registry}\n${digest}`)?.has(repository)) return;
    const r: RecordLine = { t: Date.now(), r: registry, p: repository, d: digest, x: 1 };
    this.apply(r);
    this.pending.push(r);
  }

  /** Append what was recorded since the last flush (one write). Never throws. */
  async flush(): Promise<void> {
    if (!this.pending.length) return;
    const lines = (this.torn ? '\n' : '') + this.pending.map((r) => JSON.stringify(r) + '\n').join('');
    this.pending = [];
    try {
      await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
      if (this.size + lines.length > this.maxBytes) await this.rewrite();
      else {
        await appendFile(this.path, lines, { mode: 0o600 });
        this.size += lines.length;
        this.torn = false;
      }
    } catch {
      /* a read-only or full cache directory: the copy itself succeeded */
    }
  }

  /** Replace the file with the newest `keep` live records (what this process knows, which includes the file). */
  private async rewrite(): Promise<void> {
    const all: RecordLine[] = [];
    for (const [key, repos] of this.known) {
      const [r, d] = key.split('\n') as [string, string];
      for (const [p, t] of repos) all.push({ t, r, p, d });
    }
    all.sort((a, b) => b.t - a.t);
    const text = all
      .slice(0, this.keep)
      .reverse()
      .map((r) => JSON.stringify(r) + '\n')
      .join('');
    const tmp = `${this.path}.${process.pid}.tmp`;
    try {
      await writeFile(tmp, text, { mode: 0o600 });
      await rename(tmp, this.path);
      this.size = (await stat(this.path)).size;
      this.torn = false;
    } finally {
      await rm(tmp, { force: true });
    }
  }
}

const opened = new Map<string, BlobInfoCache>();
/** The process-wide cache for a path (sync and copies of one process share records and one load). */
export function blobInfoCache(path: string | undefined = defaultBlobInfoCachePath()): BlobInfoCache | undefined {
  if (!path) return undefined;
  let c = opened.get(path);
  if (!c) opened.set(path, (c = new BlobInfoCache(path)));
  return c;
}
