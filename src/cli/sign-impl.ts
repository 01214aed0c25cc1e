/** Implementations of tscopy's signing commands (loaded lazily by tscopy-sign.ts). */
import { writeFile, access, readFile, stat } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { basename } from 'node:path';
import { UsageError } from '../oci/errors.js';
import { OciLayout } from '../oci/store.js';
import { digestOf, type Digest } from '../oci/digest.js';
import { isIndexType } from '../oci/mediatypes.js';
import { type ImageReference } from '../oci/reference.js';
import { type Descriptor } from '../oci/manifest.js';
import {
  attachArtifact,
  generateKeyPair,
  getPassword,
  isEncryptedKey,
  layoutRepo,
  listReferrers,
  loadPrivateKey,
  loadPublicKey,
  normalizedNamed,
  signImage,
  signatureTag,
  transportRepo,
  isAttachmentTag,
  verifyImage,
  type ArtifactRepo,
  type VerifyReport,
} from '../copy/sign/index.js';
import type { ImageDestination, ImageName, ImageSource, ManifestBytes, OpenOptions } from '../copy/types.js';
import { rootController, VERSION } from './common.js';

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

export async function generateKeyPairCmd(opts: { outputKeyPrefix: string; passwordFile?: string | undefined; force?: boolean | undefined }): Promise<void> {
  const keyPath = `${opts.outputKeyPrefix}.key`;
  const pubPath = `${opts.outputKeyPrefix}.pub`;
  if (!opts.force) {
    for (const f of [keyPath, pubPath]) if (await exists(f)) throw new UsageError(`${f} already exists (use --force to overwrite)`);
  }
  const password = await getPassword({ passwordFile: opts.passwordFile, confirm: true });
  const pair = generateKeyPair(password);
  await writeFile(keyPath, pair.privateKey, { mode: 0o600, flag: opts.force ? 'w' : 'wx' });
  await writeFile(pubPath, pair.publicKey, { mode: 0o644, flag: opts.force ? 'w' : 'wx' });
  process.stderr.write(`Private key written to ${keyPath}\nPublic key written to ${pubPath}\n`);
}

/** Registry options shared by the commands (skopeo's names). */
export interface RegistryOpts {
  tlsVerify?: boolean | undefined;
  creds?: string | undefined;
  authfile?: string | undefined;
  certDir?: string | undefined;
  registryToken?: string | undefined;
}

/** An image opened for signing/verification: its repository view, top manifest and docker identity. */
export interface ImageHandle {
  label: string;
  repo: ArtifactRepo;
  top: ManifestBytes;
  /** The image's docker reference (docker://), undefined for layouts. */
  intended: ImageReference | undefined;
  commit(): Promise<void>;
  close(): Promise<void>;
}

function splitTransport(spec: string): { transport: string; rest: string } {
  const i = spec.indexOf(':');
  if (i < 0) throw new UsageError(`invalid image name ${JSON.stringify(spec)}: expected TRANSPORT:NAME (docker://host/repo:tag or oci:DIR[:TAG])`);
  return { transport: spec.slice(0, i), rest: spec.slice(i + 1) };
}

async function openLayoutImage(rest: string): Promise<ImageHandle> {
  // oci:DIR[:TAG], oci:DIR:sha256:HEX, and oci:DIR@sha256:HEX
  const at = /^(.*)@(sha256:[0-9a-f]{64})$/.exec(rest);
  const i = rest.indexOf(':');
  const path = at ? at[1]! : i < 0 ? rest : rest.slice(0, i);
  const ref = at ? at[2]! : i < 0 ? '' : rest.slice(i + 1);
  if (!path) throw new UsageError(`oci:${rest}: no directory`);
  const layout = await OciLayout.open(path);
  let desc: Descriptor;
  if (ref) desc = await layout.resolve(ref);
  else {
    // no tag: the layout's one image, not counting signatures (.sig tags), fallback indexes and referrers
    const index = await layout.readIndex();
    const images = index.manifests.filter((m) => {
      const name = m.annotations?.['org.opencontainers.image.ref.name'];
      return !(name && isAttachmentTag(name)) && !m.artifactType;
    });
    if (images.length !== 1) desc = await layout.resolve(undefined);
    else desc = images[0]!;
  }
  const bytes = await layout.readBytes(desc.digest);
  const top: ManifestBytes = { bytes, digest: desc.digest, mediaType: desc.mediaType };
  const repo = layoutRepo(layout, `oci:${path}`);
  return { label: `oci:${rest}`, repo, top, intended: undefined, commit: async () => {}, close: async () => {} };
}

interface TransportTable {
  parseImageName(s: string): Promise<ImageName>;
  openSource(n: ImageName, o?: OpenOptions): Promise<ImageSource>;
  openDestination(n: ImageName, o?: OpenOptions): Promise<ImageDestination>;
}

async function openDockerImage(rest: string, o: RegistryOpts, write: boolean): Promise<ImageHandle> {
  // the engine's transport table (loaded lazily: the registry client is only needed for docker://)
  const t: TransportTable = await import('../copy/transports/index.js');
  const name = await t.parseImageName(`docker:${rest}`);
  const opts: OpenOptions = { signal: rootController.signal };
  if (o.tlsVerify !== undefined) opts.tlsVerify = o.tlsVerify;
  if (o.creds) opts.creds = o.creds;
  if (o.registryToken) opts.registryToken = o.registryToken;
  if (o.authfile) opts.authfile = o.authfile;
  if (o.certDir) opts.certDir = o.certDir;
  const src = await t.openSource(name, opts);
  let dst: ImageDestination | undefined;
  try {
    if (write) dst = await t.openDestination(name, opts);
    const top = await src.manifest(undefined, { signal: rootController.signal });
    let intended: ImageReference | undefined;
    if (name.dockerReference) {
      const r = normalizedNamed(name.dockerReference);
      intended = !r.tag && !r.digest ? { ...r, tag: 'latest' } : r;
    }
    return {
      label: String(name),
      repo: transportRepo(src, dst),
      top,
      intended,
      commit: async () => {
        await dst?.commit({ signal: rootController.signal });
      },
      close: async () => {
        await dst?.close();
        await src.close();
        const { closeRegistryClients } = await import('../copy/registry/client.js');
        await closeRegistryClients();
      },
    };
  } catch (e) {
    await dst?.close().catch(() => {});
    await src.close().catch(() => {});
    throw e;
  }
}

/** Open `docker://…` or `oci:DIR[:TAG]` for the signing commands. */
export async function openImage(spec: string, o: RegistryOpts, write: boolean): Promise<ImageHandle> {
  const { transport, rest } = splitTransport(spec);
  if (transport === 'oci') return openLayoutImage(rest);
  if (transport === 'docker') return openDockerImage(rest, o, write);
  throw new UsageError(`${spec}: signatures and referrers need a registry (docker://) or an OCI layout (oci:), not ${transport}:`);
}

function parseAnnotations(list: string[] | undefined, what = '--annotation'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of list ?? []) {
    const i = a.indexOf('=');
    if (i <= 0) throw new UsageError(`${what} ${JSON.stringify(a)}: expected KEY=VALUE`);
    out[a.slice(0, i)] = a.slice(i + 1);
  }
  return out;
}

/** The docker-reference to sign: --identity, else the image's reference (repo:tag or repo@digest as named). */
function signIdentity(h: ImageHandle, identity: string | undefined): string {
  if (identity) {
    try {
      const r = normalizedNamed(identity);
      return `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
    } catch (e) {
      throw new UsageError(`--identity ${JSON.stringify(identity)}: ${(e as Error).message}`);
    }
  }
  const r = h.intended;
  if (!r) throw new UsageError(`${h.label} has no registry identity: give the reference to sign for with --identity host/repo[:tag]`);
  return `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : r.digest ? `@${r.digest}` : ''}`;
}

export async function loadSigningKey(keyPath: string, passwordFile: string | undefined) {
  let pem: string;
  try {
    pem = await readFile(keyPath, 'utf8');
  } catch (e) {
    throw new UsageError(`reading --key ${keyPath}: ${(e as Error).message}`);
  }
  const password = isEncryptedKey(pem) || /BEGIN ENCRYPTED PRIVATE KEY/.test(pem) ? await getPassword({ passwordFile }) : undefined;
  return loadPrivateKey(pem, password, `private key ${keyPath}`);
}

export interface SignCmdOpts extends RegistryOpts {
  key: string;
  passwordFile?: string | undefined;
  referrer?: boolean | undefined;
  /** --no-tag-storage: only the referrer. */
  tagStorage?: boolean | undefined;
  annotation?: string[] | undefined;
  identity?: string | undefined;
  quiet?: boolean | undefined;
  /** Sign every instance of a list too. */
  recursive?: boolean | undefined;
}

export async function signCmd(image: string, o: SignCmdOpts): Promise<void> {
  const key = await loadSigningKey(o.key, o.passwordFile);
  const optional = parseAnnotations(o.annotation, '-a/--annotation');
  const h = await openImage(image, o, true);
  try {
    const io = { signal: rootController.signal };
    const identity = signIdentity(h, o.identity);
    // the image, and with --recursive every instance of a list (cosign sign --recursive)
    const targets: { digest: Digest; mediaType: string; size: number }[] = [{ digest: h.top.digest, mediaType: h.top.mediaType, size: h.top.bytes.length }];
    if (o.recursive && isIndexType(h.top.mediaType)) {
      const doc = JSON.parse(h.top.bytes.toString('utf8')) as { manifests?: Descriptor[] };
      for (const c of doc.manifests ?? []) targets.push({ digest: c.digest, mediaType: c.mediaType, size: c.size });
    }
    const lines: string[] = [];
    for (const tg of targets) {
      const res = await signImage(
        h.repo,
        {
          key,
          manifestDigest: tg.digest,
          manifestMediaType: tg.mediaType,
          manifestSize: tg.size,
          dockerReference: identity,
          optional: Object.keys(optional).length ? optional : undefined,
          sigTag: o.tagStorage !== false,
          referrer: !!o.referrer,
        },
        io,
      );
      lines.push(`Signed ${tg === targets[0] ? h.label : `instance`} (${tg.digest}) for ${identity}`);
      if (o.tagStorage !== false) lines.push(res.alreadyPresent ? `  signature already in ${signatureTag(tg.digest)}` : `  stored in tag ${signatureTag(tg.digest)} (${res.sigManifest})`);
      if (res.referrer) lines.push(`  stored as referrer ${res.referrer}`);
    }
    await h.commit();
    if (!o.quiet) process.stderr.write(lines.join('\n') + '\n');
  } finally {
    await h.close();
  }
}

export interface VerifyCmdOpts extends RegistryOpts {
  key: string[];
  /** Expected signed identity instead of the image's own reference (a mirror: the original repository). */
  identity?: string | undefined;
  format?: string | undefined;
}

export function formatReport(r: VerifyReport): string {
  const lines: string[] = [];
  lines.push(`Verification of ${r.image} (${r.manifestDigest}):`);
  if (!r.signatures.length) lines.push('  no signatures found (looked in the .sig tag and the referrers)');
  for (const s of r.signatures) {
    if (s.ok) lines.push(`  OK    ${s.candidate.where}: signed by key ${s.keyIndex! + 1}, identity ${s.payload!.dockerReference}`);
    else lines.push(`  FAIL  ${s.candidate.where}: ${s.reason}`);
  }
  for (const p of r.problems) lines.push(`  WARN  ${p}`);
  if (!r.identityChecked) lines.push('  NOTE  signed identities not checked: the image has no registry reference (use --identity REF)');
  const good = r.signatures.filter((s) => s.ok).length;
  lines.push(r.ok ? `Verified: ${good} of ${r.signatures.length} signature(s) valid.` : `FAILED: no valid signature (${r.signatures.length} found).`);
  return lines.join('\n') + '\n';
}

/** Returns the exit code (0 verified, 1 not). */
export async function verifyCmd(image: string, o: VerifyCmdOpts): Promise<number> {
  if (o.format && o.format !== 'json' && o.format !== 'text') throw new UsageError(`--format ${o.format}: expected json or text`);
  const keys = await Promise.all(
    o.key.map(async (k) => {
      let pem: string;
      try {
        pem = await readFile(k, 'utf8');
      } catch (e) {
        throw new UsageError(`reading --key ${k}: ${(e as Error).message}`);
      }
      return loadPublicKey(pem, `public key ${k}`);
    }),
  );
  const h = await openImage(image, o, false);
  try {
    let intended = h.intended;
    if (o.identity) {
      try {
        intended = normalizedNamed(o.identity);
      } catch (e) {
        throw new UsageError(`--identity ${JSON.stringify(o.identity)}: ${(e as Error).message}`);
      }
    }
    const r = await verifyImage(h.repo, { keys, manifestDigest: h.top.digest, intended, image: h.label }, { signal: rootController.signal });
    if (o.format === 'json') {
      const doc = {
        image: r.image,
        manifestDigest: r.manifestDigest,
        verified: r.ok,
        identityChecked: r.identityChecked,
        signatures: r.signatures.map((s) => ({
          where: s.candidate.where,
          valid: s.ok,
          ...(s.ok ? { key: o.key[s.keyIndex!] } : { reason: s.reason }),
          ...(s.payload ? { dockerReference: s.payload.dockerReference, dockerManifestDigest: s.payload.digest, optional: s.payload.optional } : {}),
          payloadDigest: digestOf(s.candidate.payload),
        })),
        problems: r.problems,
      };
      process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
    } else {
      process.stdout.write(formatReport(r));
    }
    return r.ok ? 0 : 1;
  } finally {
    await h.close();
  }
}

export interface AttachCmdOpts extends RegistryOpts {
  artifactType: string;
  annotation?: string[] | undefined;
  mediaType?: string | undefined;
  quiet?: boolean | undefined;
}

export async function attachCmd(file: string, image: string, o: AttachCmdOpts): Promise<void> {
  const annotations = parseAnnotations(o.annotation);
  let st;
  try {
    st = await stat(file);
  } catch (e) {
    throw new UsageError(`${file}: ${(e as Error).message}`);
  }
  if (!st.isFile()) throw new UsageError(`${file}: not a regular file`);
  // hash the file while streaming it once (no whole-file buffer)
  const { Hasher } = await import('../oci/index.js');
  const hasher = new Hasher('sha256');
  for await (const c of createReadStream(file)) hasher.update(c as Buffer);
  const digest = hasher.digest() as Digest;
  const h = await openImage(image, o, true);
  try {
    const subject: Descriptor = { mediaType: h.top.mediaType, digest: h.top.digest, size: h.top.bytes.length };
    const r = await attachArtifact(
      h.repo,
      { path: file, size: st.size, digest, open: () => createReadStream(file) },
      { artifactType: o.artifactType, fileMediaType: o.mediaType, title: basename(file), annotations, subject },
      { signal: rootController.signal },
    );
    await h.commit();
    process.stdout.write(`${r.manifest.digest}\n`);
    if (!o.quiet) process.stderr.write(`Attached ${file} to ${h.label} (${h.top.digest}) as ${o.artifactType}${r.stored === 'fallback' ? ' (referrers tag fallback)' : ''}\n`);
  } finally {
    await h.close();
  }
}

export interface ReferrersCmdOpts extends RegistryOpts {
  artifactType?: string | undefined;
  format?: string | undefined;
}

export async function referrersCmd(image: string, o: ReferrersCmdOpts): Promise<void> {
  if (o.format && o.format !== 'json' && o.format !== 'text') throw new UsageError(`--format ${o.format}: expected json or text`);
  const h = await openImage(image, o, false);
  try {
    const refs = await listReferrers(h.repo, h.top.digest, { signal: rootController.signal, artifactType: o.artifactType });
    if (o.format === 'json') {
      // the referrers API's response shape (an image index)
      process.stdout.write(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: refs }, null, 2) + '\n');
      return;
    }
    if (!refs.length) {
      process.stderr.write(`no referrers of ${h.label} (${h.top.digest})\n`);
      return;
    }
    const rows = refs.map((r) => [r.digest, r.artifactType ?? '-', String(r.size)]);
    const w0 = Math.max(6, ...rows.map((r) => r[0]!.length));
    const w1 = Math.max(13, ...rows.map((r) => r[1]!.length));
    const out = [`${'DIGEST'.padEnd(w0)}  ${'ARTIFACT TYPE'.padEnd(w1)}  SIZE`, ...rows.map((r) => `${r[0]!.padEnd(w0)}  ${r[1]!.padEnd(w1)}  ${r[2]}`)];
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    await h.close();
  }
}


/** The copy/sync flags that belong to signing and policy (skopeo's names). */
export interface CopySigningFlags {
  /** --policy FILE */
  policy?: string | undefined;
  /** --insecure-policy */
  insecurePolicy?: boolean | undefined;
  /** --sign-by-key KEY (also skopeo's --sign-by-sigstore-private-key) */
  signByKey?: string | undefined;
  /** --sign-passphrase-file FILE */
  signPassphraseFile?: string | undefined;
  /** --sign-by FINGERPRINT (GPG simple signing) */
  signBy?: string | undefined;
  /** --sign-identity REF */
  signIdentity?: string | undefined;
  /** --remove-signatures */
  removeSignatures?: boolean | undefined;
}

/**
 * Everything copy/sync need for policy, carrying and signing, from their flags: the policy is read
 * (and the key decrypted) before any image is touched, so a bad policy file or key fails at once.
 */
export async function copySigningHooks(
  flags: CopySigningFlags,
  o: {
    openDestinationReader?: ((d: import('../copy/types.js').ImageDestination) => Promise<import('../copy/types.js').ImageSource | undefined>) | undefined;
    log?: ((msg: string) => void) | undefined;
  } = {},
): Promise<ReturnType<typeof import('../copy/sign/hooks.js').signingHooks>> {
  const { loadPolicy, insecurePolicy } = await import('../copy/policy.js');
  const { signingHooks } = await import('../copy/sign/hooks.js');
  const policy = flags.insecurePolicy ? insecurePolicy() : await loadPolicy(flags.policy);
  const signBy = flags.signByKey ? await loadSigningKey(flags.signByKey, flags.signPassphraseFile) : undefined;
  if (flags.signBy !== undefined && flags.signBy.trim() === '') throw new UsageError('--sign-by: empty key identity');
  if (flags.signIdentity) {
    try {
      normalizedNamed(flags.signIdentity);
    } catch (e) {
      throw new UsageError(`--sign-identity ${JSON.stringify(flags.signIdentity)}: ${(e as Error).message}`);
    }
  }
  return signingHooks({
    policy,
    removeSignatures: flags.removeSignatures,
    signBy,
    signIdentity: flags.signIdentity,
    signByGpg: flags.signBy,
    gpgPassphraseFile: flags.signBy ? flags.signPassphraseFile : undefined,
    creator: `tscopy ${VERSION}`,
    openDestinationReader: o.openDestinationReader,
    log: o.log,
  });
}
