/**
 * Authorisation: who may do what to which repository.
 *
 * Rules are data (from the config file): each names repository globs, the principals it
 * applies to (users, groups, any authenticated user, anonymous) and the actions it grants.
 * Rules only grant; what no rule grants is denied. The same rules decide both what the
 * built-in token issuer puts into a token and, for Basic/client-certificate/anonymous
 * requests, what a request may do.
 *
 * Globs: `*` matches within one path component, `**` across components (`team/**` matches
 * `team/a` and `team/a/b`, not `team`), `?` one character; everything else is literal.
 *
 * Scopes follow the Docker token specification: `repository:<name>:pull,push,delete` and
 * `registry:catalog:*`.
 */
import { UsageError } from '../../oci/index.js';

export type RepoAction = 'pull' | 'push' | 'delete';
export const REPO_ACTIONS: readonly RepoAction[] = ['pull', 'push', 'delete'];

/** One resource and the actions wanted on (or granted for) it, as in a token's `access` claim. */
export interface ResourceAccess {
  type: string;
  name: string;
  actions: string[];
}

export interface AccessRule {
  /** Repository globs. */
  repos: string[];
  /** User names; "*" means any authenticated user. */
  users?: string[];
  groups?: string[];
  /** Applies to requests without credentials too. */
  anonymous?: boolean;
  /** pull, push, delete or "*" (all three). */
  actions: string[];
}

export interface AccessConfig {
  /** group name -> user names */
  groups?: Record<string, string[]>;
  rules?: AccessRule[];
  /** Who may list the catalog (`registry:catalog:*`). */
  catalog?: { users?: string[]; groups?: string[]; anonymous?: boolean };
}

/** A request's identity: undefined user means anonymous. */
export interface Principal {
  user?: string;
  /** How it was established. */
  via: 'anonymous' | 'basic' | 'token' | 'cert' | 'none';
  /** Token auth: exactly what the token grants (the issuer already applied the rules). */
  access?: ResourceAccess[];
}

/** Parse one `scope` parameter (may hold several space-separated scopes). */
export function parseScopes(scope: string): ResourceAccess[] {
  const out: ResourceAccess[] = [];
  for (const s of scope.split(' ')) {
    if (!s) continue;
    const first = s.indexOf(':');
    const last = s.lastIndexOf(':');
    if (first <= 0 || last === first) throw new UsageError(`invalid scope "${s}": expected type:name:actions`);
    let type = s.slice(0, first);
    // resource class, e.g. repository(plugin): ignored for authorisation
    const paren = type.indexOf('(');
    if (paren > 0 && type.endsWith(')')) type = type.slice(0, paren);
    const name = s.slice(first + 1, last);
    const actions = s
      .slice(last + 1)
      .split(',')
      .filter((a) => a !== '');
    out.push({ type, name, actions });
  }
  return out;
}

export function formatScope(a: ResourceAccess): string {
  return `${a.type}:${a.name}:${a.actions.join(',')}`;
}

/** Compile a repository glob into an anchored RegExp. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') {
      if (glob[i + 1] === '*') {
        re += '.*';
        i++;
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

interface CompiledRule {
  repos: RegExp[];
  users: Set<string>;
  anyUser: boolean;
  groups: string[];
  anonymous: boolean;
  actions: Set<string>;
}

/** Validate an access config; errors name the bad key (`auth.access.rules[2].actions[0]`). */
export function validateAccessConfig(cfg: unknown, at = 'auth.access'): AccessConfig {
  if (cfg === undefined || cfg === null) return {};
  if (typeof cfg !== 'object' || Array.isArray(cfg)) throw new UsageError(`${at}: expected a mapping`);
  const c = cfg as Record<string, unknown>;
  for (const k of Object.keys(c)) if (!['groups', 'rules', 'catalog'].includes(k)) throw new UsageError(`${at}.${k}: unknown key`);
  const strList = (v: unknown, path: string): string[] | undefined => {
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new UsageError(`${path}: expected a list of strings`);
    return v as string[];
  };
  const out: AccessConfig = {};
  if (c.groups !== undefined) {
    if (typeof c.groups !== 'object' || c.groups === null || Array.isArray(c.groups)) throw new UsageError(`${at}.groups: expected a mapping of group -> users`);
    out.groups = {};
    for (const [g, users] of Object.entries(c.groups)) out.groups[g] = strList(users, `${at}.groups.${g}`) ?? [];
  }
  if (c.rules !== undefined) {
    if (!Array.isArray(c.rules)) throw new UsageError(`${at}.rules: expected a list`);
    out.rules = c.rules.map((r: unknown, i: number) => {
      const p = `${at}.rules[${i}]`;
      if (typeof r !== 'object' || r === null) throw new UsageError(`${p}: expected a mapping`);
      const rr = r as Record<string, unknown>;
      for (const k of Object.keys(rr)) if (!['repos', 'users', 'groups', 'anonymous', 'actions'].includes(k)) throw new UsageError(`${p}.${k}: unknown key`);
      const repos = strList(rr.repos, `${p}.repos`);
      if (!repos?.length) throw new UsageError(`${p}.repos: at least one repository glob is required`);
      const actions = strList(rr.actions, `${p}.actions`);
      if (!actions?.length) throw new UsageError(`${p}.actions: at least one action is required (pull, push, delete, *)`);
      actions.forEach((a, j) => {
        if (!['pull', 'push', 'delete', '*'].includes(a)) throw new UsageError(`${p}.actions[${j}]: unknown action "${a}" (pull, push, delete, *)`);
      });
      if (rr.anonymous !== undefined && typeof rr.anonymous !== 'boolean') throw new UsageError(`${p}.anonymous: expected true or false`);
      const rule: AccessRule = { repos, actions };
      const users = strList(rr.users, `${p}.users`);
      const groups = strList(rr.groups, `${p}.groups`);
      if (users) rule.users = users;
      if (groups) rule.groups = groups;
      if (rr.anonymous) rule.anonymous = true;
      if (!users && !groups && !rr.anonymous) throw new UsageError(`${p}: names no users, groups or anonymous, so it grants nothing`);
      if (rule.anonymous && actions.some((a) => a !== 'pull')) throw new UsageError(`${p}.actions: anonymous access may only pull`);
      return rule;
    });
  }
  if (c.catalog !== undefined) {
    const p = `${at}.catalog`;
    if (typeof c.catalog !== 'object' || c.catalog === null) throw new UsageError(`${p}: expected a mapping`);
    const cc = c.catalog as Record<string, unknown>;
    for (const k of Object.keys(cc)) if (!['users', 'groups', 'anonymous'].includes(k)) throw new UsageError(`${p}.${k}: unknown key`);
    out.catalog = {};
    const u = strList(cc.users, `${p}.users`);
    const g = strList(cc.groups, `${p}.groups`);
    if (u) out.catalog.users = u;
    if (g) out.catalog.groups = g;
    if (cc.anonymous !== undefined) out.catalog.anonymous = cc.anonymous === true;
  }
  return out;
}

export class AccessRules {
  private readonly rules: CompiledRule[];
  private readonly memberOf = new Map<string, Set<string>>();

  constructor(readonly config: AccessConfig) {
    for (const [g, users] of Object.entries(config.groups ?? {})) {
      for (const u of users) {
        let s = this.memberOf.get(u);
        if (!s) this.memberOf.set(u, (s = new Set()));
        s.add(g);
      }
    }
    this.rules = (config.rules ?? []).map((r) => ({
      repos: r.repos.map(globToRegExp),
      users: new Set((r.users ?? []).filter((u) => u !== '*')),
      anyUser: (r.users ?? []).includes('*'),
      groups: r.groups ?? [],
      anonymous: r.anonymous === true,
      actions: new Set(r.actions.includes('*') ? REPO_ACTIONS : r.actions),
    }));
  }

  groupsOf(user: string): Set<string> {
    return this.memberOf.get(user) ?? new Set();
  }

  private applies(rule: CompiledRule, user: string | undefined): boolean {
    if (user === undefined) return rule.anonymous;
    if (rule.anonymous || rule.anyUser || rule.users.has(user)) return true;
    const gs = this.memberOf.get(user);
    return gs !== undefined && rule.groups.some((g) => gs.has(g));
  }

  /** The repository actions a user (undefined = anonymous) has on a repository. */
  repoActions(user: string | undefined, repo: string): Set<RepoAction> {
    const out = new Set<RepoAction>();
    for (const r of this.rules) {
      if (!this.applies(r, user) || !r.repos.some((re) => re.test(repo))) continue;
      for (const a of r.actions) out.add(a as RepoAction);
    }
    return out;
  }

  canListCatalog(user: string | undefined): boolean {
    const c = this.config.catalog;
    if (!c) return false;
    if (user === undefined) return c.anonymous === true;
    if (c.anonymous || c.users?.includes('*') || c.users?.includes(user)) return true;
    const gs = this.memberOf.get(user);
    return gs !== undefined && (c.groups ?? []).some((g) => gs.has(g));
  }

  /** Which of the requested actions are granted (the token issuer's intersection). */
  grant(user: string | undefined, want: ResourceAccess): string[] {
    if (want.type === 'repository') {
      const have = this.repoActions(user, want.name);
      return want.actions.filter((a) => (a === '*' ? REPO_ACTIONS.every((x) => have.has(x)) : have.has(a as RepoAction)));
    }
    if (want.type === 'registry' && want.name === 'catalog') {
      return this.canListCatalog(user) ? want.actions.filter((a) => a === '*') : [];
    }
    return [];
  }
}

/** Does a granted access list (a token's claim) cover one needed resource/action? */
export function accessCovers(granted: readonly ResourceAccess[], need: ResourceAccess): boolean {
  return need.actions.every((a) =>
    granted.some((g) => g.type === need.type && g.name === need.name && (g.actions.includes(a) || (g.actions.includes('*') && need.type === 'repository'))),
  );
}
