/**
 * The stage executor: one stage's instructions on top of its base, each RUN/COPY/ADD in a
 * snapshot (src/overlay) whose diff becomes a layer in the local store, config instructions
 * as config changes, a cache key chain per step (a hit reuses the layer without running),
 * ONBUILD triggers of the base first.
 */
import { createHash, randomBytes } from 'node:crypto';
import { cp, lchown, chmod, lstat, mkdir, readFile, readdir, readlink, rename, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Writable } from 'node:stream';
import {
  DockerfileError,
  MediaTypes,
  TsimageError,
  UsageError,
  layerMediaType,
  writeLayer,
  type Compression,
  type Descriptor,
  type Digest,
  type HealthConfig,
  type HistoryEntry,
} from '../oci/index.js';
import { resolveInRoot, resolveUser, type Runner } from '../ns/index.js';
import type { Snapshotter } from '../overlay/index.js';
import { expandWord, expandWords, LexError, type Env } from './lex.js';
import { parseDockerfile } from './parser.js';
import { toInstr, type Instr } from './instructions.js';
import { expandOrFail, findStage, PROXY_ARGS, type BuildFile, type Stage } from './dockerfile.js';
import { addHistory, addLayer, cloneState, emptyState, type ImageState } from './image.js';
import { isEmbeddedBaseName, type ImageStore, type LoadedImage } from './store.js';
import { parseMount, runArgv, runInRootfs, type MountSpec } from './run-step.js';
import { cacheKey, type BuildCache, type CacheInputs } from './cache.js';
import type { BuildContext } from './context.js';
import type { RemoteCacheOptions, RemoteEntry } from './remote-cache.js';
import { applyCopy, planCopy, type CopyPlan, type CopyRequest } from './copyfiles.js';

export interface StepLog {
  (line: string): void;
}

export interface ExecOptions {
  store: ImageStore;
  snap: Snapshotter;
  runner: Runner;
  contextDir: string;
  /** the global scope: predefined + meta ARGs */
  metaScope: Map<string, string>;
  buildArgs: ReadonlyMap<string, string>;
  /** build args that were used (for the "unused build-args" warning) */
  usedArgs: Set<string>;
  layers: boolean;
  noCache: boolean;
  pull: 'always' | 'missing' | 'never' | 'ifnewer';
  compression: Compression;
  format: 'oci' | 'docker';
  /** epoch seconds: created times and layer mtimes clamped (reproducible builds) */
  timestamp?: number | undefined;
  network: 'none' | 'host';
  secrets: ReadonlyMap<string, string>;
  log: StepLog;
  /** where RUN output goes */
  output: NodeJS.WritableStream | 'inherit' | 'ignore';
  signal: AbortSignal;
  /** get the result of another stage (waits for it) */
  stageResult: (index: number) => Promise<StageResult>;
  /** resolve an image (store, embedded base, pull) */
  getImage: (name: string) => Promise<LoadedImage>;
  /** total stages in the build (for the [i/n] prefix) */
  stageCount: number;
  cache: BuildCache;
  ctx: BuildContext;
  /** print, for each missed step, which input changed */
  explainCache: boolean;
  /** --cache-from repositories / --cache-to collector */
  remote?: { from: string[]; collect?: RemoteEntry[] | undefined; opts: RemoteCacheOptions } | undefined;
}

export interface StageResult {
  state: ImageState;
  /** cache key of the final step */
  key: string;
  lastCreated?: string | undefined;
}

/** The PATH a FROM scratch image gets (buildah and BuildKit set it). */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const TIMING = process.env.TSIMAGE_TIMING === '1';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

function nowIso(ts?: number): string {
  return ts !== undefined ? new Date(ts * 1000).toISOString().replace(/\.000Z$/, 'Z') : new Date().toISOString().replace(/(\.\d{3})\d*Z$/, '$1Z');
}

/** The content of COPY sources, for the cache key (minimal: paths, modes, sizes, sha256 of contents). */
async function hashTree(root: string, rels: string[], signal: AbortSignal): Promise<string> {
  const h = createHash('sha256');
  const walk = async (abs: string, rel: string): Promise<void> => {
    signal.throwIfAborted();
    let st;
    try {
      st = await lstat(abs);
    } catch {
      h.update(`missing ${rel}\n`);
      return;
    }
    h.update(`${rel} ${st.mode} ${st.uid}:${st.gid} ${st.size}\n`);
    if (st.isDirectory()) {
      for (const n of (await readdir(abs)).sort()) await walk(join(abs, n), `${rel}/${n}`);
    } else if (st.isFile()) h.update(await readFile(abs));
    else if (st.isSymbolicLink()) h.update(await readlink(abs));
  };
  for (const r of rels) await walk(join(root, posix.resolve('/', r)), r);
  return h.digest('hex');
}

function envMap(env: string[] | undefined): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of env ?? []) {
    const i = e.indexOf('=');
    m.set(i < 0 ? e : e.slice(0, i), i < 0 ? '' : e.slice(i + 1));
  }
  return m;
}

function setEnv(env: string[] | undefined, k: string, v: string): string[] {
  const out = (env ?? []).filter((e) => !(e === k || e.startsWith(`${k}=`)));
  out.push(`${k}=${v}`);
  // keep the original position when replacing (as buildah/docker do)
  const idx = (env ?? []).findIndex((e) => e === k || e.startsWith(`${k}=`));
  if (idx >= 0) {
    const copy = [...(env ?? [])];
    copy[idx] = `${k}=${v}`;
    return copy;
  }
  return out;
}

function fmtDuration(ms: number): string {
  return ms < 1000 ? `${ms.toFixed(0)}ms` : `${(ms / 1000).toFixed(2)}s`;
}

export class StageExecutor {
  private state!: ImageState;
  private key = '';
  /** ARGs declared in this stage: name -> value (undefined = declared, no value) */
  private args = new Map<string, string | undefined>();
  private pendingWorkdir: string | undefined;
  private shell: string[] = ['/bin/sh', '-c'];
  private step = 0;
  private total = 0;
  private prefix = '';

  constructor(
    private readonly bf: BuildFile,
    private readonly stage: Stage,
    private readonly o: ExecOptions,
  ) {}

  private log(line: string): void {
    this.o.log(`${this.prefix}${line}`);
  }

  /** Expansion scope: ARGs in this stage (with values), ENV over them. */
  private scope(): Map<string, string> {
    const m = new Map<string, string>();
    for (const [k, v] of this.args) if (v !== undefined) m.set(k, v);
    for (const [k, v] of envMap(this.state.config.config?.Env)) m.set(k, v);
    return m;
  }

  private expand(word: string, ins: Instr): string {
    return expandOrFail(word, this.scope(), ins, this.bf.escape);
  }

  private fail(ins: Instr, msg: string): never {
    throw new DockerfileError(msg, { file: ins.loc.file, line: ins.loc.line });
  }

  async run(): Promise<StageResult> {
    const st = this.stage;
    const o = this.o;
    this.total = st.instrs.length + 1;
    if (o.stageCount > 1) this.prefix = `[${st.index + 1}/${o.stageCount}] `;
    const fromName = expandOrFail(st.from.image, o.metaScope, st.from, this.bf.escape);
    this.step = 1;
    this.log(`STEP 1/${this.total}: FROM ${fromName}${st.name ? ` AS ${st.name}` : ''}`);
    const base = findStage(this.bf, fromName, st.index);
    if (fromName === 'scratch') {
      this.state = emptyState();
      this.state.config.config = { Env: [`PATH=${DEFAULT_PATH}`] };
      this.key = cacheKey(undefined, 'FROM scratch', { other: { platform: `${this.state.config.os}/${this.state.config.architecture}` } });
    } else if (base && base.name === fromName.toLowerCase()) {
      const r = await o.stageResult(base.index);
      this.state = cloneState(r.state);
      this.key = r.key;
    } else {
      let img: LoadedImage;
      try {
        img = await o.getImage(fromName);
      } catch (e) {
        if (e instanceof TsimageError && !(e instanceof DockerfileError))
          throw new DockerfileError(`FROM ${fromName}: ${e.message}`, { file: st.from.loc.file, line: st.from.loc.line });
        throw e;
      }
      this.state = { config: structuredClone(img.config), layers: structuredClone(img.manifest.layers) };
      this.state.config.history ??= [];
      this.state.config.config ??= {};
      this.key = cacheKey(undefined, 'FROM', { base: img.desc.digest });
    }
    const cfg = (this.state.config.config ??= {});
    delete this.state.config.created;
    if (cfg.Shell?.length) this.shell = [...cfg.Shell];
    // ONBUILD triggers of the base run first, then are cleared
    const triggers = cfg.OnBuild ?? [];
    delete cfg.OnBuild;
    const instrs: Instr[] = [];
    if (triggers.length) {
      for (const t of triggers) {
        let parsed;
        try {
          parsed = parseDockerfile(t + '\n', `${fromName} ONBUILD`);
        } catch (e) {
          throw new DockerfileError(`ONBUILD trigger of ${fromName} (${t}): ${(e as Error).message}`, { file: st.from.loc.file, line: st.from.loc.line });
        }
        for (const n of parsed.nodes) {
          const ins = toInstr(n, st.from.loc.file, this.bf.escape, true);
          ins.loc = { ...st.from.loc };
          instrs.push(ins);
        }
      }
      this.total += instrs.length;
    }
    instrs.push(...st.instrs);
    for (const ins of instrs) {
      o.signal.throwIfAborted();
      this.step++;
      await this.dispatch(ins);
    }
    // a WORKDIR nothing ran in is not created (buildah: same; the runtime creates it at run time)
    return { state: this.state, key: this.key, lastCreated: this.lastCreated };
  }

  private history(ins: Instr, emptyLayer: boolean, createdBy?: string): HistoryEntry {
    const h: HistoryEntry = { created: nowIso(this.o.timestamp), created_by: createdBy ?? `/bin/sh -c #(nop) ${ins.text}` };
    if (emptyLayer) h.empty_layer = true;
    return h;
  }

  private async configStep(ins: Instr, keyText: string): Promise<void> {
    const parent = this.key;
    this.key = cacheKey(parent, keyText);
    const h = this.history(ins, true);
    // recorded so --explain-cache can walk the chain; a cached step keeps its time, so a build
    // where every step is cached gives the same image (ID) again, as buildah's does
    const prev = this.o.layers && !this.o.noCache ? await this.o.cache.get(this.key, { touch: false }) : undefined;
    if (prev && this.o.timestamp === undefined && typeof prev.result.history?.created === 'string') h.created = prev.result.history.created;
    addHistory(this.state, h);
    this.lastCreated = h.created;
    if (this.o.layers && !prev) await this.o.cache.put(this.key, { parent, instruction: keyText, result: { history: { ...h } } });
  }

  private async dispatch(ins: Instr): Promise<void> {
    const o = this.o;
    const cfg = (this.state.config.config ??= {});
    const head = `STEP ${this.step}/${this.total}: ${ins.text}`;
    if (ins.kind !== 'RUN' && ins.kind !== 'COPY' && ins.kind !== 'ADD') this.log(head);
    switch (ins.kind) {
      case 'ARG': {
        for (const a of ins.args) {
          let v: string | undefined;
          if (o.buildArgs.has(a.name)) {
            v = o.buildArgs.get(a.name);
            o.usedArgs.add(a.name);
          } else if (a.value !== undefined) v = this.expand(a.value, ins);
          else if (o.metaScope.has(a.name)) v = o.metaScope.get(a.name);
          this.args.set(a.name, v);
        }
        this.key = cacheKey(this.key, `ARG ${JSON.stringify([...this.args])}`);
        return;
      }
      case 'ENV': {
        const done: string[] = [];
        for (const [k, v] of ins.pairs) {
          const kk = this.expand(k, ins);
          const vv = this.expand(v, ins);
          cfg.Env = setEnv(cfg.Env, kk, vv);
          done.push(`${kk}=${vv}`);
        }
        await this.configStep(ins, `ENV ${JSON.stringify(done)}`);
        return;
      }
      case 'LABEL': {
        cfg.Labels ??= {};
        const done: string[] = [];
        for (const [k, v] of ins.pairs) {
          const kk = this.expand(k, ins);
          const vv = this.expand(v, ins);
          cfg.Labels[kk] = vv;
          done.push(`${kk}=${vv}`);
        }
        await this.configStep(ins, `LABEL ${JSON.stringify(done)}`);
        return;
      }
      case 'MAINTAINER': {
        this.state.config.author = ins.value;
        await this.configStep(ins, `MAINTAINER ${ins.value}`);
        return;
      }
      case 'EXPOSE': {
        cfg.ExposedPorts ??= {};
        const ports: string[] = [];
        for (const p of ins.ports) {
          for (const w of this.expandWordsOf(p, ins)) {
            const m = /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/i.exec(w);
            if (!m) this.fail(ins, `invalid port ${JSON.stringify(w)} in EXPOSE (want PORT[/tcp|udp|sctp])`);
            // as buildah: a range stays one key ("8000-8002/tcp")
            const proto = (m![3] ?? 'tcp').toLowerCase();
            const key = `${m![1]}${m![2] ? `-${m![2]}` : ''}/${proto}`;
            cfg.ExposedPorts[key] = {};
            ports.push(key);
          }
        }
        await this.configStep(ins, `EXPOSE ${ports.join(' ')}`);
        return;
      }
      case 'VOLUME': {
        cfg.Volumes ??= {};
        const vols: string[] = [];
        for (const p of ins.paths) {
          const v = this.expand(p, ins);
          if (!v.trim()) this.fail(ins, 'VOLUME specified can not be an empty string');
          cfg.Volumes[v] = {};
          vols.push(v);
        }
        await this.configStep(ins, `VOLUME ${JSON.stringify(vols)}`);
        return;
      }
      case 'USER': {
        cfg.User = this.expand(ins.value, ins);
        await this.configStep(ins, `USER ${cfg.User}`);
        return;
      }
      case 'WORKDIR': {
        const v = this.expand(ins.value, ins);
        const wd = posix.resolve(cfg.WorkingDir || '/', v);
        cfg.WorkingDir = wd;
        this.pendingWorkdir = wd;
        await this.configStep(ins, `WORKDIR ${wd}`);
        return;
      }
      case 'STOPSIGNAL': {
        const v = this.expand(ins.value, ins);
        if (!/^(SIG)?[A-Z0-9+-]+$/i.test(v)) this.fail(ins, `invalid STOPSIGNAL ${JSON.stringify(v)}`);
        cfg.StopSignal = v;
        await this.configStep(ins, `STOPSIGNAL ${v}`);
        return;
      }
      case 'CMD':
      case 'ENTRYPOINT': {
        const argv = ins.shell ? [...this.shell, ins.cmd[0]!] : [...ins.cmd];
        if (ins.kind === 'CMD') cfg.Cmd = argv;
        else {
          cfg.Entrypoint = argv;
          // ENTRYPOINT resets an inherited CMD (Docker's rule), unless CMD was set in this stage
          if (!this.cmdSetHere) cfg.Cmd = null;
        }
        if (ins.kind === 'CMD') this.cmdSetHere = true;
        await this.configStep(ins, `${ins.kind} ${JSON.stringify(argv)}`);
        return;
      }
      case 'SHELL': {
        this.shell = [...ins.cmd];
        cfg.Shell = [...ins.cmd];
        await this.configStep(ins, `SHELL ${JSON.stringify(ins.cmd)}`);
        return;
      }
      case 'HEALTHCHECK': {
        const hc: HealthConfig = { Test: ins.test };
        if (ins.interval !== undefined) hc.Interval = ins.interval;
        if (ins.timeout !== undefined) hc.Timeout = ins.timeout;
        if (ins.startPeriod !== undefined) hc.StartPeriod = ins.startPeriod;
        if (ins.startInterval !== undefined) hc.StartInterval = ins.startInterval;
        if (ins.retries !== undefined) hc.Retries = ins.retries;
        cfg.Healthcheck = hc;
        await this.configStep(ins, `HEALTHCHECK ${JSON.stringify(hc)}`);
        return;
      }
      case 'ONBUILD': {
        (cfg.OnBuild ??= []).push(ins.trigger);
        await this.configStep(ins, `ONBUILD ${ins.trigger}`);
        return;
      }
      case 'RUN':
        return this.runStep(ins, head);
      case 'COPY':
      case 'ADD':
        return this.copyStep(ins, head);
      case 'FROM':
        return this.fail(ins, 'FROM inside a stage');
    }
  }

  private cmdSetHere = false;
  /** created time of this stage's last step (the image's `created` when it is the target) */
  private lastCreated: string | undefined;

  private expandWordsOf(word: string, ins: Instr): string[] {
    try {
      return expandWords(word, this.scope(), { escape: this.bf.escape }).values;
    } catch (e) {
      if (e instanceof LexError) this.fail(ins, e.message);
      throw e;
    }
  }

  /** The environment a RUN sees: image Env, then this stage's ARGs not shadowed by ENV, proxy args. */
  private runEnv(): { env: string[]; argPairs: string[] } {
    const env = [...(this.state.config.config?.Env ?? [])];
    const have = envMap(env);
    const argPairs: string[] = [];
    for (const [k, v] of this.args) {
      if (v === undefined || have.has(k)) continue;
      env.push(`${k}=${v}`);
      if (!PROXY_ARGS.includes(k)) argPairs.push(`${k}=${v}`);
    }
    for (const k of PROXY_ARGS) if (this.o.buildArgs.has(k) && !this.args.has(k) && !have.has(k)) env.push(`${k}=${this.o.buildArgs.get(k)}`);
    return { env, argPairs };
  }

  private async runStep(ins: Extract<Instr, { kind: 'RUN' }>, head: string): Promise<void> {
    const o = this.o;
    const cfg = this.state.config.config ?? {};
    const { argv, script } = runArgv(ins, this.shell);
    const { env, argPairs } = this.runEnv();
    const mounts: MountSpec[] = ins.mounts.map((m) => parseMount(this.expand(m, ins), { file: ins.loc.file, line: ins.loc.line }));
    const network = ins.network === 'none' ? 'none' : ins.network === 'host' ? 'host' : o.network;
    // bind mounts from stages or the context are inputs of the step
    const mountInputs: Record<string, string> = {};
    for (const m of mounts) {
      let k = JSON.stringify(m);
      if (m.type === 'bind') {
        if (m.from) k += ` from:${await this.fromKey(m.from, ins)}`;
        else k += ` ctx:${await hashTree(o.contextDir, [m.source ?? '/'], o.signal)}`;
      }
      mountInputs[m.target] = k;
    }
    const createdBy = `${argPairs.length ? `|${argPairs.length} ${argPairs.join(' ')} ` : ''}${ins.shell ? argv.join(' ') : ins.cmd.join(' ')}`;
    const inputs: CacheInputs = {
      env,
      mounts: mountInputs,
      other: { argv, script: script ?? null, user: cfg.User ?? '', cwd: cfg.WorkingDir ?? '/', network, workdir: this.pendingWorkdir ?? null },
    };
    this.log(head);
    await this.layerStep(ins.text, `RUN ${ins.text}`, inputs, createdBy, async (rootfs) => {
      await runInRootfs(argv, script, {
        runner: o.runner,
        rootfs,
        env,
        cwd: cfg.WorkingDir || '/',
        user: cfg.User ?? '',
        network,
        mounts,
        sourceDir: (from) => this.sourceDir(from, ins),
        cacheRoot: join(o.store.root, 'build-cache-mounts'),
        secrets: o.secrets,
        stdout: o.output,
        stderr: o.output,
        signal: o.signal,
        loc: { file: ins.loc.file, line: ins.loc.line },
      });
    }, ins);
  }

  /** Cache identity of a `--from` source (a stage's key or an image digest). */
  private async fromKey(from: string, ins: Instr): Promise<string> {
    const name = this.expand(from, ins);
    const st = findStage(this.bf, name, this.stage.index);
    if (st) return (await this.o.stageResult(st.index)).key;
    const img = await this.o.getImage(name);
    return img.desc.digest;
  }

  private readonly tempSnaps: string[] = [];

  /** A directory holding the files of a stage or image (a snapshot, removed at the end of the step). */
  private async sourceDir(from: string | undefined, ins: Instr): Promise<string> {
    const o = this.o;
    if (from === undefined) return o.contextDir;
    const name = this.expand(from, ins);
    const st = findStage(this.bf, name, this.stage.index);
    let layers: Descriptor[];
    let diffIDs: Digest[];
    if (st) {
      const r = await o.stageResult(st.index);
      layers = r.state.layers;
      diffIDs = r.state.config.rootfs.diff_ids;
    } else {
      const img = await o.getImage(name);
      layers = img.manifest.layers;
      diffIDs = img.config.rootfs.diff_ids;
    }
    await o.store.ensureLayers(o.snap, layers, diffIDs, o.signal);
    const key = `src-${process.pid}-${randomBytes(6).toString('hex')}`;
    this.tempSnaps.push(key);
    const { rootfs } = await o.snap.prepare(key, uniqueParents(diffIDs));
    return rootfs;
  }

  private async copyStep(ins: Extract<Instr, { kind: 'COPY' | 'ADD' }>, head: string): Promise<void> {
    const o = this.o;
    const cfg = this.state.config.config ?? {};
    const srcs = ins.srcs.map((s) => (/^<<-?/.test(s) ? s : this.expand(s, ins)));
    const dest = this.expand(ins.dest, ins);
    const from = ins.from !== undefined ? this.expand(ins.from, ins) : undefined;
    const req: CopyRequest = {
      kind: ins.kind,
      srcs,
      dest,
      heredocs: ins.heredocs.map((h) => (h.expand ? { ...h, content: this.expand(h.content, ins) } : h)),
      chown: ins.chown !== undefined ? this.expand(ins.chown, ins) : undefined,
      chmod: ins.chmod !== undefined ? this.expand(ins.chmod, ins) : undefined,
      link: ins.link,
      parents: ins.parents,
      exclude: ins.exclude.map((e) => this.expand(e, ins)),
      checksum: ins.checksum !== undefined ? this.expand(ins.checksum, ins) : undefined,
      unpack: ins.unpack,
      keepGitDir: ins.keepGitDir,
      loc: { file: ins.loc.file, line: ins.loc.line },
    };
    const workdir = cfg.WorkingDir || '/';
    this.log(head);
    let plan: CopyPlan | undefined;
    try {
      const source = from === undefined ? { context: o.ctx } : { rootfs: await this.sourceDir(from, ins), name: from };
      const tp = performance.now();
      plan = await planCopy(req, source, { signal: o.signal, timestamp: o.timestamp });
      if (TIMING) this.log(`    (plan ${fmtDuration(performance.now() - tp)})`);
      const p = plan;
      const inputs: CacheInputs = { files: p.inputs.files, other: { workdir, pending: this.pendingWorkdir ?? null, from: from ?? null } };
      const createdBy = `/bin/sh -c #(nop) ${ins.text}`;
      await this.layerStep(ins.text, `${ins.kind} ${JSON.stringify({ srcs, dest, chown: req.chown, chmod: req.chmod, link: req.link, parents: req.parents, exclude: req.exclude, checksum: req.checksum })}`, inputs, createdBy, async (rootfs) => {
        await applyCopy(p, { rootfs, workdir }, { signal: o.signal, timestamp: o.timestamp });
      }, ins);
    } finally {
      await plan?.dispose();
      await this.releaseTempSnaps();
    }
  }

  /**
   * A step that changes the filesystem: on a cache hit reuse the layer; else prepare a snapshot
   * on the current layers, apply `fn`, diff it into a layer in the store (an empty diff adds no
   * layer), keep it in the layer cache, and record the cache entry.
   */
  private async layerStep(text: string, instruction: string, inputs: CacheInputs, createdBy: string | undefined, fn: (rootfs: string) => Promise<void>, ins?: Instr, quietIfEmpty = false): Promise<void> {
    const o = this.o;
    const t0 = performance.now();
    const parent = this.key;
    // the same step stored with another compression is another cache entry (its layer blob differs)
    if (o.compression !== 'none') inputs = { ...inputs, other: { ...(inputs.other ?? {}), compression: o.compression } };
    const key = cacheKey(parent, instruction, inputs);
    const created = nowIso(o.timestamp);
    const hist = (empty: boolean, when: string): HistoryEntry => {
      const h: HistoryEntry = { created: when, created_by: createdBy ?? `/bin/sh -c #(nop) ${text}` };
      if (empty) h.empty_layer = true;
      return h;
    };
    if (!o.noCache && o.layers) {
      let entry = await o.cache.get(key);
      if (!entry && o.remote?.from.length) {
        const { remoteLookup } = await import('./remote-cache.js');
        const r = await remoteLookup(o.remote.from, key, o.store, { ...o.remote.opts, signal: o.signal });
        if (r) {
          const h = hist(!r.layer, r.created);
          entry = await o.cache.put(key, { parent, instruction, inputs, result: { ...(r.layer ? { layer: r.layer } : {}), history: { ...h } } });
          this.log(`--> Found ${key.slice(7, 19)} in --cache-from`);
        }
      }
      const l = entry?.result.layer;
      const usable = entry && (!l || (await o.store.layout.has(l.digest as Digest)));
      if (entry && usable) {
        const hit = { layer: l ? ({ mediaType: l.mediaType, digest: l.digest as Digest, size: l.size } as Descriptor) : undefined, created: String(entry.result.history?.created ?? entry.created) };
        if (hit.layer) addLayer(this.state, hit.layer, l!.diffID as Digest);
        if (hit.layer || !quietIfEmpty) addHistory(this.state, hist(!hit.layer, o.timestamp !== undefined ? created : hit.created));
        this.lastCreated = o.timestamp !== undefined ? created : hit.created;
        o.remote?.collect?.push({ key, created: hit.created, ...(l ? { layer: { mediaType: l.mediaType, digest: l.digest as Digest, size: l.size, diffID: l.diffID as Digest } } : {}) });
        this.key = key;
        this.pendingWorkdir = undefined;
        if (hit.layer || !quietIfEmpty) this.log(`--> Using cache ${key.slice(7, 19)}`);
        return;
      }
    }
    if (o.explainCache && o.layers && !o.noCache) this.log(`--> cache miss: ${await o.cache.explain(parent, instruction, inputs)}`);
    const st = this.state;
    await o.store.ensureLayers(o.snap, st.layers, st.config.rootfs.diff_ids, o.signal);
    const snapKey = `step-${process.pid}-${randomBytes(6).toString('hex')}`;
    let committed = false;
    try {
      const { rootfs } = await o.snap.prepare(snapKey, uniqueParents(st.config.rootfs.diff_ids), { signal: o.signal });
      if (this.pendingWorkdir) {
        const p = await resolveInRoot(rootfs, this.pendingWorkdir);
        await mkdir(p, { recursive: true, mode: 0o755 });
        this.pendingWorkdir = undefined;
      }
      const tf = performance.now();
      await fn(rootfs);
      if (TIMING) this.log(`    (apply ${fmtDuration(performance.now() - tf)})`);
      await this.releaseTempSnaps();
      await pruneUnchangedDirs(o.snap, snapKey, st.config.rootfs.diff_ids);
      let blob: Descriptor | undefined;
      const mediaType = layerMediaType('oci', o.compression);
      const res = await writeLayer(
        o.snap.diff(snapKey, { mtimeClamp: o.timestamp, signal: o.signal }),
        o.compression,
        async (body) => {
          blob = await o.store.layout.ingest({ mediaType }, body, { signal: o.signal });
        },
        { signal: o.signal },
      );
      if (TIMING) this.log(`    (layer ${fmtDuration(performance.now() - tf)} since apply start, ${res.uncompressedSize} bytes)`);
      const empty = res.uncompressedSize <= 1024;
      let layer: Descriptor | undefined;
      if (!empty) {
        layer = { mediaType, digest: blob!.digest, size: blob!.size };
        addLayer(st, layer, res.diffID);
        await o.snap.commit(snapKey, res.diffID);
        committed = true;
      }
      if (!empty || !quietIfEmpty) addHistory(st, hist(empty, created));
      this.lastCreated = created;
      if (o.layers) {
        const h = hist(empty, created);
        await o.cache.put(key, {
          parent,
          instruction,
          inputs,
          result: { ...(layer ? { layer: { digest: layer.digest, diffID: res.diffID, size: layer.size, mediaType: layer.mediaType } } : {}), history: { ...h } },
        });
      }
      o.remote?.collect?.push({ key, created, ...(layer ? { layer: { mediaType: layer.mediaType, digest: layer.digest, size: layer.size, diffID: res.diffID } } : {}) });
      this.key = key;
      if (!empty || !quietIfEmpty) this.log(`--> ${empty ? 'no changes' : res.diffID.slice(7, 19)} (${fmtDuration(performance.now() - t0)})`);
    } catch (e) {
      if (e instanceof DockerfileError || !ins) throw e;
      if (e instanceof TsimageError && /^\S+:\d+: /.test(e.message)) throw e;
      if (e instanceof UsageError || e instanceof TsimageError)
        throw new DockerfileError(`${ins.kind}: ${(e as Error).message}`, { file: ins.loc.file, line: ins.loc.line });
      throw e;
    } finally {
      await this.releaseTempSnaps();
      if (!committed) await o.snap.remove(snapKey).catch(() => {});
    }
  }

  private async releaseTempSnaps(): Promise<void> {
    while (this.tempSnaps.length) await this.o.snap.remove(this.tempSnaps.pop()!).catch(() => {});
  }
}

/**
 * Overlay can't stack the same lower twice; keeping only the topmost occurrence of a layer gives
 * the same merged tree (everything the lower copy contributes is re-applied by the upper one).
 */
export function uniqueParents(diffIDs: readonly Digest[]): Digest[] {
  const seen = new Set<string>();
  const out: Digest[] = [];
  for (let i = diffIDs.length - 1; i >= 0; i--) {
    if (seen.has(diffIDs[i]!)) continue;
    seen.add(diffIDs[i]!);
    out.unshift(diffIDs[i]!);
  }
  return out;
}

/**
 * Directories overlayfs copied up only because a run created and removed a mount stub in them
 * (/etc for /etc/hosts): empty in the upper dir, not opaque, same mode/owner/mtime as in the
 * layer below. They are not changes, so they leave the upper dir (and the layer).
 */
export async function pruneUnchangedDirs(snap: Snapshotter, key: string, parents: readonly Digest[]): Promise<void> {
  if (snap.driver !== 'overlay') return;
  const upper = join(snap.root, 'containers', key, 'upper');
  const { getXattr } = await import('../oci/index.js');
  const { rmdir } = await import('node:fs/promises');
  const lowerStat = async (rel: string) => {
    for (let i = parents.length - 1; i >= 0; i--) {
      const p = join(snap.root, 'layers', parents[i]!.slice(7), 'diff', rel);
      try {
        return await lstat(p);
      } catch {}
    }
    return undefined;
  };
  const visit = async (rel: string): Promise<boolean> => {
    const abs = join(upper, rel);
    let names: string[];
    try {
      names = await readdir(abs);
    } catch {
      return false;
    }
    let empty = true;
    for (const n of names) {
      const child = rel ? `${rel}/${n}` : n;
      const st = await lstat(join(upper, child));
      if (st.isDirectory() && (await visit(child))) continue;
      empty = false;
    }
    if (!rel || !empty) return false;
    const st = await lstat(abs);
    if (getXattr(abs, 'trusted.overlay.opaque')?.toString() === 'y') return false;
    const low = await lowerStat(rel);
    if (!low || !low.isDirectory()) return false;
    if (low.mode !== st.mode || low.uid !== st.uid || low.gid !== st.gid || Math.floor(low.mtimeMs / 1000) !== Math.floor(st.mtimeMs / 1000)) return false;
    await rmdir(abs);
    return true;
  };
  await visit('');
}

/** Collect writes into a string (tests). */
export class StringSink extends Writable {
  text = '';
  override _write(chunk: Buffer, _e: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

export { expandWord };
export type { Env };
