/**
 * WWW-Authenticate parsing (RFC 7235 challenges as registries send them) and token scopes
 * (the Docker token spec: `repository:<name>:pull,push`, `registry:catalog:*`).
 */

export interface Challenge {
  /** Lower-case scheme: `basic` or `bearer` (others are kept but not used). */
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parse a WWW-Authenticate header value into challenges.
 * `Bearer realm="https://a/token",service="reg",scope="repository:x:pull"` -> [{scheme:'bearer', params:{...}}].
 * Several challenges in one value (`Basic realm="x", Bearer realm="y"`) are split; quoted strings may hold
 * commas and backslash escapes.
 */
export function parseWwwAuthenticate(value: string | string[] | undefined): Challenge[] {
  if (value === undefined) return [];
  const values = Array.isArray(value) ? value : [value];
  const out: Challenge[] = [];
  for (const v of values) {
    let i = 0;
    const s = v;
    let cur: Challenge | undefined;
    const skipWs = () => {
      while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
    };
    const token = (): string => {
      const start = i;
      while (i < s.length && /[!#$%&'*+\-.^_`|~0-9A-Za-z/:]/.test(s[i]!)) i++;
      return s.slice(start, i);
    };
    while (i < s.length) {
      skipWs();
      if (s[i] === ',') {
        i++;
        continue;
      }
      const start = i;
      const name = token();
      if (!name) {
        i++;
        continue;
      }
      skipWs();
      if (s[i] === '=') {
        // a parameter of the current challenge
        i++;
        skipWs();
        let val = '';
        if (s[i] === '"') {
          i++;
          while (i < s.length && s[i] !== '"') {
            if (s[i] === '\\' && i + 1 < s.length) i++;
            val += s[i];
            i++;
          }
          i++; // closing quote
        } else {
          const vs = i;
          while (i < s.length && s[i] !== ',') i++;
          val = s.slice(vs, i).trim();
        }
        if (cur) cur.params[name.toLowerCase()] = val;
      } else {
        // a new challenge (scheme), possibly followed by token68
        void start;
        cur = { scheme: name.toLowerCase(), params: {} };
        out.push(cur);
      }
    }
  }
  return out;
}

export type Action = 'pull' | 'push' | 'delete' | '*';

export function repositoryScope(name: string, actions: readonly Action[]): string {
  return `repository:${name}:${actions.join(',')}`;
}

export const CATALOG_SCOPE = 'registry:catalog:*';

/** Merge scopes so each resource appears once with the union of its actions (stable order). */
export function mergeScopes(scopes: readonly string[]): string[] {
  const byRes = new Map<string, Set<string>>();
  for (const sc of scopes) {
    for (const one of sc.split(' ')) {
      if (!one) continue;
      const i = one.lastIndexOf(':');
      if (i < 0) continue;
      const res = one.slice(0, i);
      const acts = byRes.get(res) ?? new Set<string>();
      for (const a of one.slice(i + 1).split(',')) if (a) acts.add(a);
      byRes.set(res, acts);
    }
  }
  return [...byRes.entries()].map(([r, a]) => `${r}:${[...a].join(',')}`);
}
