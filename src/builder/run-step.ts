/**
 * RUN: the command line (shell/exec form, heredocs), `--mount=type=cache|bind|secret|tmpfs`,
 * the per-run environment, and running it in a prepared rootfs with src/ns's runner.
 */
import { createHash } from 'node:crypto';
import { chmod, chown, copyFile, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { DockerfileError, RunError, TsimageError, UsageError } from '../oci/index.js';
import { checkResult, type Mount, type Runner } from '../ns/index.js';
import type { Heredoc } from './parser.js';
import type { Instr } from './instructions.js';

export type RunInstr = Extract<Instr, { kind: 'RUN' }>;

export interface MountSpec {
  type: 'bind' | 'cache' | 'tmpfs' | 'secret' | 'ssh';
  target: string;
  source?: string;
  from?: string;
  id?: string;
  readonly: boolean;
  sharing?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  required?: boolean;
  size?: string;
  env?: string;
}

/** Parse one `--mount=` value (already expanded), BuildKit's runmount.go rules. */
export function parseMount(spec: string, loc: { file: string; line: number }): MountSpec {
  const fail = (m: string): never => {
    throw new DockerfileError(`--mount=${spec}: ${m}`, loc);
  };
  const kv = new Map<string, string | undefined>();
  for (const raw of spec.split(',')) {
    const part = raw.trim();
    if (!part) continue;
    const eq = part.indexOf('=');
    const k = (eq < 0 ? part : part.slice(0, eq)).toLowerCase();
    let v = eq < 0 ? undefined : part.slice(eq + 1);
    if (v !== undefined && /^".*"$/.test(v)) v = v.slice(1, -1);
    kv.set(k, v);
  }
  const type = (kv.get('type') ?? 'bind') as MountSpec['type'];
  if (!['bind', 'cache', 'tmpfs', 'secret', 'ssh'].includes(type)) fail(`unsupported mount type "${type}"`);
  let target = kv.get('target') ?? kv.get('dst') ?? kv.get('destination') ?? kv.get('dest');
  const id = kv.get('id');
  if (!target) {
    if (type === 'secret') target = `/run/secrets/${id ?? posix.basename(kv.get('source') ?? kv.get('src') ?? '') ?? ''}`;
    else if (type === 'ssh') target = `/run/buildkit/ssh_agent.0`;
    else fail('mount target is required (target=PATH)');
  }
  const bool = (k: string): boolean | undefined => {
    if (!kv.has(k)) return undefined;
    const v = kv.get(k);
    if (v === undefined || v === '' || v.toLowerCase() === 'true') return true;
    if (v.toLowerCase() === 'false') return false;
    return fail(`invalid boolean for ${k}: ${v}`);
  };
  const rw = bool('rw') ?? bool('readwrite');
  const ro = bool('ro') ?? bool('readonly');
  const num = (k: string, radix = 10): number | undefined => {
    const v = kv.get(k);
    if (v === undefined) return undefined;
    const n = parseInt(v, radix);
    if (!Number.isFinite(n) || n < 0) fail(`invalid ${k}: ${v}`);
    return n;
  };
  const out: MountSpec = {
    type,
    target: posix.resolve('/', target!),
    readonly: type === 'bind' ? !(rw ?? false) : type === 'secret' ? true : (ro ?? false),
  };
  const source = kv.get('source') ?? kv.get('src');
  if (source !== undefined) out.source = source;
  const from = kv.get('from');
  if (from !== undefined) out.from = from;
  if (id !== undefined) out.id = id;
  const sharing = kv.get('sharing');
  if (sharing !== undefined) {
    if (!['shared', 'private', 'locked'].includes(sharing)) fail(`invalid sharing "${sharing}" (shared, private or locked)`);
    out.sharing = sharing;
  }
  const mode = num('mode', 8);
  if (mode !== undefined) out.mode = mode;
  const uid = num('uid');
  if (uid !== undefined) out.uid = uid;
  const gid = num('gid');
  if (gid !== undefined) out.gid = gid;
  const req = bool('required');
  if (req !== undefined) out.required = req;
  const size = kv.get('size');
  if (size !== undefined) out.size = size;
  const env = kv.get('env');
  if (env !== undefined) out.env = env;
  return out;
}

/** The argv of a RUN and the files its heredocs need. */
export function runArgv(ins: RunInstr, shell: string[]): { argv: string[]; script?: { name: string; content: string } } {
  if (!ins.shell) return { argv: ins.cmd };
  const cmd = ins.cmd[0] ?? '';
  const hd: Heredoc[] = ins.heredocs;
  if (hd.length === 1 && /^\s*<<-?(["']?)([^"'\s]+)\1\s*$/.test(cmd)) {
    let content = hd[0]!.content;
    if (hd[0]!.chomp) content = content.replace(/^\t+/gm, '');
    if (content.startsWith('#!')) return { argv: [`/dev/pipes/${hd[0]!.name}`], script: { name: hd[0]!.name, content } };
    return { argv: [...shell, content] };
  }
  if (hd.length) {
    let script = cmd;
    for (const h of hd) script += `\n${h.content}${h.name}`;
    return { argv: [...shell, script] };
  }
  return { argv: [...shell, cmd] };
}

export interface RunContext {
  runner: Runner;
  rootfs: string;
  env: string[];
  cwd: string;
  user: string;
  network: 'none' | 'host';
  mounts: MountSpec[];
  /** resolve a bind/cache `from=` to a directory (a stage's or image's rootfs), or the build context when undefined */
  sourceDir: (from: string | undefined) => Promise<string>;
  cacheRoot: string;
  secrets: ReadonlyMap<string, string>;
  stdout: NodeJS.WritableStream | 'inherit' | 'ignore';
  stderr: NodeJS.WritableStream | 'inherit' | 'ignore';
  signal?: AbortSignal | undefined;
  loc: { file: string; line: number };
}

/** Serialises `sharing=locked` cache mounts of one id within this process. */
const cacheLocks = new Map<string, Promise<void>>();

function safeJoin(root: string, rel: string): string {
  const p = posix.resolve('/', rel);
  return join(root, p);
}

/** Run `argv` with the mounts; every temp dir is removed on every path. */
export async function runInRootfs(argv: string[], script: { name: string; content: string } | undefined, c: RunContext): Promise<void> {
  const tmp = await mkdtemp(join(tmpdir(), 'tsimage-runstep-'));
  const releases: (() => void)[] = [];
  try {
    const mounts: Mount[] = [];
    const env = [...c.env];
    if (script) {
      const d = join(tmp, 'pipes');
      await mkdir(d);
      await writeFile(join(d, script.name), script.content, { mode: 0o755 });
      mounts.push({ type: 'bind', source: d, destination: '/dev/pipes', readonly: true });
    }
    let n = 0;
    for (const m of c.mounts) {
      n++;
      switch (m.type) {
        case 'tmpfs': {
          const opts: string[] = [];
          if (m.size) opts.push(`size=${m.size}`);
          mounts.push({ type: 'tmpfs', destination: m.target, options: opts });
          break;
        }
        case 'bind': {
          const base = await c.sourceDir(m.from);
          const src = safeJoin(base, m.source ?? '/');
          await stat(src).catch(() => {
            throw new DockerfileError(`--mount=type=bind: source ${m.source ?? '/'} does not exist${m.from ? ` in ${m.from}` : ' in the build context'}`, c.loc);
          });
          if (m.readonly) mounts.push({ type: 'bind', source: src, destination: m.target, readonly: true });
          else {
            // rw binds: writes are discarded (BuildKit semantics) -> a private copy
            const copy = join(tmp, `bind-${n}`);
            await cpa(src, copy);
            mounts.push({ type: 'bind', source: copy, destination: m.target });
          }
          break;
        }
        case 'cache': {
          const id = m.id ?? m.target;
          const dir = join(c.cacheRoot, createHash('sha256').update(id).digest('hex').slice(0, 32));
          let fresh = false;
          try {
            await stat(dir);
          } catch {
            fresh = true;
            await mkdir(dir, { recursive: true, mode: m.mode ?? 0o755 });
            if (m.uid !== undefined || m.gid !== undefined) await chown(dir, m.uid ?? 0, m.gid ?? 0);
            if (m.from) {
              const base = await c.sourceDir(m.from);
              await cpa(safeJoin(base, m.source ?? '/') + '/.', dir);
            }
          }
          void fresh;
          if (m.sharing === 'locked') {
            const prev = cacheLocks.get(dir) ?? Promise.resolve();
            let rel!: () => void;
            const mine = new Promise<void>((r) => (rel = r));
            const chained = prev.then(() => mine);
            cacheLocks.set(dir, chained);
            await prev;
            releases.push(() => {
              rel();
              if (cacheLocks.get(dir) === chained) cacheLocks.delete(dir);
            });
          }
          mounts.push({ type: 'bind', source: dir, destination: m.target, readonly: m.readonly });
          break;
        }
        case 'secret': {
          const id = m.id ?? posix.basename(m.target);
          const src = c.secrets.get(id);
          if (!src) {
            if (m.required) throw new DockerfileError(`secret ${id} is required but was not given (--secret id=${id},src=FILE)`, c.loc);
            break;
          }
          const f = join(tmp, `secret-${n}`);
          await copyFile(src, f).catch((e: unknown) => {
            throw new UsageError(`secret ${id}: cannot read ${src}: ${(e as Error).message}`);
          });
          await chmod(f, m.mode ?? 0o400);
          await chown(f, m.uid ?? 0, m.gid ?? 0);
          if (m.env) {
            const { readFile } = await import('node:fs/promises');
            env.push(`${m.env}=${(await readFile(src, 'utf8')).trim()}`);
          }
          mounts.push({ type: 'bind', source: f, destination: m.target, readonly: true });
          break;
        }
        case 'ssh':
          if (m.required) throw new DockerfileError('--mount=type=ssh is not supported by tsbuild', c.loc);
          break;
      }
    }
    const r = await c.runner.run(argv, {
      rootfs: c.rootfs,
      env,
      cwd: c.cwd,
      user: c.user || undefined,
      network: c.network,
      mounts,
      stdio: { stdin: 'ignore', stdout: c.stdout as 'inherit', stderr: c.stderr as 'inherit' },
      signal: c.signal,
    });
    try {
      checkResult(argv, r);
    } catch (e) {
      if (e instanceof RunError) {
        const err = new TsimageError(`${c.loc.file}:${c.loc.line}: RUN failed: ${e.message}`, { cause: e });
        throw err;
      }
      throw e;
    }
  } finally {
    for (const r of releases) r();
    await rm(tmp, { recursive: true, force: true });
  }
}

async function cpa(src: string, dst: string): Promise<void> {
  const { execFile } = await import('node:child_process');
  await new Promise<void>((resolve, reject) =>
    execFile('cp', ['-a', src, dst], (err, _o, stderr) => (err ? reject(new TsimageError(`cp -a ${src} ${dst}: ${stderr || err.message}`)) : resolve())),
  );
}
