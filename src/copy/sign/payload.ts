/**
 * The cosign "simple signing" payload and ECDSA/SHA-256 signatures over its exact bytes.
 *
 * cosign writes (Go encoding/json, struct field order, map keys sorted, HTML characters escaped):
 *   {"critical":{"identity":{"docker-reference":"REPO"},"image":{"docker-manifest-digest":"sha256:..."},
 *    "type":"cosign container image signature"},"optional":null|{...}}
 * The signature is ASN.1 DER (ECDSA) over SHA-256 of those bytes, base64 in the layer annotation
 * `dev.cosignproject.cosign/signature`. Verification always works on the stored bytes,
 * never on a re-serialisation.
 */
import { sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { isDigest, type Digest } from '../../oci/digest.js';
import { TsimageError } from '../../oci/errors.js';

export const COSIGN_SIGNATURE_TYPE = 'cosign container image signature';
export const SIMPLE_SIGNING_MEDIA_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
/** artifactType cosign uses for signatures stored as OCI 1.1 referrers. */
export const COSIGN_SIG_ARTIFACT_TYPE = 'application/vnd.dev.cosign.artifact.sig.v1+json';

/** A signature that does not verify, or a payload that is not what it claims (the message says which). */
export class SignatureError extends TsimageError {}

/** Go's encoding/json string encoding (escapes <, >, &, U+2028, U+2029 and control characters as \u00XX). */
export function goJsonString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || ch === '<' || ch === '>' || ch === '&' || c === 0x2028 || c === 0x2029)
      out += '\\u' + c.toString(16).padStart(4, '0');
    else out += ch;
  }
  return out + '"';
}

/** Go-style JSON for the `optional` annotations: objects with sorted keys, no spaces. */
export function goJson(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return goJsonString(v);
  if (typeof v === 'number' || typeof v === 'boolean') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(goJson).join(',')}]`;
  if (typeof v === 'object') {
    const keys = Object.keys(v as object).sort();
    return `{${keys.map((k) => `${goJsonString(k)}:${goJson((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  throw new TypeError(`cannot encode ${typeof v} as JSON`);
}

/** The payload bytes cosign would sign for `dockerReference` (a repository, as cosign writes it) and the manifest digest. */
export function makePayload(dockerReference: string, digest: Digest, optional?: Record<string, unknown> | null): Buffer {
  const critical =
    `{"identity":{"docker-reference":${goJsonString(dockerReference)}},` +
    `"image":{"docker-manifest-digest":${goJsonString(digest)}},` +
    `"type":${goJsonString(COSIGN_SIGNATURE_TYPE)}}`;
  const opt = optional && Object.keys(optional).length ? goJson(optional) : 'null';
  return Buffer.from(`{"critical":${critical},"optional":${opt}}`);
}

export interface Payload {
  dockerReference: string;
  digest: Digest;
  optional: Record<string, unknown> | null;
}

function exactFields(o: unknown, fields: string[], path: string): Record<string, unknown> {
  if (!o || typeof o !== 'object' || Array.isArray(o)) throw new SignatureError(`signature payload: ${path} is not a JSON object`);
  const keys = Object.keys(o);
  for (const k of keys) if (!fields.includes(k)) throw new SignatureError(`signature payload: unexpected field ${path}.${k}`);
  for (const f of fields) if (!(f in o)) throw new SignatureError(`signature payload: missing field ${path}.${f}`);
  return o as Record<string, unknown>;
}

/** Parse a payload strictly (as containers/image does: exact fields in `critical`, the cosign type). */
export function parsePayload(bytes: Uint8Array): Payload {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (e) {
    throw new SignatureError(`signature payload is not JSON: ${(e as Error).message}`);
  }
  const top = exactFields(doc, ['critical', 'optional'], 'payload');
  const critical = exactFields(top.critical, ['identity', 'image', 'type'], 'critical');
  if (critical.type !== COSIGN_SIGNATURE_TYPE)
    throw new SignatureError(`signature payload: unrecognized signature type ${JSON.stringify(critical.type)}`);
  const image = exactFields(critical.image, ['docker-manifest-digest'], 'critical.image');
  const identity = exactFields(critical.identity, ['docker-reference'], 'critical.identity');
  const d = image['docker-manifest-digest'];
  if (!isDigest(d)) throw new SignatureError(`signature payload: invalid docker-manifest-digest ${JSON.stringify(d)}`);
  const ref = identity['docker-reference'];
  if (typeof ref !== 'string') throw new SignatureError('signature payload: docker-reference is not a string');
  const optional = top.optional;
  if (optional !== null && (typeof optional !== 'object' || Array.isArray(optional)))
    throw new SignatureError('signature payload: optional must be an object or null');
  return { dockerReference: ref, digest: d, optional: optional as Record<string, unknown> | null };
}

/** ECDSA/SHA-256 signature (ASN.1 DER) over the bytes, base64-encoded. */
export function signPayload(key: KeyObject, payload: Uint8Array): string {
  return cryptoSign('sha256', payload, key).toString('base64');
}

/** Check a base64 DER ECDSA signature over the exact payload bytes; throws SignatureError. */
export function verifyPayloadSignature(key: KeyObject, payload: Uint8Array, base64Signature: string): void {
  const b64 = base64Signature.trim();
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw new SignatureError('signature annotation is not base64');
  let ok = false;
  try {
    ok = cryptoVerify('sha256', payload, key, Buffer.from(b64, 'base64'));
  } catch (e) {
    throw new SignatureError(`cryptographic signature verification failed: ${(e as Error).message}`);
  }
  if (!ok) throw new SignatureError('cryptographic signature verification failed: the signature does not match the payload and key');
}
