/**
 * The Dockerfile line parser, following BuildKit's frontend/dockerfile/parser/parser.go:
 * parser directives (`# syntax=`, `# escape=`, `# check=`), line continuation with the escape
 * token, comment lines inside continuations dropped, empty continuation lines skipped,
 * builder flags (`--from=x`), heredocs (`<<EOF`, `<<-EOF`, quoted names) for RUN/COPY/ADD.
 *
 * dockerfile-ast (installed) was tried first: it keeps comment lines inside a continued
 * instruction in the argument text and mangles JSON strings with spaces (`["a b"]` -> `"ab"`),
 * so the structure here is parsed the way BuildKit does, line for line.
 */
import { DockerfileError } from '../oci/index.js';
import { expandWords, LexError } from './lex.js';

export interface Heredoc {
  name: string;
  /** unquoted name: the content is expanded (COPY) */
  expand: boolean;
  /** `<<-`: leading tabs are removed */
  chomp: boolean;
  content: string;
}

/** One instruction as written: keyword, builder flags, the rest of the line, heredocs, location. */
export interface Node {
  /** lower-case keyword */
  keyword: string;
  /** the keyword as written */
  original: string;
  flags: string[];
  /** the arguments after the flags, continuation lines joined */
  rest: string;
  heredocs: Heredoc[];
  startLine: number;
  endLine: number;
}

export interface ParsedFile {
  file: string;
  escape: string;
  directives: Record<string, string>;
  nodes: Node[];
  warnings: string[];
}

const reDirective = /^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$/;
const VALID_DIRECTIVES = new Set(['escape', 'syntax', 'check']);
const reHeredoc = /^(\d*)<<(-?)([^<]*)$/;
const HEREDOC_KEYWORDS = new Set(['run', 'copy', 'add']);

function trimLeadingWhitespace(s: string): string {
  return s.replace(/^[ \t\r\n\v\f]+/, '');
}
function isComment(line: string): boolean {
  return trimLeadingWhitespace(line).startsWith('#');
}

/** Split builder flags (`--name=value`, quotes and backslashes honoured) from the rest. */
export function extractBuilderFlags(line: string): { rest: string; flags: string[] } {
  const words: string[] = [];
  let phase: 'spaces' | 'word' | 'quote' = 'spaces';
  let word = '';
  let quote = '';
  let blankOK = false;
  for (let pos = 0; pos <= line.length; pos++) {
    let ch = pos < line.length ? line[pos]! : '';
    if (phase === 'spaces') {
      if (pos === line.length) break;
      if (/\s/.test(ch)) continue;
      if (ch !== '-' || pos + 1 === line.length || line[pos + 1] !== '-') return { rest: line.slice(pos), flags: words };
      phase = 'word';
    }
    if ((phase === 'word' || phase === 'quote') && pos === line.length) {
      if (word !== '--' && (blankOK || word.length > 0)) words.push(word);
      break;
    }
    if (phase === 'word') {
      if (/\s/.test(ch)) {
        phase = 'spaces';
        if (word === '--') return { rest: line.slice(pos), flags: words };
        if (blankOK || word.length > 0) words.push(word);
        word = '';
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = 'quote';
        continue;
      }
      if (ch === '\\') {
        if (pos + 1 === line.length) continue;
        pos++;
        ch = line[pos]!;
      }
      word += ch;
      continue;
    }
    if (ch === quote) {
      phase = 'word';
      continue;
    }
    if (ch === '\\') {
      if (pos + 1 === line.length) {
        phase = 'word';
        continue;
      }
      pos++;
      ch = line[pos]!;
    }
    word += ch;
  }
  return { rest: '', flags: words };
}

function heredocsFromLine(line: string): Omit<Heredoc, 'content'>[] {
  const { values } = expandWords(line, new Map(), { rawQuotes: true, rawEscapes: true });
  const out: Omit<Heredoc, 'content'>[] = [];
  for (const w of values) {
    const g = reHeredoc.exec(w);
    if (!g) continue;
    const rest = g[3]!;
    if (!rest) continue;
    const words = expandWords(rest, new Map()).values;
    if (words.length !== 1) throw new LexError(`multiple heredoc names ${rest}`);
    out.push({ name: words[0]!, expand: words[0] === rest, chomp: g[2] === '-' });
  }
  return out;
}

/** Parse a Dockerfile into instruction nodes; errors carry file:line. */
export function parseDockerfile(text: string, file = 'Dockerfile'): ParsedFile {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const lines = text.split('\n');
  // a trailing newline does not start another line
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  let escape = '\\';
  let contRe = /\\[ \t]*$/;
  const directives: Record<string, string> = {};
  let directivesDone = false;
  const nodes: Node[] = [];
  const warnings: string[] = [];

  const processLine = (raw: string, stripLeft: boolean, lineNo: number): string => {
    let token = raw.replace(/\r$/, '');
    if (stripLeft) token = trimLeadingWhitespace(token);
    if (!directivesDone) {
      const m = reDirective.exec(token);
      const key = m?.[1]?.toLowerCase();
      if (!m || !key || !VALID_DIRECTIVES.has(key)) directivesDone = true;
      else {
        if (key in directives) throw new DockerfileError(`only one ${key} parser directive can be used`, { file, line: lineNo });
        directives[key] = m[2]!;
        if (key === 'escape') {
          if (m[2] !== '`' && m[2] !== '\\')
            throw new DockerfileError(`invalid escape token '${m[2]}' does not match \` or \\`, { file, line: lineNo });
          escape = m[2];
          contRe = escape === '`' ? /`[ \t]*$/ : /\\[ \t]*$/;
        }
      }
    }
    return isComment(token) ? '' : token;
  };
  const trimCont = (line: string): { line: string; end: boolean } => {
    if (contRe.test(line)) return { line: line.replace(contRe, ''), end: false };
    return { line, end: true };
  };

  let i = 0;
  while (i < lines.length) {
    const startLine = i + 1;
    const first = processLine(lines[i]!, true, startLine);
    i++;
    let { line, end } = trimCont(first);
    if (end && line === '') continue;
    let hasEmptyCont = false;
    while (!end && i < lines.length) {
      const rawNext = lines[i]!;
      const processed = processLine(rawNext, false, i + 1);
      i++;
      if (isComment(rawNext.replace(/\r$/, ''))) continue;
      if (trimLeadingWhitespace(processed) === '') {
        hasEmptyCont = true;
        continue;
      }
      const t = trimCont(processed);
      line += t.line;
      end = t.end;
    }
    if (hasEmptyCont) warnings.push(`${file}:${startLine}: empty continuation line`);
    const trimmed = line.trim();
    const sp = /[\t\v\f\r ]+/.exec(trimmed);
    const original = sp ? trimmed.slice(0, sp.index) : trimmed;
    const after = sp ? trimmed.slice(sp.index + sp[0].length) : '';
    const keyword = original.toLowerCase();
    const { rest, flags } = after ? extractBuilderFlags(after) : { rest: '', flags: [] };
    const node: Node = { keyword, original, flags, rest, heredocs: [], startLine, endLine: i };
    let hdKeyword = keyword;
    let hdRest = rest;
    if (keyword === 'onbuild') {
      const sub = /^\s*(\S+)\s*([\s\S]*)$/.exec(rest);
      hdKeyword = sub?.[1]?.toLowerCase() ?? '';
      hdRest = sub?.[2] ?? '';
    }
    if (HEREDOC_KEYWORDS.has(hdKeyword) && line.includes('<<') && !hdRest.trimStart().startsWith('[')) {
      let docs: Omit<Heredoc, 'content'>[];
      try {
        docs = heredocsFromLine(line);
      } catch (e) {
        throw new DockerfileError((e as Error).message, { file, line: startLine });
      }
      for (const d of docs) {
        let content = '';
        let terminated = false;
        while (i < lines.length) {
          const raw = lines[i]!;
          i++;
          let possible = raw.replace(/\r$/, '');
          if (d.chomp) possible = possible.replace(/^\t+/, '');
          if (possible === d.name) {
            terminated = true;
            break;
          }
          content += raw + '\n';
        }
        if (!terminated) throw new DockerfileError(`unterminated heredoc ${d.name}`, { file, line: startLine });
        if (d.chomp) content = content.replace(/^\t+/gm, '');
        node.heredocs.push({ ...d, content });
      }
      node.endLine = i;
    }
    nodes.push(node);
  }
  return { file, escape, directives, nodes, warnings };
}

/** Split on runs of whitespace (BuildKit's parseStringsWhitespaceDelimited). */
export function splitWhitespace(rest: string): string[] {
  const t = rest.trim();
  return t ? t.split(/[\t\v\f\r ]+/) : [];
}

/** Quote-aware word split that keeps quotes and escapes in the words (BuildKit's parseWords). */
export function parseWords(rest: string, escape: string): string[] {
  const words: string[] = [];
  let phase: 'spaces' | 'word' | 'quote' = 'spaces';
  let word = '';
  let quote = '';
  let blankOK = false;
  const chars = [...rest];
  for (let pos = 0; pos <= chars.length; pos++) {
    let ch = pos < chars.length ? chars[pos]! : '';
    if (phase === 'spaces') {
      if (pos === chars.length) break;
      if (/\s/.test(ch)) continue;
      phase = 'word';
    }
    if (pos === chars.length) {
      if (blankOK || word.length > 0) words.push(word);
      break;
    }
    if (phase === 'word') {
      if (/\s/.test(ch)) {
        phase = 'spaces';
        if (blankOK || word.length > 0) words.push(word);
        word = '';
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = 'quote';
      }
      if (ch === escape) {
        if (pos + 1 === chars.length) continue;
        word += ch;
        pos++;
        ch = chars[pos]!;
      }
      word += ch;
      continue;
    }
    if (ch === quote) phase = 'word';
    if (ch === escape && quote !== "'") {
      if (pos + 1 === chars.length) {
        phase = 'word';
        continue;
      }
      pos++;
      word += ch;
      ch = chars[pos]!;
    }
    word += ch;
  }
  return words;
}

/** JSON form: `["a", "b"]` -> strings; undefined when not JSON (shell form); throws on non-string elements. */
export function parseJsonForm(rest: string): string[] | undefined {
  const t = rest.trimStart();
  if (!t.startsWith('[')) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(t);
  } catch {
    return undefined;
  }
  if (!Array.isArray(v)) return undefined;
  if (!v.every((x) => typeof x === 'string')) throw new Error('when using JSON array syntax, arrays must be comprised of strings only');
  return v as string[];
}
