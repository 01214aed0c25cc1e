/**
 * containers-policy.json(5): which images may be copied. Parsing is strict (unknown keys,
 * empty requirement lists and bad scopes are errors naming the path in the file), and the
 * lookup order is containers/image's (signature/policy_eval.go requirementsForImageRef):
 * transport scope by exact identity, then each parent namespace, then the transport's "",
 * then `default`. Every requirement of the selected list must accept the image.
 *
 * Supported requirement types: insecureAcceptAnything, reject, signedBy with keyType GPGKeys (keyPath, keyPaths,
 * keyData; signedIdentity: "simple signing" signatures from the registries.d lookaside or dir: files, checked by gpg
 * with only the policy's keys: src/copy/sign/gpg.ts), sigstoreSigned (keyPath, keyPaths, keyData, keyDatas;
 * signedIdentity). signedBy with the other key types and sigstoreSigned with fulcio/pki/rekor keys are parsed but
 * refuse the image with a message saying so.
 *
 * signedBy checks the image copied: for a manifest list, each instance copied (its own signatures), not the list,
 * as containers/image's copyOneImage does (PolicySubject.simpleTargets).
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { TsimageError, UsageError } from '../oci/errors.js';
import { type Digest } from '../oci/digest.js';
import { type ImageReference } from '../oci/reference.js';
import { loadPublicKey } from './sign/keys.js';
import { checkCandidate, checkIdentity, normalizedNamed, parseSignedIdentity, type SignatureCandidate, type SignedIdentity } from './sign/verify.js';
import { findSignatures } from './sign/attachments.js';
import { layoutOf, sourceRepo } from './sign/repo.js';
import type { ImageName, ImageSource, ManifestBytes } from './types.js';
import type { Io } from '../oci/io.js';

export const SYSTEM_POLICY_PATH = '/etc/containers/policy.json';

export type PolicyRequirement =
  | { type: 'insecureAcceptAnything' }
  | { type: 'reject' }
  | {
      type: 'signedBy';
      keyType: string;
      keyPath?: string;
      keyPaths?: string[];
      keyData?: string;
      signedIdentity: SignedIdentity;
    }
  | {
      type: 'sigstoreSigned';
      keyPath?: string;
      keyPaths?: string[];
      keyData?: string;
      keyDatas?: string[];
      fulcio?: unknown;
      pki?: unknown;
      rekor?: boolean;
      signedIdentity: SignedIdentity;
    };

export interface Policy {
  /** Where it was read from (for messages). */
  source: string;
  default: PolicyRequirement[];
  transports: Record<string, Record<string, PolicyRequirement[]>>;
}

/** The source image was refused by the policy; nothing has been written. */
export class PolicyRejectedError extends TsimageError {}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function onlyKeys(o: Obj, keys: string[], path: string): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) throw new UsageError(`${path}: unknown key ${JSON.stringify(k)}`);
}

function strList(v: unknown, path: string): string[] {
  if (!Array.isArray(v) || v.length === 0 || v.some((s) => typeof s !== 'string' || s === ''))
    throw new UsageError(`${path}: must be a non-empty array of non-empty strings`);
  return v as string[];
}

function nonEmptyStr(v: unknown, path: string): string {
  if (typeof v !== 'string' || v === '') throw new UsageError(`${path}: must be a non-empty string`);
  return v;
}

const SIGNED_BY_KEY_TYPES = ['GPGKeys', 'signedByGPGKeys', 'X509Certificates', 'signedByX509CAs'];

function parseRequirement(v: unknown, path: string): PolicyRequirement {
  if (!isObj(v)) throw new UsageError(`${path}: a requirement must be an object`);
  switch (v.type) {
    case 'insecureAcceptAnything':
    case 'reject':
      onlyKeys(v, ['type'], path);
      return { type: v.type };
    case 'signedBy': {
      onlyKeys(v, ['type', 'keyType', 'keyPath', 'keyPaths', 'keyData', 'signedIdentity'], path);
      if (typeof v.keyType !== 'string' || !SIGNED_BY_KEY_TYPES.includes(v.keyType))
        throw new UsageError(`${path}.keyType: must be one of ${SIGNED_BY_KEY_TYPES.join(', ')}`);
      const n = ['keyPath', 'keyPaths', 'keyData'].filter((k) => v[k] !== undefined).length;
      if (n !== 1) throw new UsageError(`${path}: exactly one of keyPath, keyPaths and keyData must be specified`);
      const r: PolicyRequirement = {
        type: 'signedBy',
        keyType: v.keyType,
        signedIdentity: v.signedIdentity === undefined ? { type: 'matchRepoDigestOrExact' } : parseSignedIdentity(v.signedIdentity, `${path}.signedIdentity`),
      };
      if (v.keyPath !== undefined) r.keyPath = nonEmptyStr(v.keyPath, `${path}.keyPath`);
      if (v.keyPaths !== undefined) r.keyPaths = strList(v.keyPaths, `${path}.keyPaths`);
      if (v.keyData !== undefined) r.keyData = nonEmptyStr(v.keyData, `${path}.keyData`);
      return r;
    }
    case 'sigstoreSigned': {
      onlyKeys(
        v,
        [
          'type',
          'keyPath',
          'keyPaths',
          'keyData',
          'keyDatas',
          'fulcio',
          'pki',
          'rekorPublicKeyPath',
          'rekorPublicKeyPaths',
          'rekorPublicKeyData',
          'rekorPublicKeyDatas',
          'signedIdentity',
        ],
        path,
      );
      const n = ['keyPath', 'keyPaths', 'keyData', 'keyDatas', 'fulcio', 'pki'].filter((k) => v[k] !== undefined).length;
      if (n !== 1) throw new UsageError(`${path}: exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki must be specified`);
      const r: PolicyRequirement = {
        type: 'sigstoreSigned',
        signedIdentity: v.signedIdentity === undefined ? { type: 'matchRepoDigestOrExact' } : parseSignedIdentity(v.signedIdentity, `${path}.signedIdentity`),
      };
      if (v.keyPath !== undefined) r.keyPath = nonEmptyStr(v.keyPath, `${path}.keyPath`);
      if (v.keyPaths !== undefined) r.keyPaths = strList(v.keyPaths, `${path}.keyPaths`);
      if (v.keyData !== undefined) r.keyData = nonEmptyStr(v.keyData, `${path}.keyData`);
      if (v.keyDatas !== undefined) r.keyDatas = strList(v.keyDatas, `${path}.keyDatas`);
      if (v.fulcio !== undefined) r.fulcio = v.fulcio;
      if (v.pki !== undefined) r.pki = v.pki;
      if (['rekorPublicKeyPath', 'rekorPublicKeyPaths', 'rekorPublicKeyData', 'rekorPublicKeyDatas'].some((k) => v[k] !== undefined)) r.rekor = true;
      return r;
    }
    default:
      throw new UsageError(`${path}.type: unknown policy requirement type ${JSON.stringify(v.type)}`);
  }
}

function parseRequirements(v: unknown, path: string): PolicyRequirement[] {
  if (!Array.isArray(v)) throw new UsageError(`${path}: must be an array of requirements`);
  if (v.length === 0) throw new UsageError(`${path}: no requirements specified (an empty list would accept anything)`);
  return v.map((r, i) => parseRequirement(r, `${path}[${i}]`));
}

const HOST_PART = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*$/;

function validateScope(transport: string, scope: string, path: string): void {
  if (scope === '') return;
  if (transport === 'docker' || transport === 'atomic' || transport === 'docker-daemon') {
    if (scope.startsWith('*.')) {
      if (!HOST_PART.test(scope.slice(2))) throw new UsageError(`${path}: invalid wildcard scope ${JSON.stringify(scope)}`);
      return;
    }
    // a fully expanded name ("docker.io/library/busybox"), a namespace, or a host[:port]
    const m = /^([^/]+)(\/.*)?$/.exec(scope);
    if (!m || !(/[.:]/.test(m[1]!) || m[1] === 'localhost'))
      throw new UsageError(`${path}: docker scope ${JSON.stringify(scope)} must start with a registry host (scopes are fully expanded, e.g. docker.io/library/busybox)`);
  } else if (['oci', 'oci-archive', 'dir', 'docker-archive'].includes(transport)) {
    if (!scope.startsWith('/')) throw new UsageError(`${path}: ${transport} scope ${JSON.stringify(scope)} must be an absolute path`);
  }
}

/** Parse policy.json text strictly; errors name the path in the document. */
export function parsePolicy(text: string, source = 'policy.json'): Policy {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${source}: invalid JSON: ${(e as Error).message}`);
  }
  if (!isObj(doc)) throw new UsageError(`${source}: must be a JSON object`);
  onlyKeys(doc, ['default', 'transports'], source);
  if (doc.default === undefined) throw new UsageError(`${source}: "default" policy is missing`);
  const policy: Policy = { source, default: parseRequirements(doc.default, `${source}: default`), transports: {} };
  if (doc.transports !== undefined) {
    if (!isObj(doc.transports)) throw new UsageError(`${source}: transports: must be an object`);
    for (const [t, scopes] of Object.entries(doc.transports)) {
      if (!isObj(scopes)) throw new UsageError(`${source}: transports.${t}: must be an object of scopes`);
      const out: Record<string, PolicyRequirement[]> = {};
      for (const [scope, reqs] of Object.entries(scopes)) {
        const path = `${source}: transports.${t}[${JSON.stringify(scope)}]`;
        validateScope(t, scope, path);
        out[scope] = parseRequirements(reqs, path);
      }
      policy.transports[t] = out;
    }
  }
  return policy;
}

/**
 * Read the policy: the given file, else $HOME/.config/containers/policy.json when it exists,
 * else /etc/containers/policy.json (as containers/image's DefaultPolicy).
 */
export async function loadPolicy(path?: string): Promise<Policy> {
  const candidates = path ? [path] : [join(process.env.HOME ?? homedir(), '.config/containers/policy.json'), SYSTEM_POLICY_PATH];
  for (let i = 0; i < candidates.length; i++) {
    const p = candidates[i]!;
    try {
      return parsePolicy(await readFile(p, 'utf8'), p);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && !path && i < candidates.length - 1) continue;
      if (code) throw new UsageError(`reading policy ${p}: ${(e as Error).message}${!path ? ' (use --policy FILE, or --insecure-policy)' : ''}`);
      throw e;
    }
  }
  throw new UsageError('no policy file');
}

/** A policy that accepts anything (skopeo's --insecure-policy). */
export function insecurePolicy(): Policy {
  return { source: '--insecure-policy', default: [{ type: 'insecureAcceptAnything' }], transports: {} };
}

// ---------------------------------------------------------------------------------------
// Image identities for policy lookup

export interface PolicyIdentity {
  transport: string;
  /** The full identity (docker: `host/repo:tag` or `host/repo@digest`; paths: absolute path[:ref]). */
  identity: string;
  /** Parent scopes, most specific first. */
  namespaces: string[];
  /** The docker reference the user named, for signedIdentity checks (undefined for local layouts). */
  dockerReference: ImageReference | undefined;
}

/** containers/image's policyconfiguration.DockerReferenceNamespaces. */
export function dockerNamespaces(name: string): string[] {
  const res: string[] = [];
  let n = name;
  for (;;) {
    res.push(n);
    const i = n.lastIndexOf('/');
    if (i < 0) break;
    n = n.slice(0, i);
  }
  const colon = n.indexOf(':');
  if (colon >= 0) n = n.slice(0, colon);
  for (;;) {
    const dot = n.indexOf('.');
    if (dot < 0) break;
    n = n.slice(dot + 1);
    res.push(`*.${n}`);
  }
  return res;
}

/** The policy identity of a docker:// image (tag defaults to latest, as the docker transport does). */
export function dockerPolicyIdentity(ref: ImageReference): PolicyIdentity {
  const name = `${ref.registry}/${ref.repository}`;
  const r: ImageReference = { ...ref };
  if (!r.tag && !r.digest) r.tag = 'latest';
  // The docker transport identifies by digest when one is given.
  const identity = r.digest ? `${name}@${r.digest}` : `${name}:${r.tag}`;
  return { transport: 'docker', identity, namespaces: dockerNamespaces(name), dockerReference: r };
}

/** The policy identity of a path-based image (oci:, oci-archive:, dir:, docker-archive:). */
export function pathPolicyIdentity(transport: string, path: string, ref?: string): PolicyIdentity {
  const abs = resolve(path);
  const namespaces: string[] = [];
  let p = abs;
  for (;;) {
    const i = p.lastIndexOf('/');
    if (i < 0 || p === '/') break;
    namespaces.push(p);
    p = p.slice(0, i);
    if (p === '') break;
  }
  const identity = ref ? `${abs}:${ref}` : abs;
  if (!ref) namespaces.shift();
  return { transport, identity, namespaces, dockerReference: undefined };
}

export interface ScopeMatch {
  /** Human-readable name of the selected section ("default", `transports.docker["host/repo"]`). */
  section: string;
  requirements: PolicyRequirement[];
}

/** Select the requirements for an identity (containers/image's requirementsForImageRef). */
export function requirementsFor(policy: Policy, id: PolicyIdentity): ScopeMatch {
  const scopes = policy.transports[id.transport];
  if (scopes) {
    const sect = (s: string): string => `transports.${id.transport}[${JSON.stringify(s)}]`;
    const exact = scopes[id.identity];
    if (exact) return { section: sect(id.identity), requirements: exact };
    for (const ns of id.namespaces) {
      const r = scopes[ns];
      if (r) return { section: sect(ns), requirements: r };
    }
    const d = scopes[''];
    if (d) return { section: sect(''), requirements: d };
  }
  return { section: 'default', requirements: policy.default };
}

// ---------------------------------------------------------------------------------------
// Evaluation

export interface PolicySubject extends PolicyIdentity {
  /** Digest of the manifest being copied (the top-level one: a list's digest for --all). */
  manifestDigest: Digest;
  /** Fetch the image's cosign signatures (only called when a rule needs them). */
  signatures: () => Promise<SignatureCandidate[]>;
  /** Simple-signing signatures of the image or of one of its instances (signedBy); none when absent. */
  simpleSignatures?: ((target: SimpleTarget) => Promise<Buffer[]>) | undefined;
  /** The manifests signedBy checks (default: the image): each instance copied from a list (containers/image). */
  simpleTargets?: SimpleTarget[] | undefined;
}

/** A manifest whose simple signatures a signedBy requirement checks. */
export interface SimpleTarget {
  digest: Digest;
  /** An instance of the image's index (its signatures are stored per instance). */
  instance: boolean;
}

export interface PolicyDecision {
  section: string;
  /** One line per requirement: what accepted it. */
  accepted: string[];
}

async function readKeys(r: Extract<PolicyRequirement, { type: 'sigstoreSigned' }>, where: string): Promise<KeyObject[]> {
  const pems: { pem: string; what: string }[] = [];
  for (const p of [...(r.keyPath ? [r.keyPath] : []), ...(r.keyPaths ?? [])]) {
    try {
      pems.push({ pem: await readFile(p, 'utf8'), what: `keyPath ${p}` });
    } catch (e) {
      throw new PolicyRejectedError(`${where}: reading public key: ${(e as Error).message}`);
    }
  }
  for (const d of [...(r.keyData ? [r.keyData] : []), ...(r.keyDatas ?? [])]) pems.push({ pem: Buffer.from(d, 'base64').toString('utf8'), what: 'keyData' });
  return pems.map(({ pem, what }) => {
    try {
      return loadPublicKey(pem, what);
    } catch (e) {
      throw new PolicyRejectedError(`${where}: ${(e as Error).message}`);
    }
  });
}

/**
 * Evaluate the policy for an image; resolves with what accepted it, throws
 * PolicyRejectedError naming the policy file, the section, the requirement and the reason.
 */
export async function evaluatePolicy(policy: Policy, subject: PolicySubject): Promise<PolicyDecision> {
  const { section, requirements } = requirementsFor(policy, subject);
  const name = `${subject.transport}:${subject.identity}`;
  const accepted: string[] = [];
  let sigs: SignatureCandidate[] | undefined;
  for (let i = 0; i < requirements.length; i++) {
    const r = requirements[i]!;
    const where = `policy ${policy.source} ${section}[${i}] (${r.type})`;
    const refuse = (why: string): never => {
      throw new PolicyRejectedError(`Source image ${name} rejected by ${where}: ${why}`);
    };
    switch (r.type) {
      case 'insecureAcceptAnything':
        accepted.push(`${where}: accepted`);
        break;
      case 'reject':
        refuse('Running image is rejected by policy');
        break;
      case 'signedBy':
        accepted.push(...(await evaluateSignedBy(r, subject, where, refuse)));
        break;
      case 'sigstoreSigned': {
        if (r.fulcio || r.pki) refuse('sigstoreSigned with fulcio/pki certificates is not supported by tscopy (use keyPath/keyData)');
        if (r.rekor) refuse('sigstoreSigned with a Rekor public key is not supported by tscopy (no transparency log verification)');
        const keys = await readKeys(r, where);
        sigs ??= await subject.signatures();
        if (sigs.length === 0) refuse('A signature was required, but no signature exists');
        const results = sigs.map((c) =>
          checkCandidate(c, { keys, manifestDigest: subject.manifestDigest, identity: r.signedIdentity, intended: subject.dockerReference }),
        );
        const ok = results.find((x) => x.ok);
        if (!ok) refuse(`no valid signature among ${sigs.length}: ${results.map((x) => `${x.candidate.where}: ${x.reason}`).join('; ')}`);
        accepted.push(`${where}: signature in ${ok!.candidate.where} by key ${ok!.keyIndex! + 1}, identity ${ok!.payload!.dockerReference}`);
        break;
      }
    }
  }
  return { section, accepted };
}

async function readGpgKeys(r: Extract<PolicyRequirement, { type: 'signedBy' }>, where: string): Promise<{ keys: Buffer[]; names: string[] }> {
  const keys: Buffer[] = [];
  const names: string[] = [];
  for (const p of [...(r.keyPath ? [r.keyPath] : []), ...(r.keyPaths ?? [])]) {
    try {
      keys.push(await readFile(p));
    } catch (e) {
      throw new PolicyRejectedError(`${where}: reading GPG key: ${(e as Error).message}`);
    }
    names.push(`keyPath ${p}`);
  }
  if (r.keyData !== undefined) {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(r.keyData.replace(/\s+/g, ''))) throw new PolicyRejectedError(`${where}: keyData is not base64`);
    keys.push(Buffer.from(r.keyData, 'base64'));
    names.push('keyData');
  }
  return { keys, names };
}

/**
 * signedBy (containers/image prSignedBy.isRunningImageAllowed): one signature per checked manifest must verify with
 * the policy's keys only (an ephemeral gpg keyring), be for that manifest's digest and for an accepted identity.
 * Returns what accepted it; calls refuse() (which throws) otherwise.
 */
async function evaluateSignedBy(
  r: Extract<PolicyRequirement, { type: 'signedBy' }>,
  subject: PolicySubject,
  where: string,
  refuse: (why: string) => never,
): Promise<string[]> {
  if (r.keyType !== 'GPGKeys') refuse(`Unimplemented "keyType" value "${r.keyType}" (tscopy verifies GPGKeys)`);
  const targets = subject.simpleTargets?.length ? subject.simpleTargets : [{ digest: subject.manifestDigest, instance: false }];
  const label = (t: SimpleTarget) => (t.instance ? `instance ${t.digest}: ` : '');
  const sigs = await Promise.all(targets.map((t) => subject.simpleSignatures?.(t) ?? Promise.resolve([])));
  targets.forEach((t, i) => {
    if (sigs[i]!.length === 0) refuse(`${label(t)}A signature was required, but no signature exists`);
  });
  const { keys, names } = await readGpgKeys(r, where);
  const [{ withEphemeralKeyring }, { verifySimpleSignature }] = await Promise.all([import('./sign/gpg.js'), import('./sign/simple.js')]);
  return withEphemeralKeyring(keys, names, async (kr) => {
    if (kr.fingerprints.length === 0) refuse('No public keys imported');
    const out: string[] = [];
    for (let ti = 0; ti < targets.length; ti++) {
      const t = targets[ti]!;
      const reasons: string[] = [];
      let ok: string | undefined;
      for (let i = 0; i < sigs[ti]!.length && !ok; i++) {
        try {
          const v = await verifySimpleSignature(sigs[ti]![i]!, {
            verify: (b) => kr.verify(b),
            key: (g) =>
              kr.fingerprints.includes(g.fingerprint) || kr.fingerprints.includes(g.primaryFingerprint) ? undefined : `Signature by key ${g.fingerprint} is not accepted`,
            digest: (d) => (d === t.digest ? undefined : `Signature for digest ${d} does not match the image's ${t.digest}`),
            identity: (ref) => {
              const why = checkIdentity(r.signedIdentity, subject.dockerReference, ref);
              return why ? `Signature for identity ${ref} is not accepted: ${why}` : undefined;
            },
          });
          ok = `${where}: ${label(t)}signature ${i + 1} by key ${v.primaryFingerprint}, identity ${v.payload.dockerReference}`;
        } catch (e) {
          if (!(e instanceof TsimageError)) throw e;
          reasons.push(sigs[ti]!.length > 1 ? `signature ${i + 1}: ${e.message}` : e.message);
        }
      }
      if (!ok) refuse(`${label(t)}${reasons.length === 1 ? reasons[0] : `None of the signatures were accepted, reasons: ${reasons.join('; ')}`}`);
      out.push(ok);
    }
    return out;
  });
}

// ---------------------------------------------------------------------------------------
// Enforcement on copy/sync (the engine's beforeWrite hook)

/** The policy subject for a transport image name and the digest of the manifest being copied. */
export function policySubject(name: ImageName, manifestDigest: Digest, signatures: () => Promise<SignatureCandidate[]>): PolicySubject {
  let dockerReference: ImageReference | undefined;
  if (name.dockerReference) {
    const r = normalizedNamed(name.dockerReference);
    dockerReference = !r.tag && !r.digest ? { ...r, tag: 'latest' } : r;
  }
  return {
    transport: name.transport,
    identity: name.policyIdentity(),
    namespaces: name.policyNamespaces(),
    dockerReference,
    manifestDigest,
    signatures,
  };
}

/**
 * Evaluate the policy for a source image about to be copied (its top manifest already read);
 * throws PolicyRejectedError before anything is written. Signatures are looked up in the
 * source's `.sig` tag and referrers only when a rule needs them.
 */
export async function enforcePolicy(
  policy: Policy,
  src: ImageSource,
  manifest: ManifestBytes,
  io?: Io,
  simple?: { targets?: SimpleTarget[] | undefined; read?: ((t: SimpleTarget) => Promise<Buffer[]>) | undefined },
): Promise<PolicyDecision> {
  const subject = policySubject(src.name, manifest.digest, async () => {
    // a transport that cannot hold signatures (dir:, archives): there are none
    if (!src.manifestByRef && !layoutOf(src)) return [];
    const found = await findSignatures(sourceRepo(src), manifest.digest, io);
    return found.candidates;
  });
  subject.simpleTargets = simple?.targets;
  subject.simpleSignatures = simple?.read ?? (src.simpleSignatures ? (t) => src.simpleSignatures!(t.digest, { ...io, instance: t.instance }) : undefined);
  return evaluatePolicy(policy, subject);
}
