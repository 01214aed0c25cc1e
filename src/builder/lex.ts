/**
 * Word expansion as Docker/BuildKit does it (frontend/dockerfile/shell/lex.go): quotes,
 * escapes (the `escape` directive's token), `$v`, `${v}`, `${v:-w}`, `${v-w}`, `${v:+w}`,
 * `${v+w}`, `${v:?msg}`, `${v#p}`, `${v##p}`, `${v%p}`, `${v%%p}`, `${v/p/r}`, `${v//p/r}`.
 * `expandWord` gives one string (ENV, LABEL, COPY paths, WORKDIR...), `expandWords` splits
 * on unquoted whitespace (EXPOSE). Unset names expand to "" and are reported in `unmatched`.
 */

export type Env = ReadonlyMap<string, string>;

export interface LexOptions {
  escape?: string;
  /** keep quote characters in the result (heredoc name detection) */
  rawQuotes?: boolean;
  /** keep escape characters in the result */
  rawEscapes?: boolean;
  /** leave `$name` of unset names as written */
  skipUnsetEnv?: boolean;
}

export class LexError extends Error {}

const EOF = '';

function isSpace(ch: string): boolean {
  return ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r' || ch === '\v' || ch === '\f';
}
function isDigit(ch: string): boolean {
  return ch >= '0' && ch <= '9';
}
function isNameChar(ch: string): boolean {
  return ch === '_' || isDigit(ch) || /\p{L}/u.test(ch);
}
function isSpecialParam(ch: string): boolean {
  return '@*#?-$!0'.includes(ch) && ch !== '';
}

class Words {
  word = '';
  words: string[] = [];
  inWord = false;
  addChar(ch: string): void {
    if (isSpace(ch)) {
      if (this.inWord && this.word.length) {
        this.words.push(this.word);
        this.word = '';
        this.inWord = false;
      }
    } else this.addRawChar(ch);
  }
  addRawChar(ch: string): void {
    this.word += ch;
    this.inWord = true;
  }
  addString(s: string): void {
    for (const ch of s) this.addChar(ch);
  }
  addRawString(s: string): void {
    this.word += s;
    this.inWord = true;
  }
  get(): string[] {
    if (this.word.length) {
      this.words.push(this.word);
      this.word = '';
      this.inWord = false;
    }
    return this.words;
  }
}

class ShellWord {
  private pos = 0;
  private readonly chars: string[];
  readonly matched = new Set<string>();
  readonly unmatched = new Set<string>();
  private rawEscapes: boolean;

  constructor(
    src: string,
    private readonly env: Env,
    private readonly opts: Required<LexOptions>,
  ) {
    this.chars = [...src];
    this.rawEscapes = opts.rawEscapes;
  }

  private peek(): string {
    return this.chars[this.pos] ?? EOF;
  }
  private next(): string {
    const c = this.chars[this.pos] ?? EOF;
    if (this.pos < this.chars.length) this.pos++;
    return c;
  }

  private getEnv(name: string): string | undefined {
    const v = this.env.get(name);
    if (v === undefined) this.unmatched.add(name);
    else this.matched.add(name);
    return v;
  }

  processStopOn(stop: string, rawEscapes: boolean): { word: string; words: string[] } {
    const saved = this.rawEscapes;
    this.rawEscapes = rawEscapes;
    try {
      let result = '';
      const words = new Words();
      while (this.peek() !== EOF) {
        const ch = this.peek();
        if (stop !== EOF && ch === stop) {
          this.next();
          return { word: result, words: words.get() };
        }
        if (ch === '$') {
          const tmp = this.processDollar();
          result += tmp;
          words.addString(tmp);
        } else if (ch === "'") {
          const tmp = this.processSingleQuote();
          result += tmp;
          words.addRawString(tmp);
        } else if (ch === '"') {
          const tmp = this.processDoubleQuote();
          result += tmp;
          words.addRawString(tmp);
        } else {
          let c = this.next();
          if (c === this.opts.escape) {
            if (this.rawEscapes) {
              words.addRawChar(c);
              result += c;
            }
            c = this.next();
            if (c === EOF) break;
            words.addRawChar(c);
          } else words.addChar(c);
          result += c;
        }
      }
      if (stop !== EOF) throw new LexError(`unexpected end of statement while looking for matching ${stop}`);
      return { word: result, words: words.get() };
    } finally {
      this.rawEscapes = saved;
    }
  }

  private processSingleQuote(): string {
    let result = '';
    const open = this.next();
    if (this.opts.rawQuotes) result += open;
    for (;;) {
      const ch = this.next();
      if (ch === EOF) throw new LexError('unexpected end of statement while looking for matching single-quote');
      if (ch === "'") {
        if (this.opts.rawQuotes) result += ch;
        return result;
      }
      result += ch;
    }
  }

  private processDoubleQuote(): string {
    let result = '';
    const open = this.next();
    if (this.opts.rawQuotes) result += open;
    for (;;) {
      const p = this.peek();
      if (p === EOF) throw new LexError('unexpected end of statement while looking for matching double-quote');
      if (p === '"') {
        const ch = this.next();
        if (this.opts.rawQuotes) result += ch;
        return result;
      }
      if (p === '$') {
        result += this.processDollar();
        continue;
      }
      let ch = this.next();
      if (ch === this.opts.escape) {
        if (this.rawEscapes) result += ch;
        const q = this.peek();
        if (q === EOF) continue;
        if (q === '"' || q === '$' || q === this.opts.escape) ch = this.next();
      }
      result += ch;
    }
  }

  private processName(): string {
    let name = '';
    while (this.peek() !== EOF) {
      const ch = this.peek();
      if (name.length === 0 && isDigit(ch)) {
        while (this.peek() !== EOF && isDigit(this.peek())) name += this.next();
        return name;
      }
      if (name.length === 0 && isSpecialParam(ch)) return this.next();
      if (!isNameChar(ch)) break;
      name += this.next();
    }
    return name;
  }

  private processDollar(): string {
    this.next();
    if (this.peek() !== '{') {
      const name = this.processName();
      if (name === '') return '$';
      const v = this.getEnv(name);
      if (v === undefined && this.opts.skipUnsetEnv) return '$' + name;
      return v ?? '';
    }
    this.next();
    const p = this.peek();
    if (p === EOF) throw new LexError("syntax error: missing '}'");
    if (p === '{' || p === '}' || p === ':') throw new LexError('syntax error: bad substitution');
    const name = this.processName();
    let ch = this.next();
    let chs = ch;
    let nullIsUnset = false;
    if (ch === '}') {
      const v = this.getEnv(name);
      if (v === undefined && this.opts.skipUnsetEnv) return '${' + name + '}';
      return v ?? '';
    }
    if (ch === ':') {
      nullIsUnset = true;
      ch = this.next();
      chs += ch;
    }
    if (ch === '+' || ch === '-' || ch === '?' || ch === '#' || ch === '%') {
      const raw = ch === '#' || ch === '%';
      if (nullIsUnset && raw) throw new LexError(`unsupported modifier (${chs}) in substitution`);
      let word: string;
      try {
        word = this.processStopOn('}', raw).word;
      } catch (e) {
        if (this.peek() === EOF) throw new LexError("syntax error: missing '}'");
        throw e;
      }
      const value = this.getEnv(name);
      const set = value !== undefined;
      if (this.opts.skipUnsetEnv && !set) return '${' + name + chs + word + '}';
      switch (ch) {
        case '-':
          return !set || (nullIsUnset && value === '') ? word : value;
        case '+':
          return !set || (nullIsUnset && value === '') ? '' : word;
        case '?':
          if (!set) throw new LexError(`${name}: ${word || 'is not allowed to be unset'}`);
          if (nullIsUnset && value === '') throw new LexError(`${name}: ${word || 'is not allowed to be empty'}`);
          return value;
        default: {
          let greedy = false;
          if (word.startsWith(ch)) {
            greedy = true;
            word = word.slice(1);
          }
          return ch === '%' ? trimSuffix(word, value ?? '', greedy) : trimPrefix(word, value ?? '', greedy);
        }
      }
    }
    if (ch === '/') {
      const all = this.peek() === '/';
      if (all) this.next();
      let pattern: string;
      let repl: string;
      try {
        pattern = this.processStopOn('/', true).word;
      } catch (e) {
        if (this.peek() === EOF) throw new LexError("syntax error: missing '/' in ${}");
        throw e;
      }
      try {
        repl = this.processStopOn('}', true).word;
      } catch (e) {
        if (this.peek() === EOF) throw new LexError("syntax error: missing '}'");
        throw e;
      }
      const value = this.getEnv(name) ?? '';
      const re = new RegExp(globToRegex(pattern, true), all ? 'gs' : 's');
      return value.replace(re, () => repl);
    }
    if (ch === EOF) throw new LexError("syntax error: missing '}'");
    throw new LexError(`unsupported modifier (${chs}) in substitution`);
  }
}

/** A shell glob (*, ?, [...], backslash escapes) as a regex source; greedy picks `.*` vs `.*?`. */
function globToRegex(pattern: string, greedy: boolean): string {
  let out = '';
  const chars = [...pattern];
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    if (c === '\\' && i + 1 < chars.length) out += escapeRe(chars[++i]!);
    else if (c === '*') out += greedy ? '.*' : '.*?';
    else if (c === '?') out += '.';
    else if (c === '[') {
      const end = chars.indexOf(']', i + 2);
      if (end < 0) out += '\\[';
      else {
        let cls = chars.slice(i + 1, end).join('');
        if (cls.startsWith('!')) cls = '^' + cls.slice(1);
        out += '[' + cls.replace(/\\/g, '\\\\') + ']';
        i = end;
      }
    } else out += escapeRe(c);
  }
  return out;
}
function escapeRe(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

function trimPrefix(pattern: string, value: string, greedy: boolean): string {
  const m = new RegExp('^' + globToRegex(pattern, greedy), 's').exec(value);
  return m ? value.slice(m[0].length) : value;
}
function trimSuffix(pattern: string, value: string, greedy: boolean): string {
  // shortest suffix: try the latest start; longest: the earliest start
  const re = new RegExp('^(?:' + globToRegex(pattern, true) + ')$', 's');
  if (greedy) {
    for (let i = 0; i <= value.length; i++) if (re.test(value.slice(i))) return value.slice(0, i);
  } else {
    for (let i = value.length; i >= 0; i--) if (re.test(value.slice(i))) return value.slice(0, i);
  }
  return value;
}

function opts(o: LexOptions = {}): Required<LexOptions> {
  return { escape: o.escape ?? '\\', rawQuotes: o.rawQuotes ?? false, rawEscapes: o.rawEscapes ?? false, skipUnsetEnv: o.skipUnsetEnv ?? false };
}

export interface Expanded {
  value: string;
  matched: string[];
  unmatched: string[];
}

/** Expand one word (quotes removed, escapes applied, variables substituted). */
export function expandWord(word: string, env: Env, o?: LexOptions): Expanded {
  const sw = new ShellWord(word, env, opts(o));
  const { word: value } = sw.processStopOn(EOF, opts(o).rawEscapes);
  return { value, matched: [...sw.matched], unmatched: [...sw.unmatched] };
}

/** Expand and split on unquoted whitespace (as `ProcessWords`). */
export function expandWords(word: string, env: Env, o?: LexOptions): { values: string[]; matched: string[]; unmatched: string[] } {
  const sw = new ShellWord(word, env, opts(o));
  const { words } = sw.processStopOn(EOF, opts(o).rawEscapes);
  return { values: words, matched: [...sw.matched], unmatched: [...sw.unmatched] };
}
