/**
 * skopeo sync: mirror repositories (docker -> docker|dir, dir -> docker, a YAML list of registries -> docker|dir).
 *
 * - Sources: `--src docker` a repository (every tag) or repo:tag; `--src dir` a directory tree of dir: images
 *   (`<path>/<name>:<tag>/manifest.json`, what `sync --dest dir` writes); `--src yaml` skopeo's YAML file
 *   (registry -> images (repo -> [] all tags | [tags or digests]) / images-by-tag-regex / tls-verify /
 *   credentials / cert-dir).
 * - Destination names as skopeo: `DEST/<repo basename>:<tag>`, or with --scoped `DEST/<registry>/<repo>:<tag>`.
 * - Incremental: a tag whose manifest digest is already at the destination costs one HEAD there (checks run in
 *   parallel); only the others are copied (one at a time, each copy's blobs in parallel).
 * - --prune: destination tags of the mirrored repositories that the source no longer has are deleted (a digest
 *   still used by a kept tag is never deleted: registries delete manifests by digest).
 * - --dry-run: the same checks, nothing written; --keep-going: failures are reported and the rest goes on.
 */
import * as fsp from 'node:fs/promises';
import { basename, join, posix, relative } from 'node:path';
import fastq from 'fastq';
import { digestOf, isDigest, type Digest } from '../oci/digest.js';
import { hostPlatform } from '../oci/platform.js';
import { findInstance } from './instances.js';
import { isIndexType } from '../oci/mediatypes.js';
import { type Platform } from '../oci/manifest.js';
import { parseReference } from '../oci/reference.js';
import { TsimageError, UsageError } from '../oci/errors.js';
import { type Io } from '../oci/io.js';
import type { ImageName, ManifestBytes, OpenOptions } from './types.js';
import { openDestination, openSource, parseImageName } from './transports/index.js';
import type { CopyOptions, CopyResult } from './engine.js';
import { isAttachmentTag } from './sign/attachments.js';

export interface SyncImage {
  /** `docker://host/repo:tag` or `dir:/path/name:tag`. */
  src: string;
  dest: string;
  /** Tag at the destination (docker) for incremental checks and prune bookkeeping. */
  destTag: string;
  /** Destination repository key (`docker://host/repo` or `dir:/base/name`) for prune. */
  destRepo: string;
  srcOpen: OpenOptions;
}

export interface SyncPlanRepo {
  /** Where the tags of this repository land. */
  destRepo: string;
  /** Source tags of the repository (for prune); undefined when the source named single tags only. */
  allTags: boolean;
}

export interface SyncOptions extends Io {
  srcTransport: 'docker' | 'dir' | 'yaml';
  destTransport: 'docker' | 'dir';
  scoped?: boolean | undefined;
  all?: boolean | undefined;
  dryRun?: boolean | undefined;
  prune?: boolean | undefined;
  keepGoing?: boolean | undefined;
  /** A conversion was asked for (--format / --dest-compress-format): digests change, no digest-based skip. */
  converting?: boolean | undefined;
  platform?: Platform | undefined;
  srcOpen: OpenOptions;
  destOpen: OpenOptions;
  /** Parallel up-to-date checks (default 8). */
  checkJobs?: number | undefined;
  /** Images copied at the same time (default 3; their shared blobs are sent once). */
  imageJobs?: number | undefined;
  log: (line: string) => void;
  /** Copies one image (the CLI's runCopy with retries, hooks and progress). */
  /** known: what the up-to-date check read (the source manifest, the destination tag's digest), for the copy to reuse. */
  copy: (src: ImageName, dest: ImageName, srcOpen: OpenOptions, known?: CopyOptions['known']) => Promise<CopyResult>;
  /** For an image found up to date (not with --dry-run): carry signatures/referrers added at the source since. */
  upToDate?: ((src: ImageName, dest: ImageName, srcOpen: OpenOptions, sourceManifest?: ManifestBytes) => Promise<void>) | undefined;
}

export interface SyncSummary {
  copied: number;
  skipped: number;
  failed: number;
  pruned: number;
  failures: { image: string; error: string }[];
}

// ---------------------------------------------------------------------------------------------
// Source enumeration

interface YamlRegistry {
  images?: Record<string, string[] | null> | null;
  'images-by-tag-regex'?: Record<string, string> | null;
  'tls-verify'?: boolean;
  'cert-dir'?: string;
  credentials?: { username?: string; password?: string };
}

/** Source images: one entry per tag (or digest), with the source's repository for naming. */
interface SrcImage {
  /** `docker://host/repo:tag` / `docker://host/repo@digest` / `dir:path`. */
  ref: string;
  /** For naming: `host/repo:tag` (docker) or the path relative to the dir base. */
  suffix: string;
  tag: string;
  srcOpen: OpenOptions;
  /** Source repository key for prune (`host/repo`) and whether every tag of it is listed. */
  repo: string;
  wholeRepo: boolean;
}

/**
 * The tags of a source repository as skopeo sync lists them (containers/image GetRepositoryTags, like list-tags): from
 * the registry the name says, with the `insecure`/`blocked` of the registries.conf entry matching the name; a
 * prefix -> location rewrite and mirrors apply to the copies of those tags, not to the listing.
 */
async function repoTags(repoRef: string, open: OpenOptions, io: Io): Promise<string[]> {
  const name = await parseImageName(`docker://${repoRef}`);
  const { dockerClient } = await import('./transports/docker.js');
  const { refuseBlockedRegistry } = await import('./registry/registries.js');
  const entry = await refuseBlockedRegistry(repoRef, `docker://${repoRef}`, (open as { env?: NodeJS.ProcessEnv }).env);
  const client = dockerClient(name, { ...open, tlsVerify: open.tlsVerify ?? (entry ? !entry.insecure : undefined) });
  const repository = parseReference(repoRef, { defaultTag: false }).repository;
  // attachment tags (cosign .sig/.att/.sbom, referrers fallback) travel with their image, not as images
  return (await client.listTags(repository, { signal: io.signal })).filter((t) => !isAttachmentTag(t));
}

async function dockerSource(arg: string, open: OpenOptions, io: Io): Promise<SrcImage[]> {
  const r = parseReference(arg.replace(/^docker:\/\//, ''), { normalize: true, defaultTag: false });
  const repo = `${r.registry}/${r.repository}`;
  if (r.digest) return [{ ref: `docker://${repo}@${r.digest}`, suffix: `${repo}@${r.digest}`, tag: r.digest, srcOpen: open, repo, wholeRepo: false }];
  if (r.tag) return [{ ref: `docker://${repo}:${r.tag}`, suffix: `${repo}:${r.tag}`, tag: r.tag, srcOpen: open, repo, wholeRepo: false }];
  const tags = await repoTags(repo, open, io);
  return tags.map((t) => ({ ref: `docker://${repo}:${t}`, suffix: `${repo}:${t}`, tag: t, srcOpen: open, repo, wholeRepo: true }));
}

async function dirSource(base: string): Promise<SrcImage[]> {
  const out: SrcImage[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = await fsp.readdir(dir, { withFileTypes: true });
    if (entries.some((e) => e.isFile() && e.name === 'manifest.json')) {
      const rel = relative(base, dir);
      const suffix = rel === '' ? basename(base) : rel.split('\\').join('/');
      const colon = suffix.lastIndexOf(':');
      const tag = colon > suffix.lastIndexOf('/') ? suffix.slice(colon + 1) : 'latest';
      const repo = colon > suffix.lastIndexOf('/') ? suffix.slice(0, colon) : suffix;
      out.push({ ref: `dir:${dir}`, suffix: colon > suffix.lastIndexOf('/') ? suffix : `${suffix}:latest`, tag, srcOpen: {}, repo, wholeRepo: false });
      return;
    }
    for (const e of entries) if (e.isDirectory()) await walk(join(dir, e.name));
  };
  const st = await fsp.stat(base).catch(() => undefined);
  if (!st?.isDirectory()) throw new UsageError(`sync --src dir: ${base} is not a directory`);
  await walk(base);
  return out.sort((a, b) => a.ref.localeCompare(b.ref));
}

export async function yamlSource(file: string, base: OpenOptions, io: Io): Promise<SrcImage[]> {
  let doc: unknown;
  try {
    // the YAML parser only for --src yaml (~10-20 ms of start-up otherwise)
    const { default: YAML } = await import('yaml');
    doc = YAML.parse(await fsp.readFile(file, 'utf8'));
  } catch (e) {
    throw new UsageError(`sync --src yaml: ${file}: ${(e as Error).message}`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new UsageError(`sync --src yaml: ${file}: want a mapping of registries`);
  const out: SrcImage[] = [];
  for (const [registry, cfgRaw] of Object.entries(doc as Record<string, unknown>)) {
    const where = `${file}: ${registry}`;
    if (!cfgRaw || typeof cfgRaw !== 'object') throw new UsageError(`${where}: want a mapping (images, images-by-tag-regex, tls-verify, credentials, cert-dir)`);
    const cfg = cfgRaw as YamlRegistry;
    for (const k of Object.keys(cfg))
      if (!['images', 'images-by-tag-regex', 'tls-verify', 'cert-dir', 'credentials', 'images-by-semver'].includes(k)) throw new UsageError(`${where}: unknown key ${JSON.stringify(k)}`);
    const open: OpenOptions = { ...base };
    if (cfg['tls-verify'] !== undefined) open.tlsVerify = cfg['tls-verify'];
    if (cfg['cert-dir']) open.certDir = cfg['cert-dir'];
    if (cfg.credentials?.username) open.creds = `${cfg.credentials.username}:${cfg.credentials.password ?? ''}`;
    for (const [repo, refs] of Object.entries(cfg.images ?? {})) {
      const full = `${registry}/${repo}`;
      if (!refs || refs.length === 0) out.push(...(await dockerSource(full, open, io)));
      else {
        for (const ref of refs) {
          const s = String(ref);
          out.push(...(await dockerSource(isDigest(s) ? `${full}@${s}` : `${full}:${s}`, open, io)));
        }
      }
    }
    for (const [repo, re] of Object.entries(cfg['images-by-tag-regex'] ?? {})) {
      let rx: RegExp;
      try {
        rx = new RegExp(re);
      } catch (e) {
        throw new UsageError(`${where}: images-by-tag-regex ${repo}: ${(e as Error).message}`);
      }
      const all = await dockerSource(`${registry}/${repo}`, open, io);
      out.push(...all.filter((i) => rx.test(i.tag)).map((i) => ({ ...i, wholeRepo: false })));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Planning and running

function destFor(img: SrcImage, dest: string, o: SyncOptions): SyncImage {
  const suffix = o.scoped ? img.suffix : posix.basename(img.suffix);
  const at = suffix.indexOf('@');
  // skopeo: a digest source lands under its digest-less name (docker needs a tag: the digest hex is not one).
  const nameTag = at >= 0 ? `${suffix.slice(0, at)}:${suffix.slice(at + 1).replace(':', '-')}` : suffix;
  const colon = nameTag.lastIndexOf(':');
  const repoPart = nameTag.slice(0, colon);
  const tag = nameTag.slice(colon + 1);
  const d = dest.replace(/^docker:\/\//, '').replace(/\/+$/, '');
  if (o.destTransport === 'docker') {
    return { src: img.ref, dest: `docker://${d}/${repoPart}:${tag}`, destTag: tag, destRepo: `docker://${d}/${repoPart}`, srcOpen: img.srcOpen };
  }
  return { src: img.ref, dest: `dir:${join(d, `${repoPart}:${tag}`)}`, destTag: tag, destRepo: `dir:${join(d, repoPart)}`, srcOpen: img.srcOpen };
}

/** The digest the destination would hold after a copy of this source (no conversion), or undefined if unknown. */
async function expectedDigest(srcName: ImageName, open: OpenOptions, o: SyncOptions): Promise<{ digest: Digest; manifest: ManifestBytes }> {
  const src = await openSource(srcName, open);
  try {
    const m = await src.manifest(undefined, { signal: o.signal });
    if (!isIndexType(m.mediaType) || o.all) return { digest: m.digest, manifest: m };
    const child = await findInstance(src, m, o.platform ?? hostPlatform(), { signal: o.signal }); // nested indexes too
    return { digest: child?.digest ?? m.digest, manifest: m };
  } finally {
    await src.close();
  }
}

/** What the destination holds under this name now (docker: one HEAD; dir: its manifest.json). */
async function currentDigest(img: SyncImage, o: SyncOptions): Promise<Digest | undefined> {
  if (img.dest.startsWith('dir:')) {
    const bytes = await fsp.readFile(join(img.dest.slice(4), 'manifest.json')).catch(() => undefined);
    return bytes ? digestOf(bytes) : undefined;
  }
  const dest = await openDestination(await parseImageName(img.dest), o.destOpen);
  try {
    return dest.manifestDigest ? await dest.manifestDigest(img.destTag, { signal: o.signal }) : undefined;
  } finally {
    await dest.close();
  }
}

export async function sync(srcArg: string, destArg: string, o: SyncOptions): Promise<SyncSummary> {
  if (o.srcTransport === 'dir' && o.destTransport === 'dir') throw new UsageError('sync from dir to dir is not supported (as skopeo)');
  const io: Io = { signal: o.signal };
  const sources =
    o.srcTransport === 'docker' ? await dockerSource(srcArg, o.srcOpen, io) : o.srcTransport === 'dir' ? await dirSource(srcArg) : await yamlSource(srcArg, o.srcOpen, io);
  const summary: SyncSummary = { copied: 0, skipped: 0, failed: 0, pruned: 0, failures: [] };
  if (sources.length === 0) {
    o.log('Nothing to sync: the source has no images');
    return summary;
  }
  const images = sources.map((s) => destFor(s, destArg, o));
  o.log(`Syncing ${images.length} image${images.length === 1 ? '' : 's'}${o.dryRun ? ' (dry run)' : ''}`);
  // Copies: a few images at a time (blobs shared between them are sent once: CopyOptions.inflight in o.copy).
  const copies = fastq.promise(async ({ img, known }: { img: SyncImage; known?: CopyOptions['known'] }) => {
    o.log(`Copying ${img.src} to ${img.dest}`);
    try {
      if (img.dest.startsWith('dir:')) await fsp.mkdir(join(img.dest.slice(4), '..'), { recursive: true });
      await o.copy(await parseImageName(img.src), await parseImageName(img.dest), img.srcOpen, known);
      summary.copied++;
    } catch (e) {
      if (o.signal?.aborted) throw e;
      summary.failed++;
      const msg = (e as Error)?.message ?? String(e);
      summary.failures.push({ image: img.src, error: msg });
      o.log(`Failed ${img.src}: ${msg}`);
      if (!o.keepGoing) throw new TsimageError(`sync: copying ${img.src} to ${img.dest}: ${msg}`, { cause: e });
    }
  }, Math.max(1, o.imageJobs ?? 3));
  // A changed image starts copying as soon as its check says so (the other checks go on meanwhile).
  const running: Promise<void>[] = [];
  const startCopy = (img: SyncImage, known?: CopyOptions['known']) => {
    const p = copies.push({ img, known });
    p.catch(() => undefined); // settled below (allSettled); never an unhandled rejection meanwhile
    running.push(p);
  };
  // Up-to-date checks in parallel: source manifest digest vs one HEAD at the destination.
  // o.upToDate (signatures added at the source later) runs here too, in parallel, for up-to-date images.
  const state = new Map<SyncImage, { upToDate: boolean; digest?: Digest | undefined; error?: unknown; carryError?: unknown }>();
  const check = fastq.promise(async (img: SyncImage) => {
    try {
      if (o.converting) {
        state.set(img, { upToDate: false });
        if (!o.dryRun) startCopy(img);
        return;
      }
      const srcName = await parseImageName(img.src);
      const [expected, have] = await Promise.all([expectedDigest(srcName, img.srcOpen, o), currentDigest(img, o)]);
      const want = expected.digest;
      const upToDate = have !== undefined && have === want;
      let carryError: unknown;
      if (upToDate && o.upToDate && !o.dryRun)
        await o.upToDate(srcName, await parseImageName(img.dest), img.srcOpen, expected.manifest).catch((e: unknown) => (carryError = e ?? new Error('failed')));
      state.set(img, { upToDate, digest: want, carryError });
      // (dir: destinations: `have` is the digest of manifest.json, not what the engine asks; it asks again)
      if (!upToDate && !o.dryRun) startCopy(img, img.dest.startsWith('dir:') ? undefined : { sourceManifest: expected.manifest, destDigest: have ?? null });
    } catch (e) {
      state.set(img, { upToDate: false, error: e });
    }
  }, o.checkJobs ?? 8);
  await Promise.all(images.map((i) => check.push(i)));
  // a failure reported below stops the copies already started before it is thrown
  const stopCopies = async () => {
    copies.kill();
    await Promise.allSettled(running);
  };
  for (const img of images) {
    o.signal?.throwIfAborted();
    const st = state.get(img)!;
    if (st.error) {
      summary.failed++;
      const msg = (st.error as Error)?.message ?? String(st.error);
      summary.failures.push({ image: img.src, error: msg });
      o.log(`Failed ${img.src}: ${msg}`);
      if (!o.keepGoing) {
        await stopCopies();
        throw st.error;
      }
      continue;
    }
    if (st.upToDate) {
      summary.skipped++;
      o.log(`Skipping ${img.src}: ${img.dest} is up to date (${st.digest})`);
      if (st.carryError !== undefined) {
        const e = st.carryError;
        if (o.signal?.aborted) {
          await stopCopies();
          throw e;
        }
        const msg = `signatures/referrers: ${(e as Error)?.message ?? String(e)}`;
        summary.failures.push({ image: img.src, error: msg });
        summary.failed++;
        o.log(`Failed ${img.src}: ${msg}`);
        if (!o.keepGoing) {
          await stopCopies();
          throw new TsimageError(`sync: ${img.src}: ${msg}`, { cause: e });
        }
      }
      continue;
    }
    if (o.dryRun) {
      summary.copied++;
      o.log(`Would copy ${img.src} to ${img.dest}`);
    }
    // (not up to date: its copy started when the check ended)
  }
  const settled = await Promise.allSettled(running);
  const firstFailure = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (firstFailure) {
    copies.kill();
    throw firstFailure.reason;
  }
  if (o.prune) await prune(sources, images, state, o, summary);
  return summary;
}

async function prune(
  sources: SrcImage[],
  images: SyncImage[],
  state: Map<SyncImage, { upToDate: boolean; digest?: Digest | undefined }>,
  o: SyncOptions,
  summary: SyncSummary,
): Promise<void> {
  // Only repositories whose every tag the source listed can be pruned (a single tag says nothing of the rest).
  const byRepo = new Map<string, { keep: Set<string>; keepDigests: Set<string>; whole: boolean }>();
  sources.forEach((s, i) => {
    const img = images[i]!;
    const e = byRepo.get(img.destRepo) ?? { keep: new Set<string>(), keepDigests: new Set<string>(), whole: true };
    e.keep.add(img.destTag);
    const d = state.get(img)?.digest;
    if (d) e.keepDigests.add(d);
    e.whole &&= s.wholeRepo;
    byRepo.set(img.destRepo, e);
  });
  for (const [repo, e] of byRepo) {
    if (!e.whole) {
      o.log(`Not pruning ${repo}: the source named single tags, not the whole repository`);
      continue;
    }
    if (repo.startsWith('dir:')) {
      const dir = repo.slice(4);
      const parent = join(dir, '..');
      const base = basename(dir);
      const entries = await fsp.readdir(parent).catch(() => [] as string[]);
      for (const n of entries) {
        if (!n.startsWith(`${base}:`) || e.keep.has(n.slice(base.length + 1))) continue;
        if (o.dryRun) o.log(`Would delete ${join(parent, n)}`);
        else {
          await fsp.rm(join(parent, n), { recursive: true, force: true });
          o.log(`Deleted ${join(parent, n)}`);
        }
        summary.pruned++;
      }
      continue;
    }
    const name = await parseImageName(`${repo}:latest`);
    const dest = await openDestination(name, o.destOpen);
    try {
      if (!dest.tags || !dest.deleteManifest || !dest.manifestDigest) throw new UsageError(`${repo}: the destination cannot list or delete tags (--prune)`);
      const tags = await dest.tags({ signal: o.signal });
      for (const t of tags) {
        if (e.keep.has(t) || isAttachmentTag(t)) continue;
        const d = await dest.manifestDigest(t, { signal: o.signal });
        if (!d) continue;
        if (e.keepDigests.has(d)) {
          o.log(`Not deleting ${repo}:${t}: its manifest ${d} is also a kept tag's (registries delete by digest)`);
          continue;
        }
        if (o.dryRun) o.log(`Would delete ${repo}:${t} (${d})`);
        else {
          await dest.deleteManifest(d, { signal: o.signal });
          o.log(`Deleted ${repo}:${t} (${d})`);
        }
        summary.pruned++;
      }
    } finally {
      await dest.close();
    }
  }
}
