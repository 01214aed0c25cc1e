/**
 * Typed instructions (BuildKit's frontend/dockerfile/instructions/{parse,commands}.go):
 * a switch per keyword turns a parsed Node into an `Instr`, checking flags and argument
 * counts, with errors naming file:line. Variables are expanded later, at dispatch, because
 * their values depend on the stage's ENV and ARGs.
 */
import { DockerfileError } from '../oci/index.js';
import { extractBuilderFlags, parseJsonForm, parseWords, splitWhitespace, type Heredoc, type Node } from './parser.js';

export interface Loc {
  file: string;
  line: number;
  endLine: number;
}

export interface CopyFlags {
  from?: string;
  chown?: string;
  chmod?: string;
  link: boolean;
  parents: boolean;
  exclude: string[];
  checksum?: string;
  keepGitDir: boolean;
  unpack?: boolean;
}

export interface HealthcheckInstr {
  kind: 'HEALTHCHECK';
  none: boolean;
  test: string[];
  shell: boolean;
  interval?: number;
  timeout?: number;
  startPeriod?: number;
  startInterval?: number;
  retries?: number;
}

export type InstrBody =
  | { kind: 'FROM'; image: string; stageName?: string; platform?: string }
  | { kind: 'RUN'; shell: boolean; cmd: string[]; heredocs: Heredoc[]; mounts: string[]; network?: string; security?: string }
  | { kind: 'CMD' | 'ENTRYPOINT'; shell: boolean; cmd: string[] }
  | { kind: 'SHELL'; cmd: string[] }
  | { kind: 'ENV' | 'LABEL'; pairs: [string, string][] }
  | { kind: 'ARG'; args: { name: string; value?: string }[] }
  | { kind: 'EXPOSE'; ports: string[] }
  | { kind: 'VOLUME'; paths: string[]; json: boolean }
  | { kind: 'USER' | 'WORKDIR' | 'STOPSIGNAL' | 'MAINTAINER'; value: string }
  | ({ kind: 'COPY' | 'ADD'; srcs: string[]; dest: string; heredocs: Heredoc[]; json: boolean } & CopyFlags)
  | HealthcheckInstr
  | { kind: 'ONBUILD'; trigger: string; instr: Instr };

export type Instr = InstrBody & { loc: Loc; /** the instruction as written (one line) */ text: string };
export type Kind = Instr['kind'];

const KEYWORDS = [
  'ADD', 'ARG', 'CMD', 'COPY', 'ENTRYPOINT', 'ENV', 'EXPOSE', 'FROM', 'HEALTHCHECK', 'LABEL', 'MAINTAINER',
  'ONBUILD', 'RUN', 'SHELL', 'STOPSIGNAL', 'USER', 'VOLUME', 'WORKDIR',
] as const;

type FlagSpec = Record<string, 'string' | 'bool' | 'multi'>;
const FLAGS: Record<string, FlagSpec> = {
  from: { platform: 'string' },
  run: { mount: 'multi', network: 'string', security: 'string' },
  copy: { from: 'string', chown: 'string', chmod: 'string', link: 'bool', parents: 'bool', exclude: 'multi' },
  add: { chown: 'string', chmod: 'string', link: 'bool', checksum: 'string', 'keep-git-dir': 'bool', exclude: 'multi', unpack: 'bool' },
  healthcheck: { interval: 'string', timeout: 'string', 'start-period': 'string', 'start-interval': 'string', retries: 'string' },
};

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length]![b.length]!;
}

export function suggestKeyword(word: string): string | undefined {
  const up = word.toUpperCase();
  let best: string | undefined;
  let bestD = 3;
  for (const k of KEYWORDS) {
    const dd = editDistance(up, k);
    if (dd < bestD) {
      bestD = dd;
      best = k;
    }
  }
  return best;
}

interface ParsedFlags {
  str: Map<string, string>;
  bool: Map<string, boolean>;
  multi: Map<string, string[]>;
}

function parseFlags(node: Node, fail: (m: string) => never): ParsedFlags {
  const spec = FLAGS[node.keyword] ?? {};
  const out: ParsedFlags = { str: new Map(), bool: new Map(), multi: new Map() };
  for (const f of node.flags) {
    if (!f.startsWith('--')) fail(`arguments must begin with '--': ${f}`);
    const body = f.slice(2);
    const eq = body.indexOf('=');
    const name = eq < 0 ? body : body.slice(0, eq);
    const value = eq < 0 ? undefined : body.slice(eq + 1);
    const type = spec[name];
    if (!type) fail(`unknown flag: --${name} for ${node.original.toUpperCase()}`);
    if (type === 'bool') {
      if (value === undefined || value.toLowerCase() === 'true') out.bool.set(name, true);
      else if (value.toLowerCase() === 'false') out.bool.set(name, false);
      else fail(`expecting boolean value for flag --${name}, not: ${value}`);
    } else {
      if (value === undefined) fail(`missing a value on flag: --${name}`);
      if (type === 'multi') out.multi.set(name, [...(out.multi.get(name) ?? []), value]);
      else {
        if (out.str.has(name)) fail(`duplicate flag specified: --${name}`);
        out.str.set(name, value);
      }
    }
  }
  return out;
}

/** Go's time.ParseDuration, in nanoseconds. */
export function parseGoDuration(s: string): number {
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/gy;
  const unit: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  re.lastIndex = 0;
  while ((m = re.exec(s))) {
    total += Number(m[1]) * unit[m[2]!]!;
    pos = re.lastIndex;
  }
  if (pos !== s.length || s.length === 0) throw new Error(`time: invalid duration "${s}"`);
  return Math.round(total);
}

/** A whole-instruction one-line text, used in history and cache keys. */
function textOf(node: Node): string {
  const flags = node.flags.map((f) => f + ' ').join('');
  return `${node.original.toUpperCase()} ${flags}${node.rest}`.trim();
}

export function toInstr(node: Node, file: string, escape: string, inOnbuild = false): Instr {
  const loc: Loc = { file, line: node.startLine, endLine: node.endLine };
  const fail = (m: string): never => {
    throw new DockerfileError(m, { file, line: node.startLine });
  };
  const kw = node.keyword;
  const KW = kw.toUpperCase();
  const rest = node.rest;
  const base = { loc, text: textOf(node) };
  if (!(KEYWORDS as readonly string[]).includes(KW)) {
    const s = suggestKeyword(kw);
    fail(`unknown instruction: ${node.original.toUpperCase()}${s ? ` (did you mean ${s}?)` : ''}`);
  }
  const flags = parseFlags(node, fail);
  const json = (): string[] | undefined => {
    try {
      return parseJsonForm(rest);
    } catch (e) {
      return fail((e as Error).message);
    }
  };
  const exactlyOne = (): string => {
    const v = rest.trim();
    if (!v) fail(`${KW} requires exactly one argument`);
    return v;
  };
  switch (KW) {
    case 'FROM': {
      if (inOnbuild) fail('FROM is not allowed as an ONBUILD trigger');
      const args = splitWhitespace(rest);
      let stageName: string | undefined;
      if (args.length === 3 && args[1]!.toLowerCase() === 'as') {
        stageName = args[2]!.toLowerCase();
        if (!/^[a-z][a-z0-9-_.]*$/.test(stageName))
          fail(`invalid name for build stage: "${args[2]}", name can't start with a number or contain symbols`);
      } else if (args.length !== 1) fail('FROM requires either one or three arguments');
      const out: Instr = { ...base, kind: 'FROM', image: args[0]! };
      if (stageName) out.stageName = stageName;
      const pl = flags.str.get('platform');
      if (pl !== undefined) out.platform = pl;
      return out;
    }
    case 'RUN': {
      if (!rest.trim()) fail('RUN requires at least one argument');
      const j = json();
      const out: Instr = { ...base, kind: 'RUN', shell: !j, cmd: j ?? [rest], heredocs: node.heredocs, mounts: flags.multi.get('mount') ?? [] };
      const n = flags.str.get('network');
      if (n !== undefined) {
        if (!['default', 'none', 'host'].includes(n)) fail(`unsupported network mode "${n}" (want default, none or host)`);
        out.network = n;
      }
      const sec = flags.str.get('security');
      if (sec !== undefined) out.security = sec;
      return out;
    }
    case 'CMD':
    case 'ENTRYPOINT': {
      const j = json();
      if (!j && !rest.trim() && KW === 'CMD') return { ...base, kind: KW, shell: false, cmd: [] };
      return { ...base, kind: KW, shell: !j, cmd: j ?? (rest.trim() ? [rest] : []) };
    }
    case 'SHELL': {
      const j = json();
      if (!j) return fail('SHELL requires the arguments to be in JSON form');
      if (j.length === 0) fail('SHELL requires at least one argument');
      return { ...base, kind: 'SHELL', cmd: j };
    }
    case 'ENV':
    case 'LABEL': {
      const words = parseWords(rest, escape);
      if (words.length === 0) fail(`${KW} requires at least one argument`);
      if (!words[0]!.includes('=')) {
        const parts = rest.trim().split(/[\t\v\f\r ]+/);
        if (parts.length < 2) fail(`${KW} must have two arguments`);
        const m = /^(\S+)[\t\v\f\r ]+([\s\S]*)$/.exec(rest.trim())!;
        return { ...base, kind: KW, pairs: [[m[1]!, m[2]!]] };
      }
      const pairs: [string, string][] = [];
      for (const w of words) {
        const eq = w.indexOf('=');
        if (eq < 0) fail(`Syntax error - can't find = in "${w}". Must be of the form: name=value`);
        if (eq === 0) fail(`${KW} names can not be blank`);
        pairs.push([w.slice(0, eq), w.slice(eq + 1)]);
      }
      return { ...base, kind: KW, pairs };
    }
    case 'ARG': {
      const words = parseWords(rest, escape);
      if (words.length === 0) fail('ARG requires at least one argument');
      const args = words.map((w) => {
        const eq = w.indexOf('=');
        const name = eq < 0 ? w : w.slice(0, eq);
        if (!name) fail('ARG names can not be blank');
        return eq < 0 ? { name } : { name, value: w.slice(eq + 1) };
      });
      return { ...base, kind: 'ARG', args };
    }
    case 'EXPOSE': {
      const ports = splitWhitespace(rest);
      if (ports.length === 0) fail('EXPOSE requires at least one argument');
      return { ...base, kind: 'EXPOSE', ports };
    }
    case 'VOLUME': {
      const j = json();
      const paths = j ?? splitWhitespace(rest);
      if (paths.length === 0) fail('VOLUME requires at least one argument');
      for (const p of paths) if (!p.trim()) fail('VOLUME specified can not be an empty string');
      return { ...base, kind: 'VOLUME', paths, json: !!j };
    }
    case 'USER':
    case 'WORKDIR':
    case 'STOPSIGNAL':
      return { ...base, kind: KW, value: exactlyOne() };
    case 'MAINTAINER':
      if (inOnbuild) fail('MAINTAINER is not allowed as an ONBUILD trigger');
      return { ...base, kind: 'MAINTAINER', value: exactlyOne() };
    case 'COPY':
    case 'ADD': {
      const j = json();
      const args = j ?? splitWhitespace(rest);
      const heredocs = j ? [] : node.heredocs;
      const hdNames = new Set(heredocs.map((h) => h.name));
      if (args.length < 2)
        fail(`${KW} requires at least two arguments, but only ${args.length === 0 ? 'none were' : 'one was'} provided. Destination could not be determined`);
      const srcs = args.slice(0, -1);
      // heredoc sources are written as <<NAME (or <<-NAME, <<"NAME")
      const heredocSrc = srcs.filter((s) => /^<<-?/.test(s));
      if (heredocSrc.length && heredocSrc.length !== heredocs.length && hdNames.size) fail('heredoc sources do not match the heredocs');
      const out: Instr = {
        ...base,
        kind: KW,
        srcs,
        dest: args[args.length - 1]!,
        heredocs,
        json: !!j,
        link: flags.bool.get('link') ?? false,
        parents: flags.bool.get('parents') ?? false,
        exclude: flags.multi.get('exclude') ?? [],
        keepGitDir: flags.bool.get('keep-git-dir') ?? false,
      };
      for (const k of ['from', 'chown', 'chmod', 'checksum'] as const) {
        const v = flags.str.get(k);
        if (v !== undefined) out[k] = v;
      }
      const unpack = flags.bool.get('unpack');
      if (unpack !== undefined) out.unpack = unpack;
      if (out.checksum !== undefined && !srcs.every((s) => /^https?:\/\//.test(s) || s.startsWith('git@')))
        fail('checksum can\'t be specified for non-HTTP(S) sources');
      return out;
    }
    case 'HEALTHCHECK': {
      const m = /^(\S+)\s*([\s\S]*)$/.exec(rest.trim());
      if (!m) fail('HEALTHCHECK requires an argument (CMD or NONE)');
      const typ = m![1]!.toUpperCase();
      if (typ === 'NONE') {
        if (m![2]!.trim()) fail('HEALTHCHECK NONE takes no arguments');
        if (node.flags.length) fail('HEALTHCHECK NONE takes no flags');
        return { ...base, kind: 'HEALTHCHECK', none: true, test: ['NONE'], shell: false };
      }
      if (typ !== 'CMD') fail(`unknown type for healthcheck: ${m![1]} (want CMD or NONE)`);
      let j: string[] | undefined;
      try {
        j = parseJsonForm(m![2]!);
      } catch (e) {
        fail((e as Error).message);
      }
      if (!j && !m![2]!.trim()) fail('missing command after HEALTHCHECK CMD');
      const out: HealthcheckInstr & { loc: Loc; text: string } = {
        ...base,
        kind: 'HEALTHCHECK',
        none: false,
        test: j ? ['CMD', ...j] : ['CMD-SHELL', m![2]!],
        shell: !j,
      };
      const dur = (name: string, key: 'interval' | 'timeout' | 'startPeriod' | 'startInterval'): void => {
        const v = flags.str.get(name);
        if (v === undefined || v === '') return;
        let n: number;
        try {
          n = parseGoDuration(v);
        } catch (e) {
          return fail(`--${name}: ${(e as Error).message}`);
        }
        if (n !== 0 && n < 1e6) fail(`--${name} cannot be less than 1ms`);
        out[key] = n;
      };
      dur('interval', 'interval');
      dur('timeout', 'timeout');
      dur('start-period', 'startPeriod');
      dur('start-interval', 'startInterval');
      const r = flags.str.get('retries');
      if (r !== undefined) {
        if (!/^-?\d+$/.test(r)) fail(`--retries: invalid number "${r}"`);
        if (Number(r) < 0) fail('--retries cannot be negative');
        out.retries = Number(r);
      }
      return out;
    }
    case 'ONBUILD': {
      if (inOnbuild) fail('chaining ONBUILD via `ONBUILD ONBUILD` isn\'t allowed');
      const t = rest.trim();
      if (!t) fail('ONBUILD requires at least one argument');
      const sp = /^(\S+)\s*([\s\S]*)$/.exec(t)!;
      const ex = extractBuilderFlags(sp[2]!);
      const sub: Node = {
        keyword: sp[1]!.toLowerCase(),
        original: sp[1]!,
        flags: ex.flags,
        rest: ex.rest,
        heredocs: node.heredocs,
        startLine: node.startLine,
        endLine: node.endLine,
      };
      const instr = toInstr(sub, file, escape, true);
      return { ...base, kind: 'ONBUILD', trigger: t, instr };
    }
  }
  return fail(`unknown instruction: ${node.original}`);
}
