/**
 * The subset of Go's text/template that `skopeo inspect --format` users write: `{{.Field.Sub}}`,
 * `{{json .X}}`, `{{index .Map "key"}}`, `{{range .List}}...{{.}}...{{end}}`, `{{if .X}}...{{else}}...{{end}}`,
 * and `{{"literal"}}`. Values print as Go prints them (`[a b]`, `map[k:v]`, `<no value>`).
 */
import { UsageError } from '../oci/errors.js';

type Node =
  | { t: 'text'; v: string }
  | { t: 'expr'; v: string }
  | { t: 'range'; v: string; body: Node[] }
  | { t: 'if'; v: string; body: Node[]; orElse: Node[] };

function tokenize(src: string): { text?: string; action?: string }[] {
  const out: { text?: string; action?: string }[] = [];
  let i = 0;
  while (i < src.length) {
    const open = src.indexOf('{{', i);
    if (open < 0) {
      out.push({ text: src.slice(i) });
      break;
    }
    if (open > i) out.push({ text: src.slice(i, open) });
    const close = src.indexOf('}}', open + 2);
    if (close < 0) throw new UsageError(`template ${JSON.stringify(src)}: unclosed action`);
    let a = src.slice(open + 2, close);
    let trimLeft = false;
    if (a.startsWith('- ')) {
      trimLeft = true;
      a = a.slice(2);
    }
    let trimRight = false;
    if (a.endsWith(' -')) {
      trimRight = true;
      a = a.slice(0, -2);
    }
    if (trimLeft && out.length && out[out.length - 1]!.text !== undefined) out[out.length - 1]!.text = out[out.length - 1]!.text!.trimEnd();
    out.push({ action: a.trim() });
    i = close + 2;
    if (trimRight) while (i < src.length && /\s/.test(src[i]!)) i++;
  }
  return out;
}

function parse(src: string): Node[] {
  const toks = tokenize(src);
  let pos = 0;
  const block = (stopAt: string[]): { nodes: Node[]; stop: string } => {
    const nodes: Node[] = [];
    while (pos < toks.length) {
      const tk = toks[pos++]!;
      if (tk.text !== undefined) {
        nodes.push({ t: 'text', v: tk.text });
        continue;
      }
      const a = tk.action!;
      const word = a.split(/\s+/)[0]!;
      if (stopAt.includes(word)) return { nodes, stop: word };
      if (word === 'range') {
        const body = block(['end']);
        nodes.push({ t: 'range', v: a.slice(5).trim(), body: body.nodes });
      } else if (word === 'if') {
        const body = block(['else', 'end']);
        let orElse: Node[] = [];
        if (body.stop === 'else') orElse = block(['end']).nodes;
        nodes.push({ t: 'if', v: a.slice(2).trim(), body: body.nodes, orElse });
      } else if (word === 'end' || word === 'else') {
        throw new UsageError(`template: unexpected {{${word}}}`);
      } else nodes.push({ t: 'expr', v: a });
    }
    if (stopAt.length) throw new UsageError(`template: missing {{end}}`);
    return { nodes, stop: '' };
  };
  return block([]).nodes;
}

function field(path: string, dot: unknown): unknown {
  if (path === '.') return dot;
  if (!path.startsWith('.')) throw new UsageError(`template: cannot evaluate ${JSON.stringify(path)}`);
  let v: unknown = dot;
  for (const k of path.slice(1).split('.')) {
    if (v === null || v === undefined || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

function args(s: string): string[] {
  return s.match(/"(?:[^"\\]|\\.)*"|\S+/g) ?? [];
}

function evalExpr(expr: string, dot: unknown): unknown {
  const a = args(expr);
  if (a.length === 0) return undefined;
  const val = (x: string): unknown => (x.startsWith('"') ? (JSON.parse(x) as string) : field(x, dot));
  switch (a[0]) {
    case 'json':
      return JSON.stringify(val(a[1] ?? '.')) ?? 'null';
    case 'index': {
      let v = val(a[1]!);
      for (const k of a.slice(2)) v = v == null ? undefined : (v as Record<string, unknown>)[String(val(k))];
      return v;
    }
    case 'len': {
      const v = val(a[1]!);
      return Array.isArray(v) ? v.length : v && typeof v === 'object' ? Object.keys(v).length : typeof v === 'string' ? v.length : 0;
    }
    default:
      if (a.length > 1) throw new UsageError(`template: unknown function ${JSON.stringify(a[0])}`);
      return val(a[0]!);
  }
}

function goPrint(v: unknown): string {
  if (v === undefined) return '<no value>';
  if (v === null) return '<nil>';
  if (Array.isArray(v)) return `[${v.map(goPrint).join(' ')}]`;
  if (typeof v === 'object') return `map[${Object.keys(v).sort().map((k) => `${k}:${goPrint((v as Record<string, unknown>)[k])}`).join(' ')}]`;
  return String(v);
}

function truthy(v: unknown): boolean {
  if (Array.isArray(v)) return v.length > 0;
  if (v && typeof v === 'object') return Object.keys(v).length > 0;
  return Boolean(v);
}

function run(nodes: Node[], dot: unknown): string {
  let s = '';
  for (const n of nodes) {
    if (n.t === 'text') s += n.v;
    else if (n.t === 'expr') s += goPrint(evalExpr(n.v, dot));
    else if (n.t === 'if') s += run(truthy(evalExpr(n.v, dot)) ? n.body : n.orElse, dot);
    else {
      const v = evalExpr(n.v, dot);
      if (Array.isArray(v)) for (const x of v) s += run(n.body, x);
      else if (v && typeof v === 'object') for (const k of Object.keys(v).sort()) s += run(n.body, (v as Record<string, unknown>)[k]);
    }
  }
  return s;
}

export function goTemplate(template: string, data: unknown): string {
  return run(parse(template.replace(/\\n/g, '\n').replace(/\\t/g, '\t')), data);
}
