/** Implementations of tscopy copy and inspect (loaded lazily by tscopy-copy.ts). */
import { setMaxListeners } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { hostPlatform, normalizePlatform, parsePlatform } from '../oci/platform.js';
import { isIndexType } from '../oci/mediatypes.js';
import { MAX_MANIFEST_SIZE, readAll } from '../oci/io.js';
import { OciError, UsageError } from '../oci/errors.js';
import { parseConfig, parseManifest, type Platform } from '../oci/manifest.js';
import { parseReference } from '../oci/reference.js';
import { verifying } from '../oci/digest.js';
import { copyImage, type CopyOptions, type CopyResult } from '../copy/engine.js';
import { chooseInstance } from '../copy/instances.js';
import { blobInfoCache } from '../copy/blobinfo.js';
import { cliReporter, humanBytes } from '../copy/progress.js';
import { goJson, dockerConfigToOci } from '../copy/convert.js';
import { closeTransports, openDestination, openSource, parseImageName } from '../copy/transports/index.js';
import type { ImageName, OpenOptions } from '../copy/types.js';
import { rootController } from './common.js';
import { goTemplate } from './gotemplate.js';

type Opts = Record<string, unknown>;
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** --platform and skopeo's --override-os/--override-arch/--override-variant -> the platform to pick, if any. */
export function platformFrom(opts: Opts): Platform | undefined {
  const p = str(opts.platform) ? parsePlatform(str(opts.platform)!) : undefined;
  const os = str(opts.overrideOs);
  const arch = str(opts.overrideArch);
  const variant = str(opts.overrideVariant);
  if (!p && !os && !arch && !variant) return undefined;
  const host = hostPlatform();
  const out: Platform = { os: os ?? p?.os ?? host.os, architecture: arch ?? p?.architecture ?? host.architecture };
  const v = variant ?? (arch ? undefined : p?.variant);
  if (v) out.variant = v;
  return normalizePlatform(out);
}

/** skopeo's credential flags: --creds, or --username/--password, or --no-creds (one of them). */
function credsFrom(opts: Opts, k: (name: string) => string, flag: (name: string) => string): { creds?: string | undefined; noCreds?: boolean } {
  const creds = str(opts[k('creds')]);
  const user = str(opts[k('username')]);
  const password = str(opts[k('password')]);
  // commander's --no-creds sets creds=false (inspect); --src-no-creds sets srcNoCreds=true
  const noCreds = opts[k('noCreds')] === true || opts[k('creds')] === false;
  if ((user !== undefined) !== (password !== undefined)) throw new UsageError(`${flag('username')} and ${flag('password')} go together`);
  if ([creds !== undefined, user !== undefined, noCreds].filter(Boolean).length > 1)
    throw new UsageError(`${flag('creds')}, ${flag('username')}/${flag('password')} and ${flag('no-creds')} are mutually exclusive`);
  if (noCreds) return { noCreds: true };
  return { creds: creds ?? (user !== undefined ? `${user}:${password}` : undefined) };
}

export function openOptions(opts: Opts, side: 'src' | 'dest' | ''): OpenOptions {
  const k = (name: string) => (side ? `${side}${name[0]!.toUpperCase()}${name.slice(1)}` : name);
  return {
    signal: rootController.signal,
    ...credsFrom(opts, k, (name) => `--${side ? `${side}-` : ''}${name}`),
    registryToken: str(opts[k('registryToken')]),
    tlsVerify: typeof opts[k('tlsVerify')] === 'boolean' ? (opts[k('tlsVerify')] as boolean) : undefined,
    authfile: str(opts[k('authfile')]) ?? str(opts.authfile),
    certDir: str(opts[k('certDir')]),
    retryTimes: typeof opts.retryTimes === 'number' ? opts.retryTimes : undefined,
    userAgent: 'tscopy/0.1.0',
    // skopeo's global --registries.d (the lookaside of simple signatures)
    registriesDir: str(opts.registriesD),
    // oci: blobs in a directory shared by several layouts (--src-/--dest-shared-blob-dir, inspect's --shared-blob-dir)
    sharedBlobDir: str(opts[k('sharedBlobDir')]),
    // docker-daemon: the daemon's address (--src-/--dest-daemon-host, inspect's --daemon-host)
    daemonHost: str(opts[k('daemonHost')]),
  };
}

/** Temporary failures worth another attempt (--retry-times): 5xx/429 and connection errors. */
export function isTemporary(e: unknown): boolean {
  if (e instanceof OciError) return e.temporary;
  const code = (e as { code?: unknown })?.code;
  return typeof code === 'string' && /^(ECONNRESET|ECONNREFUSED|ETIMEDOUT|EPIPE|EAI_AGAIN|UND_ERR_SOCKET|UND_ERR_CONNECT_TIMEOUT|UND_ERR_HEADERS_TIMEOUT|UND_ERR_BODY_TIMEOUT|UND_ERR_CLOSED)$/.test(code);
}

export async function withRetries<T>(times: number, what: string, fn: () => Promise<T>, log: (s: string) => void): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (attempt >= times || !isTemporary(e) || rootController.signal.aborted) throw e;
      const delay = Math.min(30_000, 1000 * 2 ** attempt) * (0.5 + Math.random() / 2);
      log(`${what} failed (attempt ${attempt + 1} of ${times + 1}): ${(e as Error).message}; retrying in ${(delay / 1000).toFixed(1)} s`);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/**
 * Policy and signatures (the signing engineer's hooks, src/cli/sign-impl.ts): policy.json checked before anything
 * is written (skopeo's default /etc/containers/policy.json unless --policy/--insecure-policy), signatures and
 * referrers carried after the manifest (unless --remove-signatures), --sign-by-key.
 */
export async function signingHooks(
  opts: Opts,
  destOpen: OpenOptions,
  log: (s: string) => void,
): Promise<Pick<CopyOptions, 'beforeWrite' | 'afterManifest' | 'cannotModify'> & { carryOnly: Awaited<ReturnType<typeof import('./sign-impl.js').copySigningHooks>>['carryOnly'] }> {
  const { copySigningHooks } = await import('./sign-impl.js');
  const h = await copySigningHooks(
    {
      policy: str(opts.policy),
      insecurePolicy: opts.insecurePolicy === true,
      signByKey: str(opts.signByKey) ?? str(opts.signBySigstorePrivateKey),
      signBy: str(opts.signBy),
      signPassphraseFile: str(opts.signPassphraseFile),
      signIdentity: str(opts.signIdentity),
      removeSignatures: opts.removeSignatures === true,
    },
    { openDestinationReader: (d) => openSource(d.name, destOpen), log },
  );
  return {
    beforeWrite: (ctx) => h.beforeWrite(ctx),
    afterManifest: (ctx) => h.afterManifest(ctx),
    cannotModify: (ctx, digest) => h.cannotModify(ctx, digest),
    carryOnly: (ctx) => h.carryOnly(ctx),
  };
}

/**
 * Start a docker:// registry's ping (scheme choice, auth challenge; the first request loads the HTTP stack)
 * while the rest of the command starts up. Errors are ignored here: the real first request pings again.
 */
export function warmUp(name: ImageName, open: OpenOptions, push: boolean): void {
  if (name.transport !== 'docker') return;
  import('../copy/transports/docker.js')
    .then(async (m) => (await m.firstClient(name, open, push)).ping(open.signal))
    .catch(() => undefined);
}

export interface CliCopy {
  src: ImageName;
  dest: ImageName;
  options: CopyOptions;
  srcOpen: OpenOptions;
  destOpen: OpenOptions;
  retryTimes: number;
}

/** One copy with opening (destination first, as containers/image), retries and closing. */
export async function runCopy(c: CliCopy, log: (s: string) => void): Promise<CopyResult> {
  return withRetries(c.retryTimes, `copy ${c.src} -> ${c.dest}`, async () => {
    const dest = await openDestination(c.dest, c.destOpen);
    try {
      const src = await openSource(c.src, c.srcOpen);
      try {
        return await copyImage(src, dest, c.options);
      } finally {
        await src.close();
      }
    } finally {
      await dest.close();
    }
  }, log);
}

/** The engine options copy and sync read the same way from their flags (each adds its own). */
export function commonCopyOptions(opts: Opts): CopyOptions {
  return {
    signal: rootController.signal,
    platform: platformFrom(opts),
    format: str(opts.format) as CopyOptions['format'],
    jobs: typeof opts.jobs === 'number' ? opts.jobs : undefined,
    preserveDigests: opts.preserveDigests === true,
    removeSignatures: opts.removeSignatures === true,
    blobInfoCache: blobInfoCache(),
  };
}

export function summaryLine(r: CopyResult): string {
  const s = r.stats;
  const total = s.copied + s.skipped + s.mounted;
  if (r.upToDate) return `Image already at the destination: manifest ${r.manifest.digest} (nothing copied, ${s.seconds.toFixed(2)} s)`;
  let line = `Copied ${humanBytes(s.bytes)} in ${s.seconds.toFixed(2)} s: ${total} blob${total === 1 ? '' : 's'} (${s.copied} copied, ${s.skipped} skipped, ${s.mounted} mounted); manifest ${r.manifest.digest}`;
  if (r.converted) line += ` (changed from ${r.sourceDigest}: ${r.conversions.join('; ')})`;
  return line;
}

/** skopeo's --encryption-key/--encrypt-layer/--decryption-key (crypt.ts and jose loaded only when given). */
async function cryptOptions(opts: Opts): Promise<Pick<CopyOptions, 'encrypt' | 'decrypt'>> {
  const list = (v: unknown): string[] => (Array.isArray(v) ? (v as string[]) : []);
  const encKeys = list(opts.encryptionKey);
  const decKeys = list(opts.decryptionKey);
  const layers = Array.isArray(opts.encryptLayer) ? (opts.encryptLayer as number[]) : [];
  if (encKeys.length && decKeys.length) throw new UsageError('--encryption-key and --decryption-key cannot be specified together');
  if (layers.length && !encKeys.length) throw new UsageError('--encrypt-layer can only be used with --encryption-key');
  if (!encKeys.length && !decKeys.length) return {};
  const c = await import('../copy/crypt.js');
  if (encKeys.length) return { encrypt: new c.JweEncrypter(c.loadEncryptionKeys(encKeys), layers) };
  return { decrypt: new c.JweDecrypter(await c.loadDecryptionKeys(decKeys)) };
}

export async function copyCmd(srcArg: string, destArg: string, opts: Opts): Promise<number> {
  try {
    return await copyCmdInner(srcArg, destArg, opts);
  } finally {
    await closeTransports();
  }
}

async function copyCmdInner(srcArg: string, destArg: string, opts: Opts): Promise<number> {
  const src = await parseImageName(srcArg);
  const dest = await parseImageName(destArg);
  const multiArch = str(opts.multiArch);
  if (multiArch === 'system' && opts.all === true) throw new UsageError('--all and --multi-arch system contradict each other');
  if (opts.destDecompress === true && (opts.destCompressFormat !== undefined || opts.destCompressLevel !== undefined))
    throw new UsageError('--dest-decompress and --dest-compress-format/--dest-compress-level contradict each other');
  const crypt = await cryptOptions(opts);
  const reporter = cliReporter({ quiet: opts.quiet === true });
  const log = (s: string) => (opts.quiet ? process.stderr.write(`${s}\n`) : reporter.message(s));
  const destOpen: OpenOptions = { ...openOptions(opts, 'dest'), additionalTags: Array.isArray(opts.additionalTag) ? (opts.additionalTag as string[]) : undefined };
  setMaxListeners(0, rootController.signal);
  warmUp(src, openOptions(opts, 'src'), false);
  warmUp(dest, destOpen, true);
  const hooks = await signingHooks(opts, destOpen, log);
  const options: CopyOptions = {
    ...commonCopyOptions(opts),
    all: opts.all === true || multiArch === 'all',
    indexOnly: multiArch === 'index-only',
    // skopeo's --dest-decompress is for dir: destinations (DirForceDecompress); elsewhere it changes nothing
    destCompress:
      opts.destDecompress === true && dest.transport === 'dir' ? 'none' : (str(opts.destCompressFormat) as CopyOptions['destCompress']) ?? (opts.destCompressLevel !== undefined ? 'gzip' : undefined),
    destCompressLevel: typeof opts.destCompressLevel === 'number' ? opts.destCompressLevel : undefined,
    reporter,
    ...hooks,
    ...crypt,
  };
  if (options.destCompressLevel !== undefined && Number.isNaN(options.destCompressLevel)) throw new UsageError('--dest-compress-level: want a number');
  if (!opts.quiet) reporter.message('Getting image source signatures');
  let r: CopyResult;
  try {
    r = await runCopy(
      { src, dest, options, srcOpen: openOptions(opts, 'src'), destOpen, retryTimes: (opts.retryTimes as number) ?? 0 },
      log,
    );
  } finally {
    reporter.stop();
  }
  if (typeof opts.digestfile === 'string') await writeFile(opts.digestfile, r.manifest.digest);
  if (!opts.quiet) process.stdout.write(`${summaryLine(r)}\n`);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// inspect

interface InspectOutput {
  Name?: string;
  Digest: string;
  RepoTags: string[];
  Created?: string;
  DockerVersion: string;
  Labels: Record<string, string> | null;
  Architecture: string;
  Variant?: string;
  Os: string;
  Layers: string[];
  LayersData: { MIMEType: string; Digest: string; Size: number; Annotations: Record<string, string> | null }[];
  Env: string[] | null;
}

export async function inspectCmd(imageArg: string, opts: Opts): Promise<number> {
  try {
    return await inspectCmdInner(imageArg, opts);
  } finally {
    await closeTransports();
  }
}

async function inspectCmdInner(imageArg: string, opts: Opts): Promise<number> {
  const name = await parseImageName(imageArg);
  const retryTimes = (opts.retryTimes as number) ?? 0;
  const out = await withRetries(retryTimes, `inspect ${name}`, async () => {
    const src = await openSource(name, openOptions(opts, ''));
    try {
      const io = { signal: rootController.signal };
      const top = await src.manifest(undefined, io);
      if (opts.raw && !opts.config) return top.bytes;
      let m = top;
      if (isIndexType(top.mediaType)) {
        // the platform's image, in nested indexes too (as skopeo inspect)
        m = await chooseInstance(src, top, platformFrom(opts) ?? hostPlatform(), io, '');
      }
      const p = parseManifest(m.bytes, m.mediaType);
      if (p.kind !== 'manifest') throw new OciError('MANIFEST_INVALID', `${name}: not an image manifest`);
      const cs = await src.blob(p.doc.config, io);
      const configBytes = await readAll(cs.pipe(verifying({ digest: p.doc.config.digest, size: p.doc.config.size, limit: MAX_MANIFEST_SIZE, what: `config ${p.doc.config.digest}` })).on('error', () => {}), MAX_MANIFEST_SIZE).finally(() => cs.destroy());
      if (opts.config) {
        if (opts.raw) return configBytes;
        return Buffer.from(`${goJson(JSON.parse(dockerConfigToOci(configBytes).toString('utf8')), 4)}\n`);
      }
      const config = parseConfig(configBytes);
      let repoTags: string[] = [];
      if (name.transport === 'docker' && opts.tags !== false && src.tags) repoTags = await src.tags(io);
      let nameOut: string | undefined;
      if (name.dockerReference) {
        try {
          const r = parseReference(name.dockerReference);
          nameOut = `${r.registry}/${r.repository}`;
        } catch {}
      }
      const o: InspectOutput = {
        ...(nameOut ? { Name: nameOut } : {}),
        Digest: top.digest,
        RepoTags: repoTags,
        ...(config.created ? { Created: config.created } : {}),
        DockerVersion: typeof config.docker_version === 'string' ? config.docker_version : '',
        Labels: config.config?.Labels && Object.keys(config.config.Labels).length ? config.config.Labels : null,
        Architecture: config.architecture,
        ...(config.variant ? { Variant: config.variant } : {}),
        Os: config.os,
        Layers: p.doc.layers.map((l) => l.digest),
        LayersData: p.doc.layers.map((l) => ({ MIMEType: l.mediaType, Digest: l.digest, Size: l.size, Annotations: l.annotations ?? null })),
        Env: config.config?.Env ?? null,
      };
      const fmt = str(opts.format);
      if (fmt && fmt !== 'json') return Buffer.from(`${goTemplate(fmt, o)}\n`);
      return Buffer.from(`${goJson(o, 4)}\n`);
    } finally {
      await src.close();
    }
  }, (s) => process.stderr.write(`${s}\n`));
  process.stdout.write(out);
  return 0;
}

