/**
 * Descriptors, image manifests, indexes and image configs: types and validators whose
 * errors name the field path (`layers[2].digest: ...`). Manifest bytes are kept verbatim
 * by callers: parsing never implies re-serialising.
 */
import { parseDigest, digestOf, type Digest } from './digest.js';
import { ValidationError, TsimageError } from './errors.js';
import {
  MediaTypes,
  guessManifestType,
  isIndexType,
  isManifestType,
  isSchema1Type,
  type MediaType,
} from './mediatypes.js';

export interface Platform {
  architecture: string;
  os: string;
  'os.version'?: string;
  'os.features'?: string[];
  variant?: string;
  features?: string[];
}

export interface Descriptor {
  mediaType: MediaType;
  digest: Digest;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  data?: string;
  artifactType?: string;
  platform?: Platform;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: MediaType;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: MediaType;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface HealthConfig {
  Test?: string[];
  Interval?: number;
  Timeout?: number;
  StartPeriod?: number;
  StartInterval?: number;
  Retries?: number;
}

export interface ContainerConfig {
  User?: string;
  ExposedPorts?: Record<string, object>;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Volumes?: Record<string, object>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
  ArgsEscaped?: boolean;
  Healthcheck?: HealthConfig;
  OnBuild?: string[] | null;
  Shell?: string[];
}

export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface ImageConfig {
  created?: string;
  author?: string;
  architecture: string;
  os: string;
  'os.version'?: string;
  'os.features'?: string[];
  variant?: string;
  config?: ContainerConfig;
  rootfs: { type: 'layers'; diff_ids: Digest[] };
  history?: HistoryEntry[];
  [k: string]: unknown;
}

export type ParsedManifest =
  | { kind: 'manifest'; mediaType: MediaType; digest: Digest; doc: ImageManifest }
  | { kind: 'index'; mediaType: MediaType; digest: Digest; doc: ImageIndex };

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function at(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return path ? `${path}.${key}` : key;
}

function need(cond: unknown, path: string, problem: string): asserts cond {
  if (!cond) throw new ValidationError(path, problem);
}

function checkStringMap(v: unknown, path: string): void {
  if (v === undefined) return;
  need(isObj(v), path, 'must be an object of strings');
  for (const [k, s] of Object.entries(v)) need(typeof s === 'string', at(path, k), 'must be a string');
}

const MEDIA_TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

export function validatePlatform(v: unknown, path = 'platform'): Platform {
  need(isObj(v), path, 'must be an object');
  need(typeof v.architecture === 'string' && v.architecture !== '', at(path, 'architecture'), 'must be a non-empty string');
  need(typeof v.os === 'string' && v.os !== '', at(path, 'os'), 'must be a non-empty string');
  if (v.variant !== undefined) need(typeof v.variant === 'string', at(path, 'variant'), 'must be a string');
  if (v['os.version'] !== undefined) need(typeof v['os.version'] === 'string', at(path, 'os.version'), 'must be a string');
  return v as unknown as Platform;
}

export function validateDescriptor(v: unknown, path = 'descriptor'): Descriptor {
  need(isObj(v), path, 'must be an object');
  need(typeof v.mediaType === 'string', at(path, 'mediaType'), 'missing or not a string');
  need(MEDIA_TYPE_RE.test(v.mediaType as string), at(path, 'mediaType'), `invalid media type ${JSON.stringify(v.mediaType)}`);
  need(typeof v.digest === 'string', at(path, 'digest'), 'missing or not a string');
  parseDigest(v.digest as string, at(path, 'digest'));
  need(
    typeof v.size === 'number' && Number.isSafeInteger(v.size) && (v.size as number) >= 0,
    at(path, 'size'),
    'must be a non-negative integer',
  );
  if (v.urls !== undefined) {
    need(Array.isArray(v.urls), at(path, 'urls'), 'must be an array of strings');
    (v.urls as unknown[]).forEach((u, i) => need(typeof u === 'string', at(at(path, 'urls'), i), 'must be a string'));
  }
  checkStringMap(v.annotations, at(path, 'annotations'));
  if (v.data !== undefined) {
    need(typeof v.data === 'string' && /^[A-Za-z0-9+/]*={0,2}$/.test(v.data), at(path, 'data'), 'must be base64');
    const bytes = Buffer.from(v.data as string, 'base64');
    need(bytes.length === v.size, at(path, 'data'), `decodes to ${bytes.length} bytes but size is ${v.size}`);
    need(digestOf(bytes, (v.digest as string).startsWith('sha512:') ? 'sha512' : 'sha256') === v.digest, at(path, 'data'), 'does not match digest');
  }
  if (v.artifactType !== undefined)
    need(typeof v.artifactType === 'string' && MEDIA_TYPE_RE.test(v.artifactType), at(path, 'artifactType'), 'invalid media type');
  if (v.platform !== undefined) validatePlatform(v.platform, at(path, 'platform'));
  return v as unknown as Descriptor;
}

function schema1Error(): TsimageError {
  return new ValidationError(
    'mediaType',
    'Docker image manifest schema 1 is not supported (deprecated); convert the image to schema 2 or OCI first',
  );
}

export function validateManifest(v: unknown, mediaType?: MediaType): ImageManifest {
  need(isObj(v), '', 'manifest must be a JSON object');
  if (v.schemaVersion === 1) throw schema1Error();
  need(v.schemaVersion === 2, 'schemaVersion', `must be 2, got ${JSON.stringify(v.schemaVersion)}`);
  if (v.mediaType !== undefined) {
    need(typeof v.mediaType === 'string', 'mediaType', 'must be a string');
    need(isManifestType(v.mediaType as string), 'mediaType', `${JSON.stringify(v.mediaType)} is not an image manifest media type`);
    if (mediaType !== undefined)
      need(v.mediaType === mediaType, 'mediaType', `${JSON.stringify(v.mediaType)} does not match the declared ${mediaType}`);
  } else {
    need(mediaType !== MediaTypes.dockerManifest, 'mediaType', 'required for Docker schema 2 manifests');
  }
  const config = validateDescriptor(v.config, 'config');
  need(Array.isArray(v.layers), 'layers', 'must be an array');
  (v.layers as unknown[]).forEach((l, i) => validateDescriptor(l, at('layers', i)));
  if (mediaType === MediaTypes.dockerManifest || v.mediaType === MediaTypes.dockerManifest) {
    need(
      config.mediaType === MediaTypes.dockerConfig,
      'config.mediaType',
      `Docker schema 2 manifests need ${MediaTypes.dockerConfig}, got ${config.mediaType}`,
    );
  }
  if (v.subject !== undefined) validateDescriptor(v.subject, 'subject');
  if (v.artifactType !== undefined)
    need(typeof v.artifactType === 'string' && MEDIA_TYPE_RE.test(v.artifactType), 'artifactType', 'invalid media type');
  checkStringMap(v.annotations, 'annotations');
  return v as unknown as ImageManifest;
}

export function validateIndex(v: unknown, mediaType?: MediaType): ImageIndex {
  need(isObj(v), '', 'index must be a JSON object');
  need(v.schemaVersion === 2, 'schemaVersion', `must be 2, got ${JSON.stringify(v.schemaVersion)}`);
  if (v.mediaType !== undefined) {
    need(typeof v.mediaType === 'string', 'mediaType', 'must be a string');
    need(isIndexType(v.mediaType as string), 'mediaType', `${JSON.stringify(v.mediaType)} is not an index media type`);
    if (mediaType !== undefined)
      need(v.mediaType === mediaType, 'mediaType', `${JSON.stringify(v.mediaType)} does not match the declared ${mediaType}`);
  } else {
    need(mediaType !== MediaTypes.dockerManifestList, 'mediaType', 'required for Docker manifest lists');
  }
  need(Array.isArray(v.manifests), 'manifests', 'must be an array');
  (v.manifests as unknown[]).forEach((m, i) => validateDescriptor(m, at('manifests', i)));
  if (v.subject !== undefined) validateDescriptor(v.subject, 'subject');
  checkStringMap(v.annotations, 'annotations');
  return v as unknown as ImageIndex;
}

/** Parse JSON bytes with an error that says what the bytes were supposed to be. */
export function parseJson(bytes: Uint8Array | string, what: string): unknown {
  try {
    return JSON.parse(typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8'));
  } catch (e) {
    throw new ValidationError('', `${what} is not valid JSON: ${(e as Error).message}`);
  }
}

/**
 * Parse manifest or index bytes (kept verbatim by the caller). `mediaType` is the declared
 * type (Content-Type or descriptor); without it the type is guessed from the document.
 */
export function parseManifest(bytes: Uint8Array, mediaType?: MediaType): ParsedManifest {
  const doc = parseJson(bytes, 'manifest');
  const declared = mediaType && mediaType !== 'application/json' ? mediaType.split(';')[0]!.trim() : undefined;
  if (declared && isSchema1Type(declared)) throw schema1Error();
  const mt = declared ?? guessManifestType(doc);
  if (mt && isSchema1Type(mt)) throw schema1Error();
  const digest = digestOf(bytes);
  if (mt && isIndexType(mt)) return { kind: 'index', mediaType: mt, digest, doc: validateIndex(doc, declared) };
  if (mt && isManifestType(mt)) return { kind: 'manifest', mediaType: mt, digest, doc: validateManifest(doc, declared) };
  throw new ValidationError('mediaType', `unsupported manifest media type ${JSON.stringify(mt ?? '(none)')}`);
}

export function validateConfig(v: unknown): ImageConfig {
  need(isObj(v), '', 'image config must be a JSON object');
  need(typeof v.architecture === 'string', 'architecture', 'missing or not a string');
  need(typeof v.os === 'string', 'os', 'missing or not a string');
  need(isObj(v.rootfs), 'rootfs', 'must be an object');
  need(v.rootfs.type === 'layers', 'rootfs.type', `must be "layers", got ${JSON.stringify(v.rootfs.type)}`);
  need(Array.isArray(v.rootfs.diff_ids), 'rootfs.diff_ids', 'must be an array');
  (v.rootfs.diff_ids as unknown[]).forEach((d, i) => {
    need(typeof d === 'string', `rootfs.diff_ids[${i}]`, 'must be a string');
    parseDigest(d as string, `rootfs.diff_ids[${i}]`);
  });
  if (v.created !== undefined) need(typeof v.created === 'string', 'created', 'must be an RFC 3339 string');
  if (v.config !== undefined && v.config !== null) {
    const c = v.config;
    need(isObj(c), 'config', 'must be an object');
    for (const k of ['Env', 'Entrypoint', 'Cmd'] as const) {
      const a = c[k];
      if (a === undefined || a === null) continue;
      need(Array.isArray(a), `config.${k}`, 'must be an array of strings');
      (a as unknown[]).forEach((s, i) => need(typeof s === 'string', `config.${k}[${i}]`, 'must be a string'));
    }
    checkStringMap(c.Labels, 'config.Labels');
  }
  if (v.history !== undefined) need(Array.isArray(v.history), 'history', 'must be an array');
  return v as unknown as ImageConfig;
}

export function parseConfig(bytes: Uint8Array): ImageConfig {
  return validateConfig(parseJson(bytes, 'image config'));
}

/** The empty descriptor of OCI 1.1 (`{}`), for artifacts without a config. */
export const EMPTY_DESCRIPTOR: Descriptor = {
  mediaType: MediaTypes.ociEmpty,
  digest: digestOf('{}'),
  size: 2,
  data: 'e30=',
};

/** Canonical JSON bytes for a document we create (never for one we only move). */
export function toJsonBytes(doc: unknown): Buffer {
  return Buffer.from(JSON.stringify(doc), 'utf8');
}

// ---------------------------------------------------------------------------------------------
// Manifest digests as containers/image computes them

/** Go's encoding/json field lookup: key names match case-insensitively, the last matching key wins. */
function goField(o: Record<string, unknown>, name: string): unknown {
  let v: unknown;
  const want = name.toLowerCase();
  for (const k of Object.keys(o)) if (k.toLowerCase() === want) v = o[k];
  return v;
}

/** base64url without padding (JOSE), as libtrust decodes it (newlines and spaces dropped); undefined when it is not that. */
function joseBase64Url(s: string): Buffer | undefined {
  s = s.replace(/[\n ]/g, '');
  if (!/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) return undefined;
  return Buffer.from(s, 'base64url');
}

/**
 * The payload a signed Docker schema 1 manifest's JWS signatures cover, or undefined when the bytes are not such a
 * manifest (the test of containers/image's GuessMIMEType: a JSON object, schemaVersion 1, a non-null `signatures`
 * and no schema 2/OCI mediaType). The payload is the bytes up to `formatLength` plus `formatTail`, both from the
 * signatures' protected headers (libtrust's ParsePrettySignature, whose checks are repeated here except the JWK
 * key parsing: nothing here verifies signatures).
 */
function schema1SignedPayload(bytes: Uint8Array): Buffer | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return undefined;
  const o = doc as Record<string, unknown>;
  const mediaType = goField(o, 'mediaType');
  const schemaVersion = goField(o, 'schemaVersion');
  if (mediaType !== undefined && mediaType !== null && typeof mediaType !== 'string') return undefined;
  if (schemaVersion !== undefined && schemaVersion !== null && !Number.isInteger(schemaVersion)) return undefined;
  const known: string[] = [MediaTypes.dockerManifest, MediaTypes.dockerManifestList, MediaTypes.ociManifest, MediaTypes.ociIndex];
  if (typeof mediaType === 'string' && known.includes(mediaType)) return undefined;
  const sigs = goField(o, 'signatures');
  if (schemaVersion !== 1 || sigs === undefined || sigs === null) return undefined;

  const bad = (why: string) => new ValidationError('signatures', `signed Docker schema 1 manifest: ${why}`);
  if (!Object.prototype.hasOwnProperty.call(o, 'signatures')) throw bad('missing signature key');
  if (!Array.isArray(o.signatures)) throw bad('error unmarshalling signatures: not an array');
  let length: number | undefined;
  let tail: Buffer | undefined;
  for (const [i, s] of (o.signatures as unknown[]).entries()) {
    // (null decodes as an empty block in Go: its empty "protected" then fails the JSON parse below)
    if (typeof s !== 'object' || Array.isArray(s)) throw bad(`error unmarshalling signatures: signatures[${i}] is not an object`);
    const p = s === null ? '' : (goField(s as Record<string, unknown>, 'protected') ?? '');
    if (typeof p !== 'string') throw bad(`error unmarshalling signatures: signatures[${i}].protected is not a string`);
    const header = joseBase64Url(p);
    if (!header) throw bad(`base64 decode error in signatures[${i}].protected`);
    let h: unknown;
    try {
      h = JSON.parse(header.toString('utf8'));
    } catch (e) {
      throw bad(`error unmarshalling protected header of signatures[${i}]: ${(e as Error).message}`);
    }
    if (typeof h !== 'object' || h === null || Array.isArray(h)) throw bad(`error unmarshalling protected header of signatures[${i}]: not an object`);
    const fl = (h as Record<string, unknown>).formatLength;
    const ft = (h as Record<string, unknown>).formatTail;
    if (typeof fl !== 'number') throw bad('missing formatted length');
    if (typeof ft !== 'string') throw bad('missing formatted tail');
    const t = joseBase64Url(ft);
    if (!t) throw bad(`base64 decode error on tail of signatures[${i}]`);
    const n = Math.trunc(fl);
    if (!length) length = n;
    else if (length !== n) throw bad('conflicting format length');
    if (!tail?.length) tail = t;
    else if (!tail.equals(t)) throw bad('conflicting format tail');
  }
  const n = length ?? 0;
  if (n < 0 || n > bytes.byteLength) throw bad('invalid format length');
  return Buffer.concat([bytes.subarray(0, n), tail ?? Buffer.alloc(0)]);
}

/**
 * The digest containers/image gives manifest bytes (its manifest.Digest: what `skopeo manifest-digest` prints and
 * simple signing signs): the SHA-256 of the bytes, except for a signed Docker schema 1 manifest, whose digest is
 * that of its JWS payload (the manifest without its signatures). Throws a ValidationError naming the problem when
 * a signed schema 1 manifest's signatures cannot be parsed.
 */
export function manifestDigest(bytes: Uint8Array): Digest {
  return digestOf(schema1SignedPayload(bytes) ?? bytes);
}
