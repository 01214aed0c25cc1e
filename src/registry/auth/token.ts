/**
 * Bearer tokens as in the Docker/distribution token specification
 * (https://distribution.github.io/distribution/spec/auth/token/ and .../jwt/):
 * a JWT with `iss`, `sub`, `aud` (the service), `exp`, `nbf`, `iat`, `jti` and an
 * `access` claim listing `{type, name, actions}`.
 *
 * - TokenIssuer signs tokens (ES256 or RS256 by the key's type) for the built-in `/token`
 *   endpoint. Its key comes from a PEM file, or is generated once and kept in the data
 *   dir so a restart does not invalidate tokens clients hold.
 * - TokenVerifier checks tokens from the built-in issuer and/or an external one (public
 *   keys/certificates in PEM, a JWKS file, or a JWKS URL), with issuer and audience checks
 *   and a small cache of verified tokens (verifying ES256 on every blob request costs more
 *   than the request).
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, X509Certificate, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, renameSync, existsSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { dirname } from 'node:path';
import * as jose from 'jose';
import { TsimageError, UsageError } from '../../oci/index.js';
import type { ResourceAccess } from './access.js';

export class TokenError extends TsimageError {}

export const TOKEN_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA'] as const;

export interface TokenClaims {
  iss: string;
  sub: string;
  aud: string;
  exp: number;
  nbf: number;
  iat: number;
  jti: string;
  access: ResourceAccess[];
}

/** The JWS algorithm for a private or public key: ES256/384/512 by curve, RS256 for RSA, EdDSA for Ed25519. */
export function algorithmFor(key: KeyObject): string {
  const t = key.asymmetricKeyType;
  if (t === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1' || curve === 'P-256') return 'ES256';
    if (curve === 'secp384r1' || curve === 'P-384') return 'ES384';
    if (curve === 'secp521r1' || curve === 'P-521') return 'ES512';
    throw new TokenError(`unsupported EC curve ${curve} for token signing (use P-256)`);
  }
  if (t === 'rsa') return 'RS256';
  if (t === 'ed25519') return 'EdDSA';
  throw new TokenError(`unsupported key type ${t} for token signing (use an EC P-256 or RSA key)`);
}

function atomicWrite(path: string, data: string, mode: number): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  writeFileSync(tmp, data, { mode });
  const fd = openSync(tmp, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/** Load a PEM private key, or create an EC P-256 key at `path` when `create` is set and it does not exist. */
export function loadOrCreateSigningKey(path: string, create: boolean): KeyObject {
  if (!existsSync(path)) {
    if (!create) throw new UsageError(`token signing key ${path} does not exist`);
    // encoded by the generation job itself: no KeyObject sharing its lock with the job (see src/copy/sign/keys.ts)
    const { privateKey } = generateKeyPairSync('ec', {
      namedCurve: 'prime256v1',
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    atomicWrite(path, privateKey, 0o600);
  }
  try {
    return createPrivateKey(readFileSync(path));
  } catch (e) {
    throw new UsageError(`cannot read token signing key ${path}: ${(e as Error).message}`, { cause: e });
  }
}

export interface IssuerOptions {
  key: KeyObject;
  issuer: string;
  service: string;
  /** Token lifetime in seconds (distribution's default token servers use 5 minutes; minimum 60 per the spec). */
  expiresIn?: number;
}

export class TokenIssuer {
  readonly alg: string;
  readonly publicKey: KeyObject;
  private kidPromise: Promise<string>;

  constructor(readonly opts: IssuerOptions) {
    this.alg = algorithmFor(opts.key);
    this.publicKey = createPublicKey(opts.key);
    this.kidPromise = jose.exportJWK(this.publicKey).then((jwk) => jose.calculateJwkThumbprint(jwk));
  }

  get expiresIn(): number {
    return Math.max(60, this.opts.expiresIn ?? 300);
  }

  /** The public key as a JWKS (served at /token/jwks.json so other services can trust the issuer). */
  async jwks(): Promise<{ keys: jose.JWK[] }> {
    const jwk = await jose.exportJWK(this.publicKey);
    return { keys: [{ ...jwk, kid: await this.kidPromise, alg: this.alg, use: 'sig' }] };
  }

  async issue(subject: string, access: ResourceAccess[], now = Math.floor(Date.now() / 1000)): Promise<{ token: string; expiresIn: number; issuedAt: string }> {
    const exp = now + this.expiresIn;
    const token = await new jose.SignJWT({ access })
      .setProtectedHeader({ alg: this.alg, typ: 'JWT', kid: await this.kidPromise })
      .setIssuer(this.opts.issuer)
      .setSubject(subject)
      .setAudience(this.opts.service)
      .setIssuedAt(now)
      .setNotBefore(now - 10)
      .setExpirationTime(exp)
      .setJti(randomBytes(12).toString('hex'))
      .sign(this.opts.key);
    return { token, expiresIn: this.expiresIn, issuedAt: new Date(now * 1000).toISOString() };
  }
}

export interface VerifierOptions {
  issuer: string;
  service: string;
  /** Keys trusted directly (the built-in issuer's public key, PEM public keys or certificates). */
  keys?: KeyObject[];
  /** A JWKS document (from a file). */
  jwks?: jose.JSONWebKeySet;
  /** A JWKS URL (fetched and cached by jose). */
  jwksUrl?: string;
  /** Clock skew allowed, seconds. */
  leeway?: number;
}

/** Read PEM public keys or X.509 certificates (several per file allowed). */
export function loadPublicKeys(path: string): KeyObject[] {
  const text = readFileSync(path, 'utf8');
  const blocks = text.match(/-----BEGIN [A-Z ]+-----[\s\S]+?-----END [A-Z ]+-----/g) ?? [];
  if (!blocks.length) throw new UsageError(`${path}: no PEM public key or certificate found`);
  return blocks.map((b) => {
    try {
      if (b.includes('CERTIFICATE')) return new X509Certificate(b).publicKey;
      return createPublicKey(b);
    } catch (e) {
      throw new UsageError(`${path}: cannot read key: ${(e as Error).message}`, { cause: e });
    }
  });
}

export class TokenVerifier {
  private readonly local?: ReturnType<typeof jose.createLocalJWKSet>;
  private readonly remote?: ReturnType<typeof jose.createRemoteJWKSet>;
  private readonly cache = new Map<string, { claims: TokenClaims; exp: number }>();

  constructor(readonly opts: VerifierOptions) {
    if (opts.jwks) this.local = jose.createLocalJWKSet(opts.jwks);
    if (opts.jwksUrl) this.remote = jose.createRemoteJWKSet(new URL(opts.jwksUrl));
    if (!opts.keys?.length && !opts.jwks && !opts.jwksUrl) throw new UsageError('token verification needs keys, a JWKS file or a JWKS URL');
  }

  /** Verify a compact JWT; TokenError with the reason on any failure. */
  async verify(token: string): Promise<TokenClaims> {
    const now = Date.now() / 1000;
    const hit = this.cache.get(token);
    if (hit && hit.exp > now) return hit.claims;
    const options: jose.JWTVerifyOptions = {
      issuer: this.opts.issuer,
      audience: this.opts.service,
      algorithms: [...TOKEN_ALGORITHMS],
      clockTolerance: this.opts.leeway ?? 60,
      requiredClaims: ['exp'],
    };
    let payload: jose.JWTPayload | undefined;
    const failures: string[] = [];
    const attempt = async (key: jose.KeyInput | jose.JWTVerifyGetKey): Promise<boolean> => {
      try {
        payload = (await jose.jwtVerify(token, key as jose.KeyInput, options)).payload;
        return true;
      } catch (e) {
        failures.push((e as Error).message);
        return false;
      }
    };
    let done = false;
    for (const k of this.opts.keys ?? []) if ((done = await attempt(k))) break;
    if (!done && this.local) done = await attempt(this.local);
    if (!done && this.remote) done = await attempt(this.remote);
    if (!done || !payload) throw new TokenError(`invalid token: ${failures[failures.length - 1] ?? 'no key matched'}`);
    const claims = normalizeClaims(payload);
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(token, { claims, exp: claims.exp });
    return claims;
  }
}

function normalizeClaims(p: jose.JWTPayload): TokenClaims {
  const access: ResourceAccess[] = [];
  const raw = (p as { access?: unknown }).access;
  if (Array.isArray(raw)) {
    for (const a of raw) {
      if (a && typeof a === 'object' && typeof a.type === 'string' && typeof a.name === 'string' && Array.isArray(a.actions)) {
        access.push({ type: a.type, name: a.name, actions: a.actions.filter((x: unknown): x is string => typeof x === 'string') });
      }
    }
  }
  return {
    iss: p.iss ?? '',
    sub: p.sub ?? '',
    aud: Array.isArray(p.aud) ? (p.aud[0] ?? '') : (p.aud ?? ''),
    exp: p.exp ?? 0,
    nbf: p.nbf ?? 0,
    iat: p.iat ?? 0,
    jti: p.jti ?? '',
    access,
  };
}
