/**
 * `tsbuild bud`: Dockerfile -> stage graph -> stages built in parallel (`--jobs`), only what the
 * target needs -> the target's image committed to the local store (names, --iidfile,
 * --manifest, --output, --squash, --push).
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import {
  defaultRoot,
  hostPlatform,
  parsePlatform,
  TsimageError,
  UsageError,
  type Compression,
  type Descriptor,
} from '../oci/index.js';
import { createRunner } from '../ns/index.js';
import { openSnapshotter, type Snapshotter } from '../overlay/index.js';
import { loadDockerfile, platformArgs, reachableStages, resolveMetaArgs, stageDeps, targetStage } from './dockerfile.js';
import { StageExecutor, type StageResult } from './executor.js';
import { ImageStore, isEmbeddedBaseName, type LoadedImage } from './store.js';
import { commitImage, type OutputSpec } from './commit.js';
import { BuildCache } from './cache.js';
import { openContext } from './context.js';
import type { RemoteEntry } from './remote-cache.js';

export interface BuildOptions {
  contextDir: string;
  /** Dockerfile path (default: Containerfile or Dockerfile in the context) */
  file?: string | undefined;
  tags?: string[] | undefined;
  target?: string | undefined;
  buildArgs?: Map<string, string> | undefined;
  layers?: boolean | undefined;
  noCache?: boolean | undefined;
  pull?: 'always' | 'missing' | 'never' | 'ifnewer' | undefined;
  format?: 'oci' | 'docker' | undefined;
  /**
   * Layer compression in the local store: 'none' (default, as buildah's --disable-compression: layers are
   * compressed where they are written to, by push or --output), gzip or zstd.
   */
  compression?: Compression | undefined;
  squash?: boolean | undefined;
  /** epoch seconds */
  timestamp?: number | undefined;
  isolation?: string | undefined;
  network?: 'none' | 'host' | undefined;
  jobs?: number | undefined;
  secrets?: Map<string, string> | undefined;
  labels?: Record<string, string> | undefined;
  annotations?: Record<string, string> | undefined;
  iidfile?: string | undefined;
  manifest?: string | undefined;
  outputs?: OutputSpec[] | undefined;
  platform?: string | undefined;
  quiet?: boolean | undefined;
  root?: string | undefined;
  /** progress lines (default: stderr unless quiet) */
  log?: ((line: string) => void) | undefined;
  /** RUN output (default: inherit stderr... as buildah: the build's stdout) */
  runOutput?: NodeJS.WritableStream | 'inherit' | 'ignore' | undefined;
  signal?: AbortSignal | undefined;
  /** pull an image into the store (the copy engine); undefined: only the store and the embedded base */
  puller?: ((name: string, store: ImageStore, signal: AbortSignal) => Promise<LoadedImage | undefined>) | undefined;
  pushTo?: string[] | undefined;
  /** print, for each missed step, which input changed */
  explainCache?: boolean | undefined;
  /** registry repositories to look missed steps up in (--cache-from) */
  cacheFrom?: string[] | undefined;
  /** registry repository to push this build's cache entries to (--cache-to) */
  cacheTo?: string | undefined;
  /** registry options for --cache-from/--cache-to */
  registry?: { tlsVerify?: boolean | undefined; authfile?: string | undefined; creds?: string | undefined; certDir?: string | undefined } | undefined;
  /** an ignore file instead of .dockerignore/.containerignore */
  ignoreFile?: string | undefined;
}

export interface BuildResult {
  imageId: string;
  manifest: Descriptor;
  names: string[];
}

export function findDockerfile(contextDir: string, file?: string): string {
  if (file) {
    if (file === '-') return file;
    const p = resolve(file);
    if (!existsSync(p)) {
      const inCtx = resolve(contextDir, file);
      if (existsSync(inCtx)) return inCtx;
      throw new UsageError(`the Dockerfile ${file} does not exist`);
    }
    return p;
  }
  for (const n of ['Containerfile', 'Dockerfile']) {
    const p = join(contextDir, n);
    if (existsSync(p)) return p;
  }
  throw new UsageError(`no Containerfile or Dockerfile in ${contextDir} (use -f FILE)`);
}

function parseEpoch(s: string | undefined, what: string): number | undefined {
  if (s === undefined || s === '') return undefined;
  if (!/^\d+$/.test(s)) throw new UsageError(`${what}=${JSON.stringify(s)} is not a non-negative integer (seconds since the epoch)`);
  return Number(s);
}

class Semaphore {
  private q: (() => void)[] = [];
  constructor(private n: number) {}
  async take(): Promise<() => void> {
    if (this.n > 0) this.n--;
    else await new Promise<void>((r) => this.q.push(r));
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.q.shift();
      if (next) next();
      else this.n++;
    };
  }
}

export async function build(o: BuildOptions): Promise<BuildResult> {
  const signal = o.signal ?? new AbortController().signal;
  const contextDir = resolve(o.contextDir);
  if (!existsSync(contextDir)) throw new UsageError(`build context ${o.contextDir} does not exist`);
  const file = findDockerfile(contextDir, o.file);
  const text = file === '-' ? await readStdin() : await readFile(file, 'utf8');
  const displayFile = file === '-' ? 'Dockerfile' : file.startsWith(contextDir + '/') ? file.slice(contextDir.length + 1) : file;
  const bf = loadDockerfile(text, displayFile);
  const log = o.log ?? (o.quiet ? () => {} : (l: string) => process.stderr.write(l + '\n'));
  for (const w of bf.warnings) log(`WARNING: ${w}`);

  const host = hostPlatform();
  if (o.platform) {
    const p = parsePlatform(o.platform);
    if (p.os !== host.os || p.architecture !== host.architecture)
      throw new UsageError(`--platform ${o.platform}: only the host platform ${host.os}/${host.architecture} can be built here (no emulation)`);
  }
  const buildArgs = new Map(o.buildArgs ?? []);
  const envEpoch = parseEpoch(process.env.SOURCE_DATE_EPOCH, 'SOURCE_DATE_EPOCH');
  const timestamp = o.timestamp ?? envEpoch;
  if (envEpoch !== undefined && !buildArgs.has('SOURCE_DATE_EPOCH')) buildArgs.set('SOURCE_DATE_EPOCH', String(envEpoch));
  const predefined = platformArgs(host);
  const metaScope = resolveMetaArgs(bf, buildArgs, predefined);
  const deps = stageDeps(bf, metaScope);
  const target = targetStage(bf, o.target);
  const order = reachableStages(bf, deps, target);

  const root = o.root ?? defaultRoot();
  const store = await ImageStore.open(root);
  const snap: Snapshotter = await openSnapshotter({ root, notice: (m) => log(m) });
  const cacheDir = join(root, 'cache');
  const cache = await BuildCache.open(cacheDir);
  const ctx = await openContext(contextDir, { dockerfile: file === '-' ? undefined : file, ignoreFile: o.ignoreFile, cacheDir });
  const runner = await createRunner(o.isolation);
  const usedArgs = new Set<string>();
  const jobs = new Semaphore(Math.max(1, o.jobs ?? Math.min(4, availableParallelism())));
  const results = new Map<number, Promise<StageResult>>();
  const imageCache = new Map<string, Promise<LoadedImage>>();
  const pull = o.pull ?? 'missing';
  const remoteCollect: RemoteEntry[] = [];
  const remote = o.cacheFrom?.length || o.cacheTo ? { from: o.cacheFrom ?? [], collect: o.cacheTo ? remoteCollect : undefined, opts: o.registry ?? {} } : undefined;

  const getImage = (name: string): Promise<LoadedImage> => {
    let p = imageCache.get(name);
    if (!p) {
      p = (async () => {
        if (pull !== 'always') {
          const have = await store.find(name);
          if (have) return have;
          // FROM busybox on an empty store: the embedded base, no network (`tsbuild pull docker://busybox` for Docker Hub's)
          if (isEmbeddedBaseName(name)) return store.ensureEmbeddedBase(signal);
        }
        if (pull !== 'never' && o.puller) {
          const got = await o.puller(name, store, signal).catch((e: unknown) => {
            if (isEmbeddedBaseName(name)) return undefined;
            throw e;
          });
          if (got) return got;
        }
        if (isEmbeddedBaseName(name)) return store.ensureEmbeddedBase(signal);
        if (pull === 'always') {
          const have = await store.find(name);
          if (have) return have;
        }
        throw new TsimageError(
          `image ${name} is not in the local store${o.puller ? '' : ' and pulling is not available in this build'}` +
            (pull === 'never' ? ' (--pull=never)' : '') +
            ` (the offline base is "busybox")`,
        );
      })();
      imageCache.set(name, p);
    }
    return p;
  };

  const stageCount = bf.stages.length;
  const runStage = (i: number): Promise<StageResult> => {
    let p = results.get(i);
    if (p) return p;
    p = (async () => {
      for (const d of deps.get(i) ?? []) await runStage(d);
      const release = await jobs.take();
      try {
        const ex = new StageExecutor(bf, bf.stages[i]!, {
          store,
          snap,
          runner,
          contextDir,
          metaScope,
          buildArgs,
          usedArgs,
          layers: o.layers ?? true,
          noCache: o.noCache ?? false,
          pull,
          compression: o.compression ?? 'none',
          format: o.format ?? 'oci',
          timestamp,
          network: o.network ?? 'host',
          secrets: o.secrets ?? new Map(),
          log,
          output: o.runOutput ?? (o.quiet ? 'ignore' : process.stderr),
          signal,
          stageResult: (j) => runStage(j),
          getImage,
          stageCount,
          cache,
          ctx,
          explainCache: o.explainCache ?? false,
          remote,
        });
        return await ex.run();
      } finally {
        release();
      }
    })();
    results.set(i, p);
    return p;
  };

  try {
    // start every needed stage; independent ones run in parallel up to --jobs
    const all = order.map((i) => runStage(i));
    const settled = await Promise.allSettled(all);
    const failed = settled.find((s) => s.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    const final = await runStage(target.index);
    for (const k of buildArgs.keys())
      if (!usedArgs.has(k) && !metaScope.has(k) && k !== 'SOURCE_DATE_EPOCH' && !predefined.has(k))
        log(`WARNING: one or more build args were not consumed: [${k}]`);
    const res = await commitImage(store, snap, final.state, {
      tags: o.tags ?? [],
      format: o.format ?? 'oci',
      compression: o.compression ?? 'none',
      squash: o.squash ?? false,
      timestamp,
      labels: o.labels,
      annotations: o.annotations,
      manifest: o.manifest,
      created: final.lastCreated,
      outputs: o.outputs ?? [],
      log,
      signal,
    });
    if (o.iidfile) await writeFile(o.iidfile, res.imageId);
    if (o.cacheTo) {
      const { remoteExport } = await import('./remote-cache.js');
      const n = await remoteExport(o.cacheTo, remoteCollect, store, { ...(o.registry ?? {}), signal });
      log(`Exported ${n} cache entries to ${o.cacheTo}`);
    }
    await ctx.save().catch(() => {});
    return res;
  } finally {
    await snap.close();
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
