/**
 * A Dockerfile as stages (BuildKit's dockerfile2llb/convert.go): global ARGs before the first
 * FROM, stages named by `AS`, the stage graph (FROM <stage>, COPY --from, RUN --mount from=)
 * and the stages a target reaches. All syntax errors surface here, with file:line, before
 * anything runs.
 */
import { DockerfileError, UsageError } from '../oci/index.js';
import { expandWord, LexError, type Env } from './lex.js';
import { parseDockerfile } from './parser.js';
import { toInstr, type Instr } from './instructions.js';

export type FromInstr = Extract<Instr, { kind: 'FROM' }>;
export type ArgInstr = Extract<Instr, { kind: 'ARG' }>;

export interface Stage {
  index: number;
  /** lower-cased `AS` name */
  name?: string;
  from: FromInstr;
  instrs: Instr[];
}

export interface BuildFile {
  file: string;
  escape: string;
  directives: Record<string, string>;
  metaArgs: ArgInstr[];
  stages: Stage[];
  warnings: string[];
}

export function loadDockerfile(text: string, file = 'Dockerfile'): BuildFile {
  const parsed = parseDockerfile(text, file);
  const metaArgs: ArgInstr[] = [];
  const stages: Stage[] = [];
  for (const node of parsed.nodes) {
    const ins = toInstr(node, file, parsed.escape);
    if (ins.kind === 'FROM') {
      if (ins.stageName && stages.some((s) => s.name === ins.stageName))
        throw new DockerfileError(`duplicate stage name "${ins.stageName}"`, { file, line: ins.loc.line });
      const st: Stage = { index: stages.length, from: ins, instrs: [] };
      if (ins.stageName) st.name = ins.stageName;
      stages.push(st);
      continue;
    }
    const cur = stages[stages.length - 1];
    if (!cur) {
      if (ins.kind === 'ARG') {
        metaArgs.push(ins);
        continue;
      }
      throw new DockerfileError(`${ins.kind} before the first FROM: only ARG may precede FROM`, { file, line: ins.loc.line });
    }
    cur.instrs.push(ins);
  }
  if (stages.length === 0) throw new DockerfileError('the Dockerfile has no FROM instruction (no build stage)', { file, line: 1 });
  return { file, escape: parsed.escape, directives: parsed.directives, metaArgs, stages, warnings: parsed.warnings };
}

/** Proxy ARGs usable without ARG; passed to RUN but kept out of history and cache keys. */
export const PROXY_ARGS = ['HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'FTP_PROXY', 'ftp_proxy', 'NO_PROXY', 'no_proxy', 'ALL_PROXY', 'all_proxy'];

export function platformArgs(target: { os: string; architecture: string; variant?: string }, build = target): Map<string, string> {
  const fmt = (p: { os: string; architecture: string; variant?: string }): string => `${p.os}/${p.architecture}${p.variant ? '/' + p.variant : ''}`;
  return new Map([
    ['TARGETPLATFORM', fmt(target)],
    ['TARGETOS', target.os],
    ['TARGETARCH', target.architecture],
    ['TARGETVARIANT', target.variant ?? ''],
    ['BUILDPLATFORM', fmt(build)],
    ['BUILDOS', build.os],
    ['BUILDARCH', build.architecture],
    ['BUILDVARIANT', build.variant ?? ''],
  ]);
}

export function expandOrFail(word: string, env: Env, ins: { loc: { file: string; line: number } }, escape: string): string {
  try {
    return expandWord(word, env, { escape }).value;
  } catch (e) {
    if (e instanceof LexError) throw new DockerfileError(e.message, { file: ins.loc.file, line: ins.loc.line });
    throw e;
  }
}

/** The global scope: predefined platform args, then meta ARGs (build args override defaults). */
export function resolveMetaArgs(bf: BuildFile, buildArgs: ReadonlyMap<string, string>, predefined: ReadonlyMap<string, string>): Map<string, string> {
  const scope = new Map(predefined);
  for (const ins of bf.metaArgs) {
    for (const a of ins.args) {
      if (buildArgs.has(a.name)) scope.set(a.name, buildArgs.get(a.name)!);
      else if (a.value !== undefined) scope.set(a.name, expandOrFail(a.value, scope, ins, bf.escape));
      else if (!predefined.has(a.name)) scope.delete(a.name);
    }
  }
  return scope;
}

/** Stage names are case-insensitive; numbers index stages. */
export function findStage(bf: BuildFile, ref: string, before = bf.stages.length): Stage | undefined {
  const low = ref.toLowerCase();
  const byName = bf.stages.slice(0, before).find((s) => s.name === low);
  if (byName) return byName;
  if (/^\d+$/.test(ref)) {
    const i = Number(ref);
    return i < before ? bf.stages[i] : undefined;
  }
  return undefined;
}

function mountFrom(spec: string): string | undefined {
  for (const part of spec.split(',')) {
    const [k, v] = part.split('=', 2);
    if (k?.trim() === 'from' && v !== undefined) return v.trim();
  }
  return undefined;
}

/**
 * Stage dependencies. `scope` expands `FROM $X` and `COPY --from=$X` (meta args and build args,
 * as BuildKit resolves names before it builds the graph).
 */
export function stageDeps(bf: BuildFile, scope: Env): Map<number, Set<number>> {
  const deps = new Map<number, Set<number>>();
  for (const st of bf.stages) {
    const d = new Set<number>();
    const fromName = expandOrFail(st.from.image, scope, st.from, bf.escape);
    const base = findStage(bf, fromName, st.index);
    if (base && base.name === fromName.toLowerCase()) d.add(base.index);
    for (const ins of st.instrs) {
      let ref: string | undefined;
      if ((ins.kind === 'COPY' || ins.kind === 'ADD') && 'from' in ins && ins.from) ref = ins.from;
      if (ins.kind === 'RUN') {
        for (const m of ins.mounts) {
          const f = mountFrom(m);
          if (f) {
            const s = findStage(bf, expandOrFail(f, scope, ins, bf.escape), st.index);
            if (s) d.add(s.index);
          }
        }
      }
      if (ref === undefined) continue;
      const name = expandOrFail(ref, scope, ins, bf.escape);
      const s = findStage(bf, name, st.index);
      if (s) d.add(s.index);
      else if (/^\d+$/.test(name)) throw new DockerfileError(`invalid stage index ${name} in --from (stages before this one: ${st.index})`, { file: bf.file, line: ins.loc.line });
      else if (findStage(bf, name)) throw new DockerfileError(`--from=${name} refers to a stage defined later in the file`, { file: bf.file, line: ins.loc.line });
    }
    deps.set(st.index, d);
  }
  return deps;
}

export function targetStage(bf: BuildFile, target?: string): Stage {
  if (target === undefined || target === '') return bf.stages[bf.stages.length - 1]!;
  const st = findStage(bf, target);
  if (!st || st.name !== target.toLowerCase()) throw new UsageError(`target stage "${target}" could not be found in ${bf.file}`);
  return st;
}

/** The stages `target` needs, in a valid build order (dependencies first). */
export function reachableStages(bf: BuildFile, deps: Map<number, Set<number>>, target: Stage): number[] {
  const order: number[] = [];
  const seen = new Set<number>();
  const visit = (i: number, path: number[]): void => {
    if (path.includes(i)) throw new DockerfileError('circular dependency between stages', { file: bf.file, line: bf.stages[i]!.from.loc.line });
    if (seen.has(i)) return;
    for (const d of deps.get(i) ?? []) visit(d, [...path, i]);
    seen.add(i);
    order.push(i);
  };
  visit(target.index, []);
  return order;
}
