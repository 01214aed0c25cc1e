/**
 * containers-signature(5) "simple signing" (the `atomic container signature` payload signed with GPG), as
 * containers/image's signature/simple.go writes and checks it.
 *
 * Payload (Go encoding/json of maps: keys sorted, no spaces, <>& escaped):
 *   {"critical":{"identity":{"docker-reference":"host/repo:tag"},"image":{"docker-manifest-digest":"sha256:..."},
 *    "type":"atomic container signature"},"optional":{"creator":"...","timestamp":1700000000}}
 * Parsing is containers/image's strictUnmarshalJSON: `critical` and `optional` exactly; `critical` exactly `type`,
 * `image`, `identity`; `image` exactly `docker-manifest-digest`; `identity` exactly `docker-reference`; any key
 * twice anywhere is an error; `optional` must be an object (other keys ignored), its `timestamp` an integer.
 * Verification order (verifyAndExtractSignature): the OpenPGP signature, the signing key, then the payload, its
 * manifest digest, then the signed identity.
 */
import { isDigest, type Digest } from '../../oci/digest.js';
import { goJsonString, SignatureError } from './payload.js';
import type { GpgVerified } from './gpg.js';

export const SIMPLE_SIGNATURE_TYPE = 'atomic container signature';

export interface SimplePayload {
  dockerReference: string;
  digest: Digest;
  creator?: string | undefined;
  timestamp?: number | undefined;
}

/** The payload bytes containers/image signs (its map-based MarshalJSON: keys in sorted order). */
export function makeSimplePayload(dockerReference: string, digest: Digest, optional: { creator?: string | undefined; timestamp?: number | undefined } = {}): Buffer {
  if (!dockerReference || !digest) throw new SignatureError('Unexpected empty signature content');
  const opt: string[] = [];
  if (optional.creator !== undefined) opt.push(`"creator":${goJsonString(optional.creator)}`);
  if (optional.timestamp !== undefined) {
    if (!Number.isSafeInteger(optional.timestamp)) throw new SignatureError(`timestamp ${optional.timestamp} is not an integer`);
    opt.push(`"timestamp":${optional.timestamp}`);
  }
  return Buffer.from(
    `{"critical":{"identity":{"docker-reference":${goJsonString(dockerReference)}},` +
      `"image":{"docker-manifest-digest":${goJsonString(digest)}},"type":${goJsonString(SIMPLE_SIGNATURE_TYPE)}},` +
      `"optional":{${opt.join(',')}}}`,
  );
}

// ------------------------------------------------------------------------------------------------
// A JSON parser that refuses duplicate keys (JSON.parse keeps the last one silently; Go's paranoid decoder refuses).

class StrictJson {
  private i = 0;
  constructor(private readonly s: string) {}

  parse(): unknown {
    this.ws();
    const v = this.value('');
    this.ws();
    if (this.i !== this.s.length) this.fail('unexpected data after the JSON value');
    return v;
  }

  private fail(why: string): never {
    throw new SignatureError(`signature payload is not valid JSON: ${why} at offset ${this.i}`);
  }

  private ws(): void {
    while (this.i < this.s.length && ' \t\n\r'.includes(this.s[this.i]!)) this.i++;
  }

  private value(path: string): unknown {
    const c = this.s[this.i];
    if (c === '{') return this.object(path);
    if (c === '[') return this.array(path);
    if (c === '"') return this.string();
    const m = /^(?:-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)/.exec(this.s.slice(this.i, this.i + 400));
    if (!m) this.fail('unexpected character');
    this.i += m[0].length;
    return JSON.parse(m[0]);
  }

  private string(): string {
    const m = /^"(?:[^"\\\u0000-\u001f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/.exec(this.s.slice(this.i));
    if (!m) this.fail('invalid string');
    this.i += m[0].length;
    return JSON.parse(m[0]) as string;
  }

  private object(path: string): Record<string, unknown> {
    const o: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
    this.i++;
    this.ws();
    if (this.s[this.i] === '}') {
      this.i++;
      return o;
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail('expected a key');
      const k = this.string();
      if (Object.prototype.hasOwnProperty.call(o, k)) throw new SignatureError(`signature payload: duplicate key ${JSON.stringify(k)}${path ? ` in ${path}` : ''}`);
      this.ws();
      if (this.s[this.i] !== ':') this.fail('expected ":"');
      this.i++;
      this.ws();
      o[k] = this.value(path ? `${path}.${k}` : k);
      if (this.closes('}')) return o;
    }
  }

  private array(path: string): unknown[] {
    const a: unknown[] = [];
    this.i++;
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      return a;
    }
    for (;;) {
      this.ws();
      a.push(this.value(`${path}[${a.length}]`));
      if (this.closes(']')) return a;
    }
  }

  /** After an object member or array element: true at `close`, false at a comma (either consumed); else fails. */
  private closes(close: '}' | ']'): boolean {
    this.ws();
    const c = this.s[this.i];
    if (c !== ',' && c !== close) this.fail(`expected "," or "${close}"`);
    this.i++;
    return c === close;
  }
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function exactly(o: unknown, fields: string[], path: string): Record<string, unknown> {
  if (!isObj(o)) throw new SignatureError(`signature payload: ${path} is not a JSON object`);
  for (const k of Object.keys(o)) if (!fields.includes(k)) throw new SignatureError(`signature payload: unknown key ${JSON.stringify(k)} in ${path}`);
  for (const f of fields) if (!(f in o)) throw new SignatureError(`signature payload: key ${JSON.stringify(f)} missing in ${path}`);
  return o;
}

/** Parse a simple-signing payload strictly (containers/image untrustedSignature.strictUnmarshalJSON). */
export function parseSimplePayload(bytes: Uint8Array): SimplePayload {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new SignatureError('signature payload is not UTF-8 text');
  }
  const doc = new StrictJson(text).parse();
  const top = exactly(doc, ['critical', 'optional'], 'the payload');
  const optional = top.optional;
  if (!isObj(optional)) throw new SignatureError('signature payload: optional is not a JSON object');
  const out: Partial<SimplePayload> = {};
  if ('creator' in optional) {
    if (typeof optional.creator !== 'string') throw new SignatureError('signature payload: optional.creator is not a string');
    out.creator = optional.creator;
  }
  if ('timestamp' in optional) {
    const t = optional.timestamp;
    if (typeof t !== 'number' || !Number.isInteger(t)) throw new SignatureError('signature payload: Field optional.timestamp is not an integer');
    out.timestamp = t;
  }
  const critical = exactly(top.critical, ['type', 'image', 'identity'], 'critical');
  if (typeof critical.type !== 'string') throw new SignatureError('signature payload: critical.type is not a string');
  if (critical.type !== SIMPLE_SIGNATURE_TYPE) throw new SignatureError(`signature payload: Unrecognized signature type ${JSON.stringify(critical.type)} (want ${JSON.stringify(SIMPLE_SIGNATURE_TYPE)})`);
  const image = exactly(critical.image, ['docker-manifest-digest'], 'critical.image');
  const d = image['docker-manifest-digest'];
  if (typeof d !== 'string') throw new SignatureError('signature payload: critical.image.docker-manifest-digest is not a string');
  const identity = exactly(critical.identity, ['docker-reference'], 'critical.identity');
  const ref = identity['docker-reference'];
  if (typeof ref !== 'string') throw new SignatureError('signature payload: critical.identity.docker-reference is not a string');
  if (!isDigest(d)) throw new SignatureError(`signature payload: invalid docker-manifest-digest ${JSON.stringify(d)}`);
  return { ...out, dockerReference: ref, digest: d };
}

export interface SimpleAcceptance {
  /** Verifies the OpenPGP message (gpgVerify in some keyring); throws why not. */
  verify: (sig: Buffer) => Promise<GpgVerified>;
  /** Why the signing key is not acceptable (undefined: it is). */
  key: (v: GpgVerified) => string | undefined;
  /** Why the signed manifest digest does not match (undefined: it does). */
  digest: (d: Digest) => string | undefined;
  /** Why the signed docker reference is not acceptable (undefined: it is). */
  identity: (ref: string) => string | undefined;
}

export interface SimpleVerified {
  payload: SimplePayload;
  /** The signing key's fingerprint (VALIDSIG). */
  fingerprint: string;
  primaryFingerprint: string;
}

/** containers/image verifyAndExtractSignature; throws SignatureError (or GpgError) naming the reason. */
export async function verifySimpleSignature(sig: Buffer, rules: SimpleAcceptance): Promise<SimpleVerified> {
  if (sig.length > 0 && sig[0] === 0) {
    const nl = sig.indexOf(0x0a);
    const fmt = sig.subarray(1, nl > 0 ? Math.min(nl, 40) : 20).toString('latin1');
    throw new SignatureError(`not a simple signing signature (format ${JSON.stringify(fmt)})`);
  }
  const v = await rules.verify(sig);
  const keyWhy = rules.key(v);
  if (keyWhy) throw new SignatureError(keyWhy);
  const payload = parseSimplePayload(v.payload);
  const dWhy = rules.digest(payload.digest);
  if (dWhy) throw new SignatureError(dWhy);
  const iWhy = rules.identity(payload.dockerReference);
  if (iWhy) throw new SignatureError(iWhy);
  return { payload, fingerprint: v.fingerprint, primaryFingerprint: v.primaryFingerprint };
}
