/**
 * Access control for tsregistry: who is asking (Basic with an htpasswd file, a Bearer JWT
 * from the built-in or an external token issuer, a verified TLS client certificate, or
 * nobody) and whether that principal may do what the route needs.
 *
 * The server computes, per request, the route and the accesses it needs
 * (`repository:<name>:pull|push|delete`, `registry:catalog:*`; cross-repository mounts also
 * need pull on the source) and calls `auth.authorize(c, access, route)`. Failures answer
 * the spec's error envelope with a challenge, as distribution does:
 *   - no credentials, or credentials that do not authenticate -> 401 UNAUTHORIZED with
 *     `WWW-Authenticate: Basic realm=...` or `Bearer realm=...,service=...,scope=...`
 *   - a valid token without the needed access -> 401 with `error="insufficient_scope"` and the
 *     scope (the client fetches a new token for it)
 *   - Basic/certificate users without the access -> 403 DENIED
 * `GET /v2/` needs an authenticated principal whenever auth is on, so `podman login` with a
 * wrong password fails instead of "succeeding" against an open ping.
 */
import type { Context } from 'hono';
import type { TLSSocket } from 'node:tls';
import { Hono } from 'hono';
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../../oci/index.js';
import { AccessRules, accessCovers, formatScope, parseScopes, validateAccessConfig, type AccessConfig, type Principal, type ResourceAccess } from './access.js';
import { Htpasswd } from './htpasswd.js';
import { TokenIssuer, TokenVerifier, loadOrCreateSigningKey, loadPublicKeys, TokenError } from './token.js';

export * from './access.js';
export * from './htpasswd.js';
export * from './token.js';

/** The `auth:` section of the config file. */
export interface AuthConfig {
  /** Realm of Basic challenges. */
  realm?: string;
  /** htpasswd file (bcrypt): the users of Basic auth and of the built-in token issuer. */
  htpasswd?: string;
  token?: {
    /** URL clients get tokens from; default: this server's /token (from the request's Host). */
    realm?: string;
    /** `service` in challenges and the token audience. Default "tsregistry". */
    service?: string;
    /** `iss` of issued tokens / the trusted issuer. Default "tsregistry". */
    issuer?: string;
    /** Built-in issuer: the signing key (PEM; EC P-256 -> ES256, RSA -> RS256). Default: generated into <root>/auth/token-key.pem. */
    key?: string;
    /** Built-in issuer off: only trust an external issuer (needs publicKeys, jwks or jwksUrl). */
    builtin?: boolean;
    /** Token lifetime (seconds). Default 300. */
    expiration?: number;
    /** External issuer: PEM public keys or certificates. */
    publicKeys?: string[];
    /** External issuer: JWKS file. */
    jwks?: string;
    /** External issuer: JWKS URL. */
    jwksUrl?: string;
  };
  /** TLS client certificates: the subject CN becomes the user name (needs tls.clientCA). */
  clientCertUsers?: boolean;
  access?: AccessConfig;
}

const AUTH_KEYS = ['realm', 'htpasswd', 'token', 'clientCertUsers', 'access'];
const TOKEN_KEYS = ['realm', 'service', 'issuer', 'key', 'builtin', 'expiration', 'publicKeys', 'jwks', 'jwksUrl'];

/** Validate the `auth:` section; errors name the key. */
export function validateAuthConfig(raw: unknown, at = 'auth'): AuthConfig | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new UsageError(`${at}: expected a mapping`);
  const r = raw as Record<string, unknown>;
  for (const k of Object.keys(r)) if (!AUTH_KEYS.includes(k)) throw new UsageError(`${at}.${k}: unknown key (known: ${AUTH_KEYS.join(', ')})`);
  const str = (v: unknown, p: string): string | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || !v) throw new UsageError(`${p}: expected a non-empty string`);
    return v;
  };
  const out: AuthConfig = {};
  const realm = str(r.realm, `${at}.realm`);
  if (realm) out.realm = realm;
  const ht = str(r.htpasswd, `${at}.htpasswd`);
  if (ht) out.htpasswd = ht;
  if (r.clientCertUsers !== undefined) {
    if (typeof r.clientCertUsers !== 'boolean') throw new UsageError(`${at}.clientCertUsers: expected true or false`);
    out.clientCertUsers = r.clientCertUsers;
  }
  if (r.token !== undefined && r.token !== null) {
    if (typeof r.token !== 'object' || Array.isArray(r.token)) throw new UsageError(`${at}.token: expected a mapping`);
    const t = r.token as Record<string, unknown>;
    for (const k of Object.keys(t)) if (!TOKEN_KEYS.includes(k)) throw new UsageError(`${at}.token.${k}: unknown key (known: ${TOKEN_KEYS.join(', ')})`);
    const tok: NonNullable<AuthConfig['token']> = {};
    for (const k of ['realm', 'service', 'issuer', 'key', 'jwks', 'jwksUrl'] as const) {
      const v = str(t[k], `${at}.token.${k}`);
      if (v) tok[k] = v;
    }
    if (t.builtin !== undefined) {
      if (typeof t.builtin !== 'boolean') throw new UsageError(`${at}.token.builtin: expected true or false`);
      tok.builtin = t.builtin;
    }
    if (t.expiration !== undefined) {
      if (typeof t.expiration !== 'number' || !Number.isInteger(t.expiration) || t.expiration < 60)
        throw new UsageError(`${at}.token.expiration: expected whole seconds >= 60`);
      tok.expiration = t.expiration;
    }
    if (t.publicKeys !== undefined) {
      if (!Array.isArray(t.publicKeys) || t.publicKeys.some((x) => typeof x !== 'string')) throw new UsageError(`${at}.token.publicKeys: expected a list of file paths`);
      tok.publicKeys = t.publicKeys as string[];
    }
    if (tok.builtin === false && !tok.publicKeys && !tok.jwks && !tok.jwksUrl)
      throw new UsageError(`${at}.token: with builtin: false, trust an external issuer with publicKeys, jwks or jwksUrl`);
    if (tok.builtin === false && !tok.realm) throw new UsageError(`${at}.token.realm: required for an external issuer`);
    out.token = tok;
  }
  if (out.token && out.token.builtin !== false && !out.htpasswd) {
    // the built-in issuer with no user database only hands out anonymous tokens: allowed, but say so clearly
  }
  out.access = validateAccessConfig(r.access, `${at}.access`);
  if (!out.htpasswd && !out.token && !out.clientCertUsers) throw new UsageError(`${at}: configure htpasswd, token or clientCertUsers (or remove the auth section)`);
  return out;
}

/** The route names and access shape the server passes (see hooks.ts in the server). */
export type AuthRoute = string;
export type NeededAccess = ResourceAccess;

type AnyContext = Context<any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function envelope(code: 'UNAUTHORIZED' | 'DENIED', message: string, detail?: unknown): string {
  return JSON.stringify({ errors: [{ code, message, ...(detail !== undefined ? { detail } : {}) }] });
}

function quote(s: string): string {
  return `"${s.replace(/["\\]/g, '\\$&')}"`;
}

function decodeBasic(header: string): { user: string; password: string } | undefined {
  const b = Buffer.from(header, 'base64').toString('utf8');
  const i = b.indexOf(':');
  if (i < 0) return undefined;
  return { user: b.slice(0, i), password: b.slice(i + 1) };
}

export interface AuthOptions {
  /** Registry data dir: where a generated token key is kept. */
  root?: string;
}

export class RegistryAuth {
  readonly rules: AccessRules;
  readonly htpasswd?: Htpasswd;
  readonly issuer?: TokenIssuer;
  readonly verifier?: TokenVerifier;
  readonly mode: 'basic' | 'token' | 'cert';
  readonly service: string;
  readonly issuerName: string;

  constructor(
    readonly config: AuthConfig,
    opts: AuthOptions = {},
  ) {
    this.rules = new AccessRules(config.access ?? {});
    if (config.htpasswd) this.htpasswd = new Htpasswd(config.htpasswd);
    const t = config.token;
    this.service = t?.service ?? 'tsregistry';
    this.issuerName = t?.issuer ?? 'tsregistry';
    if (t) {
      this.mode = 'token';
      const keys: KeyObject[] = [];
      if (t.builtin !== false) {
        const keyPath = t.key ?? join(opts.root ?? '.', 'auth', 'token-key.pem');
        const key = loadOrCreateSigningKey(keyPath, !t.key);
        const issueOpts = { key, issuer: this.issuerName, service: this.service, ...(t.expiration ? { expiresIn: t.expiration } : {}) };
        this.issuer = new TokenIssuer(issueOpts);
        keys.push(createPublicKey(key));
      }
      for (const p of t.publicKeys ?? []) keys.push(...loadPublicKeys(p));
      let jwks;
      if (t.jwks) {
        try {
          jwks = JSON.parse(readFileSync(t.jwks, 'utf8'));
        } catch (e) {
          throw new UsageError(`auth.token.jwks: cannot read ${t.jwks}: ${(e as Error).message}`, { cause: e });
        }
      }
      this.verifier = new TokenVerifier({ issuer: this.issuerName, service: this.service, keys, ...(jwks ? { jwks } : {}), ...(t.jwksUrl ? { jwksUrl: t.jwksUrl } : {}) });
    } else if (config.htpasswd) this.mode = 'basic';
    else this.mode = 'cert';
  }

  private tokenRealm(c: AnyContext): string {
    if (this.config.token?.realm) return this.config.token.realm;
    const url = new URL(c.req.url);
    const proto = c.req.header('x-forwarded-proto') ?? url.protocol.replace(':', '');
    const host = c.req.header('host') ?? url.host;
    return `${proto}://${host}/token`;
  }

  /** A 401 with the challenge for this mode (scope = what the request needs). */
  challenge(c: AnyContext, need: ResourceAccess[], error?: 'invalid_token' | 'insufficient_scope', message = 'authentication required'): Response {
    const headers = new Headers({ 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' });
    if (this.mode === 'token') {
      let h = `Bearer realm=${quote(this.tokenRealm(c))},service=${quote(this.service)}`;
      if (need.length) h += `,scope=${quote(need.map(formatScope).join(' '))}`;
      if (error) h += `,error=${quote(error)}`;
      headers.set('www-authenticate', h);
    } else if (this.mode === 'basic') {
      headers.set('www-authenticate', `Basic realm=${quote(this.config.realm ?? 'tsregistry')}`);
    }
    const detail = need.flatMap((a) => a.actions.map((action) => ({ Type: a.type, Name: a.name, Action: action })));
    return new Response(envelope('UNAUTHORIZED', message, detail.length ? detail : undefined), { status: 401, headers });
  }

  denied(need: ResourceAccess[]): Response {
    const detail = need.flatMap((a) => a.actions.map((action) => ({ Type: a.type, Name: a.name, Action: action })));
    return new Response(envelope('DENIED', 'requested access to the resource is denied', detail), {
      status: 403,
      headers: { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' },
    });
  }

  private certUser(c: AnyContext): string | undefined {
    if (!this.config.clientCertUsers) return undefined;
    const sock = (c.env as { incoming?: { socket?: TLSSocket } } | undefined)?.incoming?.socket;
    if (!sock || typeof sock.getPeerCertificate !== 'function' || !sock.authorized) return undefined;
    const cn = sock.getPeerCertificate()?.subject?.CN;
    return typeof cn === 'string' && cn ? cn : Array.isArray(cn) ? cn[0] : undefined;
  }

  /** Who is asking; a Response when the credentials are present but wrong. */
  async authenticate(c: AnyContext): Promise<Principal | Response> {
    const h = c.req.header('authorization');
    if (h) {
      const sp = h.indexOf(' ');
      const scheme = (sp > 0 ? h.slice(0, sp) : h).toLowerCase();
      const value = sp > 0 ? h.slice(sp + 1).trim() : '';
      if (scheme === 'basic' && this.htpasswd) {
        const cred = decodeBasic(value);
        // containers/image sends "Basic Og==" (empty user and password) when it has no credentials
        if (cred && cred.user === '' && cred.password === '') return this.certUser(c) ? { user: this.certUser(c)!, via: 'cert' } : { via: 'anonymous' };
        if (cred && (await this.htpasswd.verify(cred.user, cred.password))) return { user: cred.user, via: 'basic' };
        return this.challenge(c, [], this.mode === 'token' ? 'invalid_token' : undefined, 'invalid username or password');
      }
      if (scheme === 'bearer' && this.verifier) {
        try {
          const claims = await this.verifier.verify(value);
          return { user: claims.sub || undefined, via: 'token', access: claims.access } as Principal;
        } catch (e) {
          return this.challenge(c, [], 'invalid_token', e instanceof TokenError ? e.message : 'invalid token');
        }
      }
      return this.challenge(c, [], this.mode === 'token' ? 'invalid_token' : undefined, `unsupported authorization scheme "${scheme}"`);
    }
    const cu = this.certUser(c);
    if (cu) return { user: cu, via: 'cert' };
    return { via: 'anonymous' };
  }

  allowed(p: Principal, need: ResourceAccess): boolean {
    if (p.via === 'token') return accessCovers(p.access ?? [], need);
    return need.actions.length > 0 && this.rules.grant(p.user, need).length === need.actions.length;
  }

  /** The server's authoriser hook: undefined to let the request through, else the Response to send. */
  authorize = async (c: AnyContext, access: readonly ResourceAccess[], route: AuthRoute): Promise<Response | void> => {
    const p = await this.authenticate(c);
    if (p instanceof Response) return p;
    if (p.user !== undefined) c.set('user', p.user);
    const need = [...access];
    if (route === 'base' || need.length === 0) {
      if (p.via === 'anonymous') return this.challenge(c, []);
      return;
    }
    const missing = need.filter((a) => !this.allowed(p, a));
    if (!missing.length) return;
    if (p.via === 'anonymous') return this.challenge(c, need);
    if (p.via === 'token') return this.challenge(c, need, 'insufficient_scope', 'insufficient scope');
    return this.denied(missing);
  };

  /** Grant what a principal may have of the requested scopes (what the token issuer puts into a token). */
  grantScopes(user: string | undefined, scopes: ResourceAccess[]): ResourceAccess[] {
    const out: ResourceAccess[] = [];
    for (const s of scopes) {
      const actions = this.rules.grant(user, s);
      if (actions.length === 0) continue;
      const prev = out.find((o) => o.type === s.type && o.name === s.name);
      if (prev) prev.actions = [...new Set([...prev.actions, ...actions])];
      else out.push({ type: s.type, name: s.name, actions });
    }
    return out;
  }

  /**
   * The built-in token endpoint (mount at the server root): `GET /token` (Basic credentials,
   * `service`, `scope` repeated, `account`), `POST /token` (OAuth2 password and refresh_token
   * grants, as Docker clients use), and `GET /token/jwks.json` (the public key).
   */
  tokenApp(): Hono {
    const app = new Hono();
    const issuer = this.issuer;
    if (!issuer) return app;
    const tokenError = (status: 400 | 401, code: string, message: string): Response =>
      new Response(JSON.stringify({ errors: [{ code, message }], error: code.toLowerCase(), error_description: message }), {
        status,
        headers: { 'content-type': 'application/json', ...(status === 401 ? { 'www-authenticate': `Basic realm=${quote(this.config.realm ?? 'tsregistry')}` } : {}) },
      });
    const scopesOf = (list: string[]): ResourceAccess[] | Response => {
      try {
        return list.flatMap(parseScopes);
      } catch (e) {
        return tokenError(400, 'INVALID_SCOPE', (e as Error).message);
      }
    };
    const respond = async (user: string | undefined, scopes: ResourceAccess[], refresh: boolean): Promise<Response> => {
      const access = this.grantScopes(user, scopes);
      const t = await issuer.issue(user ?? '', access);
      const body: Record<string, unknown> = { token: t.token, access_token: t.token, expires_in: t.expiresIn, issued_at: t.issuedAt };
      if (refresh && user) body.refresh_token = (await this.refreshIssuer().issue(user, [])).token;
      return new Response(JSON.stringify(body), { status: 200, headers: { 'content-type': 'application/json', 'cache-control': 'no-store' } });
    };
    app.get('/token/jwks.json', async (c) => c.json(await issuer.jwks()));
    app.get('/token', async (c) => {
      const service = c.req.query('service');
      if (service && service !== this.service) return tokenError(400, 'INVALID_REQUEST', `unknown service "${service}" (this issuer serves "${this.service}")`);
      const scopes = scopesOf(c.req.queries('scope') ?? []);
      if (scopes instanceof Response) return scopes;
      let user: string | undefined;
      const h = c.req.header('authorization');
      if (h) {
        const m = /^basic\s+(.+)$/i.exec(h);
        const cred = m ? decodeBasic(m[1]!) : undefined;
        if (cred && cred.user === '' && cred.password === '') user = this.certUser(c);
        else if (!cred || !this.htpasswd || !(await this.htpasswd.verify(cred.user, cred.password))) return tokenError(401, 'UNAUTHORIZED', 'invalid username or password');
        else user = cred.user;
      } else user = this.certUser(c);
      return respond(user, scopes, c.req.query('offline_token') === 'true');
    });
    app.post('/token', async (c) => {
      const form = await c.req.parseBody().catch(() => ({}) as Record<string, unknown>);
      const get = (k: string): string | undefined => (typeof form[k] === 'string' ? (form[k] as string) : undefined);
      const service = get('service');
      if (service && service !== this.service) return tokenError(400, 'INVALID_REQUEST', `unknown service "${service}"`);
      const scopes = scopesOf((get('scope') ?? '').split(' ').filter(Boolean));
      if (scopes instanceof Response) return scopes;
      const grant = get('grant_type');
      if (grant === 'password') {
        const user = get('username') ?? '';
        if (!this.htpasswd || !(await this.htpasswd.verify(user, get('password') ?? ''))) return tokenError(401, 'UNAUTHORIZED', 'invalid username or password');
        return respond(user, scopes, get('access_type') === 'offline');
      }
      if (grant === 'refresh_token') {
        try {
          const claims = await this.refreshVerifier().verify(get('refresh_token') ?? '');
          if (!claims.sub || !this.htpasswd?.has(claims.sub)) return tokenError(401, 'UNAUTHORIZED', 'refresh token for an unknown user');
          return respond(claims.sub, scopes, false);
        } catch (e) {
          return tokenError(401, 'UNAUTHORIZED', (e as Error).message);
        }
      }
      return tokenError(400, 'UNSUPPORTED_GRANT_TYPE', `unsupported grant_type "${grant ?? ''}" (password or refresh_token)`);
    });
    return app;
  }

  private refreshIss?: TokenIssuer;
  private refreshVer?: TokenVerifier;
  /** Refresh tokens: same key, a different audience, 30 days. */
  private refreshIssuer(): TokenIssuer {
    return (this.refreshIss ??= new TokenIssuer({ key: this.issuer!.opts.key, issuer: this.issuerName, service: `${this.service}#refresh`, expiresIn: 30 * 86400 }));
  }
  private refreshVerifier(): TokenVerifier {
    return (this.refreshVer ??= new TokenVerifier({ issuer: this.issuerName, service: `${this.service}#refresh`, keys: [this.issuer!.publicKey] }));
  }
}
