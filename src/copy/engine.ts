/**
 * The copy engine (containers/image copy/): one image or a manifest list from an ImageSource to an
 * ImageDestination, knowing nothing of transports.
 *
 * - Plan: read the top manifest (hooks.beforeWrite may refuse), pick the instances (--all: every child; else the
 *   platform's child of an index), read each image's config (small, verified) when a conversion may need its
 *   diffIDs, and decide per layer whether its compression changes (--dest-compress-format, or what the
 *   destination wants), and whether the manifest format changes (--format, or what the destination accepts).
 *   Nothing changes -> the manifest bytes are copied verbatim (digests preserved). A manifest that must not change
 *   (--preserve-digests, signatures: cannotModify) is copied verbatim instead of converted, as containers/image
 *   does; an index that would have to change is then refused before any write.
 * - Up to date: a verbatim copy to a tag that already names the manifest to write (one HEAD, sent alongside the
 *   source manifest's GET) writes nothing and checks no blob: the registry or layout accepted that manifest with
 *   its blobs (sync's rule for unchanged tags). afterManifest still runs (signatures added at the source since).
 * - Blobs: deduplicated, in parallel (fastq, --jobs) when the destination allows. Plain copies try reuse first
 *   (present: HEAD; mount from the source repository when both are in one registry) and then stream
 *   source -> progress -> destination (the destination verifies digest and size: the contract). Changed layers
 *   stream source -> verify(source digest) -> decompress -> verify(diffID) -> compress -> destination, which
 *   computes the new digest; diffIDs (and so the config) stay.
 * - Manifests: children (by digest) then the top manifest (under the tag), hooks.afterManifest, then commit().
 *   A failure before the top manifest leaves no tag.
 */
import { setMaxListeners } from 'node:events';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import fastq from 'fastq';
import { CompressionError, compressStream, decompressStream } from '../oci/compress.js';
import { digestOf, verifying, type Digest, type VerifyingStream } from '../oci/digest.js';
import type { BlobInfoCache } from './blobinfo.js';
import { hostPlatform } from '../oci/platform.js';
import { isIndexType, isManifestType, MediaTypes, type Compression, type MediaType } from '../oci/mediatypes.js';
import { MAX_MANIFEST_SIZE, readAll, type Io } from '../oci/io.js';
import { OciError, TsimageError, UsageError } from '../oci/errors.js';
import { parseConfig, parseManifest, type Descriptor, type ImageManifest, type Platform } from '../oci/manifest.js';
import { parseReference } from '../oci/reference.js';
import type { ImageDestination, ImageSource, ManifestBytes } from './types.js';
import { chooseInstance, childManifest, MAX_INDEX_DEPTH, parseIndex } from './instances.js';
import {
  dockerConfigToOci,
  imageManifestBytes,
  indexBytes,
  isImageLayerType,
  layerCompression,
  layerTypeFor,
  type ManifestFormat,
} from './convert.js';
import { quietReporter, type BlobOutcome, type CopyReporter } from './progress.js';
import { decryptedType, ENCRYPTED_SUFFIX, isEncryptedType, withoutEncAnnotations, type LayerDecrypter, type LayerEncrypter, type LayerEncryption, type UnwrappedLayer, type CtrHmacStream } from './crypt.js';

export interface CopyHookContext {
  src: ImageSource;
  dest: ImageDestination;
  /** Aliases of src/dest (the signing hooks' names). */
  source: ImageSource;
  destination: ImageDestination;
  /** `transport:rest` of the source and destination. */
  srcName: string;
  destName: string;
  /** beforeWrite: the source's top manifest; afterManifest: the top manifest as written. */
  manifest: ManifestBytes;
  /** The source's top manifest (digest before any conversion). */
  sourceManifest: ManifestBytes;
  /** afterManifest: the top manifest as written. */
  destManifest?: ManifestBytes | undefined;
  /** A copy from an index without --all: the image it takes (found in nested indexes too). */
  selected?: Digest | undefined;
  /** --all: every manifest below the top index, nested indexes and their children included, children first. */
  instances?: Descriptor[] | undefined;
  /** afterManifest of an --all copy: the same manifests as written (new digests after a conversion), children first. */
  destInstances?: Descriptor[] | undefined;
  io: Io;
  options: CopyOptions;
}

export interface CopyOptions extends Io {
  /** Copy every instance of a manifest list (children first, index last). */
  all?: boolean | undefined;
  /** Copy a manifest list's index only (its images must be at the destination already: skopeo's --multi-arch index-only). */
  indexOnly?: boolean | undefined;
  /** The instance to copy from an index when not --all (default: this machine's platform). */
  platform?: Platform | undefined;
  /** Convert the manifest (and config media type) to this format. */
  format?: 'oci' | 'v2s2' | undefined;
  /** Recompress every layer with this algorithm, or decompress them ('none'; skopeo's --dest-decompress): new digests, same diffIDs. */
  destCompress?: 'gzip' | 'zstd' | 'none' | undefined;
  destCompressLevel?: number | undefined;
  /** Parallel blob copies (default 6; 1 when the destination cannot take parallel puts). */
  jobs?: number | undefined;
  /**
   * Never change a manifest (containers/image's "Instructed to preserve digests"): an image is copied as it is,
   * --format/--dest-compress-format/the destination's wishes notwithstanding ("hoping for the best"); a list that
   * would have to change format is refused.
   */
  preserveDigests?: boolean | undefined;
  /**
   * Encrypt image layers (skopeo's --encryption-key/--encrypt-layer; crypt.ts): the selected layers not encrypted
   * yet are encrypted after any recompression; the manifest must be OCI. Not with `decrypt`.
   */
  encrypt?: LayerEncrypter | undefined;
  /** Decrypt the encrypted layers (skopeo's --decryption-key; crypt.ts): every key is unwrapped before anything is written. */
  decrypt?: LayerDecrypter | undefined;
  /** Do not copy signatures (for the signing hooks). */
  removeSignatures?: boolean | undefined;
  reporter?: CopyReporter | undefined;
  /** Runs after the source manifest is read, before anything is written; may throw to refuse (policy). */
  beforeWrite?: ((ctx: CopyHookContext) => Promise<void> | void) | undefined;
  /**
   * Why a manifest of the source must be copied as it is (containers/image's cannotModifyManifestReason, e.g.
   * "Would invalidate signatures"), or undefined when it may change. Asked only for a manifest that a conversion
   * (--format, --dest-compress-format, the destination's wishes) would change: an image is then copied verbatim,
   * and an index that would have to change is refused (skopeo's "Manifest list must be converted ..." error).
   */
  cannotModify?: ((ctx: CopyHookContext, digest: Digest) => Promise<string | undefined>) | undefined;
  /** Runs after the top manifest is written, before commit (signatures). */
  afterManifest?: ((ctx: CopyHookContext) => Promise<void> | void) | undefined;
  /**
   * Blob copies in flight across concurrent copies to one registry (sync): a copy that needs a blob another is
   * sending waits for it and then finds it present (or mounts it) instead of sending it twice.
   */
  inflight?: Map<string, Promise<unknown>> | undefined;
  /**
   * Known blob locations (blobinfo.ts): a registry destination also mounts from other repositories known to hold
   * a blob, and what this copy finds or sends is recorded. Undefined: mounts from the source repository only.
   */
  blobInfoCache?: BlobInfoCache | undefined;
  /**
   * What the caller read for this copy just before (sync's up-to-date check), not asked again: the source's top
   * manifest, and the digest the destination tag names (null: none).
   */
  known?: { sourceManifest: ManifestBytes; destDigest: Digest | null } | undefined;
}

export interface CopyStats {
  /** Blobs whose bytes moved. */
  copied: number;
  /** Blobs already at the destination. */
  skipped: number;
  /** Blobs mounted from another repository. */
  mounted: number;
  /** Bytes read from the source for copied blobs. */
  bytes: number;
  seconds: number;
}

export interface CopyResult {
  /** The top manifest as written. */
  manifest: ManifestBytes;
  /** The source's top manifest digest (of the index with --all, else of the image copied). */
  sourceDigest: Digest;
  /** The manifest written differs from the source's (conversion, recompression). */
  converted: boolean;
  /** Why the manifest changed, for messages. */
  conversions: string[];
  /** The destination tag already named this manifest: nothing was written. */
  upToDate: boolean;
  stats: CopyStats;
}

const CONFIG_TYPES: readonly string[] = [MediaTypes.ociConfig, MediaTypes.dockerConfig];

interface LayerJob {
  src: Descriptor;
  from: Compression;
  to: Compression;
  diffID?: Digest | undefined;
  mediaType: MediaType;
  /** Encrypt the (recompressed) blob. */
  encrypt?: boolean | undefined;
  /** Decrypt the source blob first (its key unwrapped at plan time). */
  decrypt?: UnwrappedLayer | undefined;
}

interface ImagePlan {
  source: ManifestBytes;
  doc: ImageManifest;
  /** Target format; undefined = keep the manifest as it is. */
  format: ManifestFormat;
  /** The config as written (converted or not); bytes only when read (a verbatim copy streams it as a blob). */
  configOut: { desc: Descriptor; bytes?: Buffer | undefined };
  layers: LayerJob[];
  changed: string[];
}

function formatOf(mt: MediaType): ManifestFormat {
  return mt === MediaTypes.dockerManifest || mt === MediaTypes.dockerManifestList ? 'docker' : 'oci';
}

function wantedFormat(srcType: MediaType, opts: CopyOptions, dest: ImageDestination, index: boolean): ManifestFormat {
  const accepted = dest.caps.manifestTypes;
  if (opts.encrypt) {
    // ocicrypt's annotations and +encrypted media types exist in OCI manifests only (skopeo 1.9.3 with --format v2s2
    // writes the encrypted blobs under a Docker manifest without them: an image nobody can decrypt)
    if (opts.format === 'v2s2') throw new UsageError('encrypted layers need the OCI manifest format: --encryption-key cannot be used with --format v2s2');
    const t = index ? MediaTypes.ociIndex : MediaTypes.ociManifest;
    if (accepted.length && !accepted.includes(t)) throw new UsageError(`${dest.name} cannot store OCI manifests: encrypted layers need the OCI format`);
    return 'oci';
  }
  if (opts.format) return opts.format === 'v2s2' ? 'docker' : 'oci';
  if (accepted.length === 0 || accepted.includes(srcType)) return formatOf(srcType);
  const want = index ? [MediaTypes.ociIndex, MediaTypes.dockerManifestList] : [MediaTypes.ociManifest, MediaTypes.dockerManifest];
  const t = want.find((w) => accepted.includes(w));
  if (!t) throw new UsageError(`${dest.name} cannot store a ${srcType} (it takes ${accepted.join(', ')})`);
  return formatOf(t);
}

/** Counts bytes for progress without copying them. */
class Tap extends Transform {
  bytes = 0;
  constructor(private readonly onBytes: (n: number) => void) {
    super({ highWaterMark: 1024 * 1024 });
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.onBytes(chunk.length);
    cb(null, chunk);
  }
}

/**
 * The repositories a destination in the same registry could mount blobs from: the source's own, where its blobs
 * are read from (a mirror, a rewritten location) or, failing that, the registry its name says.
 */
function mountCandidates(src: ImageSource, dest: ImageDestination): string[] | undefined {
  const to = dest.blobLocation;
  if (!to) return undefined;
  const from = src.blobLocation;
  if (from && from.registry === to.registry) return from.repository === to.repository ? undefined : [from.repository];
  const s = src.name.dockerReference;
  if (src.name.transport !== 'docker' || !s) return undefined;
  try {
    const rs = parseReference(s);
    return rs.registry === to.registry && rs.repository !== to.repository ? [rs.repository] : undefined;
  } catch {
    return undefined;
  }
}

export class CopyEngine {
  private readonly reporter: CopyReporter;
  private readonly io: Io;
  private readonly stats: CopyStats = { copied: 0, skipped: 0, mounted: 0, bytes: 0, seconds: 0 };
  private readonly mountFrom: string[] | undefined;
  private readonly cache: BlobInfoCache | undefined;
  /** Blob copies by key (digest + transform), shared between the images of an index. */
  private readonly blobs = new Map<string, Promise<Descriptor>>();
  private readonly queue: fastq.queueAsPromised<() => Promise<void>, void>;

  constructor(
    private readonly src: ImageSource,
    private readonly dest: ImageDestination,
    private readonly opts: CopyOptions,
  ) {
    this.reporter = opts.reporter ?? quietReporter;
    this.io = { signal: opts.signal };
    this.mountFrom = mountCandidates(src, dest);
    this.cache = dest.blobLocation ? opts.blobInfoCache : undefined;
    void this.cache?.load(); // read while the source manifest is fetched
    const jobs = dest.caps.parallelPuts ? Math.max(1, opts.jobs ?? 6) : 1;
    this.queue = fastq.promise((task: () => Promise<void>) => task(), jobs);
  }

  async run(): Promise<CopyResult> {
    try {
      return await this.runOnce();
    } finally {
      // what was found and sent is worth keeping even when the copy failed later
      await this.opts.blobInfoCache?.flush();
    }
  }

  private async runOnce(): Promise<CopyResult> {
    const t0 = process.hrtime.bigint();
    const { src, dest, opts } = this;
    // verbatim copy to a tag: what the tag names now, asked while the source manifest is read
    const verbatim = !opts.format && !opts.destCompress && !opts.encrypt && !opts.decrypt && dest.tag !== undefined && dest.manifestDigest !== undefined;
    const known = opts.known;
    const existing = !verbatim ? undefined : known ? Promise.resolve(known.destDigest ?? undefined) : dest.manifestDigest!(dest.tag!, this.io).catch(() => undefined);
    const top = known?.sourceManifest ?? (await src.manifest(undefined, this.io));
    // which manifests below an index this copy takes, known before the hooks run (policy checks the images copied)
    let selected: ManifestBytes | undefined;
    let instances: Descriptor[] | undefined;
    if (isIndexType(top.mediaType) && !opts.indexOnly) {
      if (opts.all) instances = await this.walkIndexes(top);
      else selected = await chooseInstance(src, top, opts.platform ?? hostPlatform(), this.io); // nested indexes too
    }
    const ctxBase = {
      src,
      dest,
      source: src,
      destination: dest,
      srcName: `${src.name}`,
      destName: `${dest.name}`,
      io: this.io,
      options: opts,
      sourceManifest: top,
      selected: selected?.digest,
      instances,
    };
    this.hookCtx = { ...ctxBase, manifest: top };
    await opts.beforeWrite?.(this.hookCtx);
    this.io.signal?.throwIfAborted();

    let written: ManifestBytes;
    let conversions: string[];
    let sourceDigest = top.digest;
    const upToDate = async (m: ManifestBytes) =>
      existing !== undefined && (await existing) === m.digest && (dest.caps.manifestTypes.length === 0 || dest.caps.manifestTypes.includes(m.mediaType));
    // (an index without --all writes its platform's image under the tag, not the index: checked below)
    if ((opts.all || opts.indexOnly || !isIndexType(top.mediaType)) && (await upToDate(top))) return this.finish(t0, ctxBase, top, sourceDigest, [], true);
    if (isIndexType(top.mediaType)) {
      if (opts.indexOnly) {
        if (opts.format || opts.destCompress) throw new UsageError('--multi-arch index-only copies the index as it is: no --format or compression change');
        // the destination checks (registries refuse an index whose images it does not have)
        written = top;
        conversions = [];
        await dest.putManifest(top, this.topRef(top), this.io);
      } else if (opts.all) {
        ({ written, conversions } = await this.copyIndex(top, instances!));
      } else {
        const m = selected!;
        sourceDigest = m.digest;
        if (await upToDate(m)) return this.finish(t0, ctxBase, m, sourceDigest, [], true);
        const plan = await this.plan(m, false);
        await this.copyBlobs([plan]);
        written = this.manifestFor(plan);
        conversions = plan.changed;
        await dest.putManifest(written, this.topRef(written), this.io);
      }
    } else if (isManifestType(top.mediaType)) {
      const plan = await this.plan(top, false);
      await this.copyBlobs([plan]);
      written = this.manifestFor(plan);
      conversions = plan.changed;
      await dest.putManifest(written, this.topRef(written), this.io);
    } else {
      throw new OciError('MANIFEST_INVALID', `${src.name}: unsupported manifest type ${top.mediaType}`);
    }
    this.reporter.message('Writing manifest to image destination');
    return this.finish(t0, ctxBase, written, sourceDigest, conversions, false);
  }

  private async finish(
    t0: bigint,
    ctxBase: Omit<CopyHookContext, 'manifest' | 'destManifest'>,
    written: ManifestBytes,
    sourceDigest: Digest,
    conversions: string[],
    upToDate: boolean,
  ): Promise<CopyResult> {
    await this.opts.afterManifest?.({ ...ctxBase, manifest: written, destManifest: written, destInstances: this.destInstances });
    await this.dest.commit(this.io);
    this.stats.seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    return { manifest: written, sourceDigest, converted: written.digest !== sourceDigest, conversions, upToDate, stats: { ...this.stats } };
  }

  private topRef(m: ManifestBytes): string {
    return this.dest.tag ?? m.digest;
  }

  /** The hooks' context (beforeWrite's), for cannotModify. */
  private hookCtx: CopyHookContext | undefined;

  /** --all: the manifests written below the top one (for the hooks). */
  private destInstances: Descriptor[] | undefined;

  /** Nested indexes read by walkIndexes, by digest (copyIndex writes them). */
  private readonly indexes = new Map<Digest, ManifestBytes>();

  /**
   * Every manifest below the index `top`, children before parents, each once: the descriptors as their parent
   * lists them. Only nested indexes are read (an index of images costs no request here).
   */
  private async walkIndexes(top: ManifestBytes): Promise<Descriptor[]> {
    const out = new Map<Digest, Descriptor>();
    const walk = async (m: ManifestBytes, depth: number): Promise<void> => {
      if (depth > MAX_INDEX_DEPTH) throw new OciError('MANIFEST_INVALID', `${this.src.name}: indexes nested more than ${MAX_INDEX_DEPTH} deep (at ${m.digest})`);
      const doc = parseIndex(m, `${this.src.name}`);
      for (const d of doc.manifests) {
        if (!isManifestType(d.mediaType) && !isIndexType(d.mediaType))
          throw new OciError('MANIFEST_INVALID', `${this.src.name}: index ${m.digest} lists ${d.digest} of unsupported type ${d.mediaType}`);
      }
      // the nested indexes of one level in parallel (each is one GET from a registry)
      const nested = await Promise.all(
        doc.manifests.map((d) => (isIndexType(d.mediaType) && !this.indexes.has(d.digest) ? childManifest(this.src, d, this.io) : undefined)),
      );
      for (const [i, d] of doc.manifests.entries()) {
        if (out.has(d.digest)) continue;
        const c = nested[i] ?? (isIndexType(d.mediaType) ? this.indexes.get(d.digest) : undefined);
        if (c) {
          if (!isIndexType(c.mediaType)) throw new OciError('MANIFEST_INVALID', `${this.src.name}: index ${m.digest} says ${d.digest} is an index, it is ${c.mediaType}`);
          this.indexes.set(d.digest, c);
          await walk(c, depth + 1);
        }
        out.set(d.digest, d);
      }
    };
    await walk(top, 1);
    return [...out.values()];
  }

  /**
   * --all: every image below the index (nested indexes included), blobs first, then the manifests children
   * before parents (each once, by digest), the top one last under the tag. Nothing changes -> every manifest
   * verbatim; a conversion rewrites each index whose children changed.
   */
  private async copyIndex(top: ManifestBytes, instances: Descriptor[]): Promise<{ written: ManifestBytes; conversions: string[] }> {
    const { src, dest } = this;
    const format = wantedFormat(top.mediaType, this.opts, dest, true);
    if (format === 'docker') {
      const nested = instances.find((d) => isIndexType(d.mediaType));
      if (nested) throw new UsageError(`${src.name}: a Docker manifest list cannot hold another list (index ${nested.digest} is nested): keep the OCI format`);
    }
    const plans = new Map<Digest, ImagePlan>();
    for (const d of instances) {
      if (isIndexType(d.mediaType)) continue;
      const m = await childManifest(src, d, this.io);
      if (!isManifestType(m.mediaType)) throw new OciError('MANIFEST_INVALID', `${src.name}: index lists ${d.digest} as an image manifest, it is ${m.mediaType}`);
      plans.set(d.digest, await this.plan(m, true, format));
    }
    await this.checkIndexes(top, format, plans);
    await this.copyBlobs([...plans.values()]);
    const out = new Map<Digest, ManifestBytes>();
    const conversions = [...new Set([...plans.values()].flatMap((p) => p.changed))];
    let listsConverted = false;
    const writeIndex = async (m: ManifestBytes, ref: ((w: ManifestBytes) => string) | undefined): Promise<ManifestBytes> => {
      const doc = parseIndex(m, `${src.name}`);
      const children: ManifestBytes[] = [];
      for (const d of doc.manifests) {
        let c = out.get(d.digest);
        if (!c) {
          const plan = plans.get(d.digest);
          if (plan) {
            c = this.manifestFor(plan);
            await dest.putManifest(c, undefined, this.io);
          } else {
            c = await writeIndex(this.indexes.get(d.digest)!, undefined);
          }
          out.set(d.digest, c);
        }
        children.push(c);
      }
      const formatChanged = format !== formatOf(m.mediaType);
      let written: ManifestBytes = m;
      if (formatChanged || children.some((c, i) => c.digest !== doc.manifests[i]!.digest)) {
        listsConverted ||= formatChanged;
        const manifests = doc.manifests.map((d, i) => ({ ...d, mediaType: children[i]!.mediaType, digest: children[i]!.digest, size: children[i]!.bytes.length }));
        const bytes = indexBytes(format, manifests, doc);
        written = { bytes, mediaType: format === 'oci' ? MediaTypes.ociIndex : MediaTypes.dockerManifestList, digest: digestOf(bytes) };
      }
      await dest.putManifest(written, ref?.(written), this.io);
      return written;
    };
    const written = await writeIndex(top, (w) => this.topRef(w));
    this.destInstances = instances.map((d) => {
      const w = out.get(d.digest)!;
      return { ...d, mediaType: w.mediaType, digest: w.digest, size: w.bytes.length };
    });
    if (listsConverted) conversions.unshift(`manifest list converted to ${format === 'oci' ? 'an OCI index' : 'a Docker manifest list'}`);
    return { written, conversions };
  }

  /**
   * Before anything is written: every index that has to change (its format, or a child that changes) may change
   * (cannotModify), else containers/image's error for a list it cannot modify.
   */
  private async checkIndexes(top: ManifestBytes, format: ManifestFormat, plans: Map<Digest, ImagePlan>): Promise<void> {
    if (!this.opts.cannotModify && !this.opts.preserveDigests) return;
    const memo = new Map<Digest, Promise<boolean>>();
    const changes = (m: ManifestBytes): Promise<boolean> => {
      let p = memo.get(m.digest);
      if (!p) {
        p = (async () => {
          let changed = format !== formatOf(m.mediaType);
          for (const d of parseIndex(m, `${this.src.name}`).manifests) {
            const plan = plans.get(d.digest);
            if (plan ? plan.changed.length > 0 : await changes(this.indexes.get(d.digest)!)) changed = true;
          }
          if (!changed) return false;
          const why = await this.cannotModify(m.digest);
          if (why) {
            const to = format === 'oci' ? MediaTypes.ociIndex : MediaTypes.dockerManifestList;
            throw new TsimageError(`Manifest list must be converted to type ${JSON.stringify(to)} to be written to destination, but we cannot modify it: ${JSON.stringify(why)}`);
          }
          return true;
        })();
        memo.set(m.digest, p);
      }
      return p;
    };
    await changes(top);
  }

  private async readConfig(d: Descriptor): Promise<Buffer> {
    const s = await this.src.blob(d, this.io);
    return readAll(s.pipe(verifying({ digest: d.digest, size: d.size, limit: MAX_MANIFEST_SIZE, what: `config ${d.digest}` })).on('error', () => {}), MAX_MANIFEST_SIZE, `config ${d.digest}`).finally(() => s.destroy());
  }

  /** Read an image's manifest and config and decide what changes. */
  private async plan(m: ManifestBytes, child: boolean, forced?: ManifestFormat): Promise<ImagePlan> {
    const p = parseManifest(m.bytes, m.mediaType);
    if (p.kind !== 'manifest') throw new TsimageError('internal: image manifest expected');
    const doc = p.doc;
    const srcFormat = formatOf(m.mediaType);
    const format = forced ?? wantedFormat(m.mediaType, this.opts, this.dest, false);
    const changed: string[] = [];
    const isImage = CONFIG_TYPES.includes(doc.config.mediaType);
    const caps = this.dest.caps.layerCompression ?? 'preserve';
    // The config's diffIDs matter only to a change of format or compression. A verbatim copy does not read it
    // first (one round trip less before the blobs start): it travels as a blob, verified by the destination.
    // (Like skopeo, a layer then counts as compressed by its media type, never by comparing diffID and digest.)
    // layers to decrypt (encrypted, keys given) are planned as their plain media type
    const decrypting = (l: Descriptor): boolean => this.opts.decrypt !== undefined && isEncryptedType(l.mediaType);
    const plainType = (l: Descriptor): MediaType => (decrypting(l) ? decryptedType(l.mediaType) : l.mediaType);
    const encryptSet = this.encryptSet(doc.layers.length);
    const crypto = doc.layers.map((l, i) => ({ enc: encryptSet.has(i) && !isEncryptedType(l.mediaType), dec: decrypting(l) }));
    const cryptoLayer = crypto.findIndex((c) => c.enc || c.dec);
    if (cryptoLayer >= 0) {
      // containers/image: never silently copied as it is (the user asked for encryption/decryption)
      const why = await this.cannotModify(m.digest);
      if (why) throw new TsimageError(`layer ${doc.layers[cryptoLayer]!.digest} should be ${crypto[cryptoLayer]!.enc ? 'encrypted' : 'decrypted'}, but we can't modify the manifest: ${why}`);
    }
    const needConfig =
      format !== srcFormat ||
      this.opts.destCompress !== undefined ||
      caps === 'decompress' ||
      (caps === 'compress' && doc.layers.some((l) => isImageLayerType(plainType(l)) && layerCompression(plainType(l)) === 'none'));
    // every key unwrapped before anything is written (a key that fits no recipient fails here)
    const settled = await Promise.allSettled(doc.layers.map((l, i) => (crypto[i]!.dec ? this.opts.decrypt!.unwrap(l) : undefined)));
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason; // the first layer in order that cannot be decrypted
    const unwrapped = settled.map((r) => (r as PromiseFulfilledResult<UnwrappedLayer | undefined>).value);
    const configBytes = needConfig ? await this.readConfig(doc.config) : undefined;
    const diffIDs = isImage && configBytes ? parseConfig(configBytes).rootfs.diff_ids : undefined;
    let configOut: ImagePlan['configOut'] = { desc: doc.config, bytes: configBytes };
    if (format !== srcFormat) {
      if (!isImage) throw new UsageError(`${this.src.name}: cannot convert an artifact (config ${doc.config.mediaType}) to ${format === 'oci' ? 'OCI' : 'Docker schema 2'}`);
      if (doc.subject || doc.artifactType) throw new UsageError(`${this.src.name}: a manifest with a subject/artifactType cannot be converted to Docker schema 2`);
      changed.push(`${child ? 'instance ' : ''}manifest converted to ${format === 'oci' ? 'OCI' : 'Docker schema 2'}`);
      if (format === 'oci') {
        const bytes = dockerConfigToOci(configBytes!);
        configOut = { desc: { mediaType: MediaTypes.ociConfig, digest: digestOf(bytes), size: bytes.length }, bytes };
      } else {
        configOut = { desc: { mediaType: MediaTypes.dockerConfig, digest: doc.config.digest, size: doc.config.size }, bytes: configBytes };
      }
    }
    const layers: LayerJob[] = doc.layers.map((l, i) => {
      const { enc } = crypto[i]!;
      const dec = unwrapped[i];
      const mt = plainType(l);
      if (!isImageLayerType(mt) || !isImage) {
        if (enc || dec) throw new UsageError(`${this.src.name}: cannot ${enc ? 'encrypt' : 'decrypt'} ${l.mediaType} layer ${l.digest} (not an image layer)`);
        if (this.opts.destCompress) throw new UsageError(`${this.src.name}: cannot recompress ${l.mediaType} layer ${l.digest} (not an image layer)`);
        if (format === 'docker' && isEncryptedType(l.mediaType))
          throw new UsageError(`${this.src.name}: layer ${l.digest} is encrypted (${l.mediaType}): a Docker schema 2 manifest cannot carry it (decrypt it with --decryption-key, or keep the OCI format)`);
        return { src: l, from: 'none', to: 'none', mediaType: l.mediaType };
      }
      const diffID = diffIDs?.[i];
      const from: Compression = diffID && diffID === (dec ? dec.digest : l.digest) ? 'none' : layerCompression(mt);
      let to: Compression = from;
      if (this.opts.destCompress) to = this.opts.destCompress;
      else if (caps === 'compress' && from === 'none') to = 'gzip';
      else if (caps === 'decompress' && !enc) to = 'none';
      if (to !== from && !diffID) throw new OciError('MANIFEST_INVALID', `${this.src.name}: layer ${i} has no diffID in the config: cannot recompress`);
      let mediaType = layerTypeFor(format, mt, to);
      if (enc) mediaType += ENCRYPTED_SUFFIX;
      return { src: l, from, to, diffID, mediaType, encrypt: enc || undefined, decrypt: dec };
    });
    const recompressed = layers.filter((l) => l.from !== l.to);
    const encrypted = layers.filter((l) => l.encrypt).length;
    const decrypted = layers.filter((l) => l.decrypt).length;
    if (decrypted) changed.push(`${decrypted} layer(s) decrypted`);
    if (recompressed.length) changed.push(`${recompressed.length} layer(s) ${recompressed[0]!.to === 'none' ? 'decompressed' : `compressed with ${recompressed[0]!.to}`}`);
    if (encrypted) changed.push(`${encrypted} layer(s) encrypted`);
    if (!changed.length && format === srcFormat && layers.some((l) => l.mediaType !== l.src.mediaType)) changed.push('layer media types changed');
    if (changed.length) {
      // containers/image: a manifest with signatures is never modified (copied as it is, the conversion skipped)
      const why = await this.cannotModify(m.digest);
      if (why) {
        this.reporter.message(`Copying ${m.digest} as it is (${why.toLowerCase()}): not done: ${changed.join('; ')}`);
        const keep = (l: Descriptor): LayerJob => ({ src: l, from: 'none', to: 'none', mediaType: l.mediaType });
        return { source: m, doc, format: srcFormat, configOut: { desc: doc.config }, layers: doc.layers.map(keep), changed: [] };
      }
    }
    return { source: m, doc, format, configOut, layers, changed };
  }

  /** --encryption-key: the indexes of the layers to encrypt (--encrypt-layer, negative from the end; none = all). */
  private encryptSet(n: number): Set<number> {
    const e = this.opts.encrypt;
    if (!e) return new Set();
    if (!e.layers?.length) return new Set(Array.from({ length: n }, (_, i) => i));
    const out = new Set<number>();
    for (const i of e.layers) {
      const j = i < 0 ? n + i : i;
      if (j < 0 || j >= n) throw new UsageError(`--encrypt-layer ${i}: ${this.src.name} has ${n} layer(s) (0..${n - 1}, or -1..-${n} from the end)`);
      out.add(j);
    }
    return out;
  }

  /** Why a source manifest must not change (--preserve-digests; opts.cannotModify: it has signatures), or undefined. */
  private async cannotModify(digest: Digest): Promise<string | undefined> {
    // (containers/image: the last reason set wins, and --preserve-digests is set after "Would invalidate signatures")
    if (this.opts.preserveDigests) return 'Instructed to preserve digests';
    if (!this.opts.cannotModify || !this.hookCtx) return undefined;
    return this.opts.cannotModify(this.hookCtx, digest);
  }

  private manifestFor(plan: ImagePlan): ManifestBytes {
    if (plan.changed.length === 0) return plan.source;
    const layers = plan.layers.map((l) => {
      const d = this.done.get(this.key(l));
      if (!d) throw new TsimageError(`internal: layer ${l.src.digest} was not copied`);
      const desc: Descriptor = { ...l.src, mediaType: l.mediaType, digest: d.digest, size: d.size };
      if (l.encrypt || l.decrypt) desc.annotations = d.annotations;
      return desc;
    });
    const bytes = imageManifestBytes(plan.format, plan.configOut.desc, layers, plan.format === 'oci' && formatOf(plan.source.mediaType) === 'oci' ? { annotations: plan.doc.annotations, subject: plan.doc.subject, artifactType: plan.doc.artifactType } : {});
    return { bytes, mediaType: plan.format === 'oci' ? MediaTypes.ociManifest : MediaTypes.dockerManifest, digest: digestOf(bytes) };
  }

  private readonly done = new Map<string, Descriptor>();

  private key(l: LayerJob): string {
    return `${l.src.digest}|${l.from}>${l.to}${l.decrypt ? '|decrypt' : ''}${l.encrypt ? '|encrypt' : ''}`;
  }

  private async copyBlobs(plans: ImagePlan[]): Promise<void> {
    const tasks: Promise<unknown>[] = [];
    const add = (key: string, fn: () => Promise<Descriptor>) => {
      if (this.blobs.has(key)) return;
      const p = this.queue.push(async () => {
        const d = await fn();
        this.done.set(key, d);
      }).then(() => this.done.get(key)!);
      this.blobs.set(key, p);
      tasks.push(p);
    };
    const ac = new AbortController();
    // every blob's pipeline listens on it (fastq runs `jobs` at a time, but a list may queue hundreds)
    setMaxListeners(0, ac.signal);
    const outer = this.io.signal;
    const onAbort = () => ac.abort(outer!.reason);
    outer?.throwIfAborted();
    outer?.addEventListener('abort', onAbort, { once: true });
    const io: Io = { signal: ac.signal };
    try {
      for (const plan of plans) {
        const c = plan.configOut;
        add(`config|${c.desc.digest}`, () => (c.bytes ? this.copyConfig(c.desc, c.bytes, io) : this.copyPlain(c.desc, io, 'config')));
        for (const l of plan.layers) {
          const asIs = l.from === l.to && !l.encrypt && !l.decrypt;
          if (l.src.urls?.length && asIs) {
            // Foreign layers stay where their URLs say (as skopeo does for registries).
            this.done.set(this.key(l), l.src);
            this.blobs.set(this.key(l), Promise.resolve(l.src));
            continue;
          }
          add(this.key(l), () => (asIs ? this.copyPlain(l.src, io) : this.copyTransformed(l, io)));
        }
      }
      const results = await Promise.allSettled(tasks);
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    } catch (e) {
      ac.abort(e);
      await Promise.allSettled(tasks);
      throw e;
    } finally {
      outer?.removeEventListener('abort', onAbort);
    }
  }

  private count(outcome: BlobOutcome): void {
    if (outcome === 'copied') this.stats.copied++;
    else if (outcome === 'skipped') this.stats.skipped++;
    else this.stats.mounted++;
  }

  /** For the blob-info cache: the source holds `read` (when it was read from it), the destination now holds `stored`. */
  private located(read: Digest | undefined, stored: Digest): void {
    if (!this.cache) return;
    const from = this.src.blobLocation;
    if (read && from) this.cache.record(from.registry, from.repository, read);
    const to = this.dest.blobLocation!;
    this.cache.record(to.registry, to.repository, stored);
  }

  private async tryReuse(d: Descriptor, kind: 'blob' | 'config', io: Io): Promise<Descriptor | undefined> {
    const to = this.dest.blobLocation;
    let cached: string[] = [];
    if (this.cache && to) {
      await this.cache.load();
      cached = this.cache.candidates(to.registry, d.digest, [to.repository, ...(this.mountFrom ?? [])]);
    }
    const r = await this.dest.tryReuse(d, { ...io, mountFrom: this.mountFrom, alsoMountFrom: cached });
    if (this.cache && to && cached.length && r.kind !== 'present') {
      // cached locations tried without success (a mount that answered "no"): not offered again
      const at = r.kind === 'mounted' ? cached.indexOf(r.from) : cached.length;
      const tried = cached.slice(0, Math.max(0, at));
      for (const p of tried) this.cache.forget(to.registry, p, d.digest);
    }
    if (r.kind === 'absent') return undefined;
    this.located(d.digest, r.descriptor.digest);
    const outcome: BlobOutcome = r.kind === 'present' ? 'skipped' : 'mounted';
    this.count(outcome);
    this.reporter.blob(kind, d).done(outcome, r.kind === 'mounted' ? r.from : undefined);
    return r.descriptor;
  }

  private async copyConfig(d: Descriptor, bytes: Buffer, io: Io): Promise<Descriptor> {
    const reused = await this.tryReuse(d, 'config', io);
    if (reused) return reused;
    const bar = this.reporter.blob('config', d);
    try {
      const out = await this.dest.putBlob(d, Readable.from([bytes]), io);
      this.located(undefined, out.digest);
      bar.tick(bytes.length);
      bar.done('copied');
      this.count('copied');
      this.stats.bytes += bytes.length;
      return out;
    } catch (e) {
      bar.fail(e);
      throw e;
    }
  }

  private async copyPlain(d: Descriptor, io: Io, kind: 'blob' | 'config' = 'blob'): Promise<Descriptor> {
    const inflight = this.opts.inflight;
    if (!inflight) return this.copyPlainNow(d, io, kind);
    const key = d.digest;
    for (let other = inflight.get(key); other; other = inflight.get(key)) await other.catch(() => undefined);
    const mine = this.copyPlainNow(d, io, kind);
    inflight.set(key, mine);
    try {
      return await mine;
    } finally {
      if (inflight.get(key) === mine) inflight.delete(key);
    }
  }

  private async copyPlainNow(d: Descriptor, io: Io, kind: 'blob' | 'config'): Promise<Descriptor> {
    const reused = await this.tryReuse(d, kind, io);
    if (reused) return reused;
    const bar = this.reporter.blob(kind, d);
    try {
      if (this.src.blobToFile && this.dest.putBlobWith) {
        // straight into the destination's temp file (a registry source downloads in a worker thread), verified there
        const onProgress = (n: number) => bar.tick(n);
        const out = await this.dest.putBlobWith(d, (fd) => this.src.blobToFile!(d, fd, { signal: io.signal, onProgress }), io);
        this.located(d.digest, out.digest);
        this.stats.bytes += d.size;
        this.count('copied');
        bar.done('copied');
        return out;
      }
      // putBlob verifies digest and size (the contract): the source need not hash the same bytes again.
      const body = await this.src.blob(d, { ...io, verify: false });
      const tap = new Tap((n) => bar.tick(n));
      let out: Descriptor | undefined;
      await pipeline(body, tap, async (source: AsyncIterable<Uint8Array>) => {
        // reopen: the source from an offset, for a registry destination resuming an interrupted upload
        out = await this.dest.putBlob(d, source, { ...io, reopen: (start: number) => this.src.blob(d, { ...io, start, verify: false }) });
      }, io.signal ? { signal: io.signal } : {});
      if (!out) throw new TsimageError(`internal: blob ${d.digest} not stored`);
      if (out.digest !== d.digest) throw new OciError('DIGEST_INVALID', `${this.dest.name} stored blob ${d.digest} as ${out.digest}`);
      this.located(d.digest, out.digest);
      this.stats.bytes += tap.bytes;
      this.count('copied');
      bar.done('copied');
      return out;
    } catch (e) {
      bar.fail(e);
      throw e;
    }
  }

  /**
   * A layer that changes on the way: source -> verify(source digest) -> [decrypt -> verify(plain digest)] ->
   * [decompress -> verify(diffID) -> compress] -> [encrypt] -> destination (which computes the new digest).
   */
  private async copyTransformed(l: LayerJob, io: Io): Promise<Descriptor> {
    const d = l.src;
    const bar = this.reporter.blob('blob', d);
    let decrypting: CtrHmacStream | undefined;
    try {
      const body = await this.src.blob(d, { ...io, verify: false });
      const tap = new Tap((n) => bar.tick(n));
      const stages: (Readable | Transform | NodeJS.ReadWriteStream)[] = [body, verifying({ digest: d.digest, size: d.size, what: `layer ${d.digest}` }), tap];
      decrypting = l.decrypt?.stream();
      if (decrypting) stages.push(decrypting, verifying({ digest: l.decrypt!.digest, what: `decrypted layer ${d.digest}` }));
      if (l.from !== l.to) {
        if (l.from !== 'none') {
          stages.push(decompressStream(l.from));
          if (l.diffID) stages.push(verifying({ digest: l.diffID, what: `uncompressed layer ${d.digest} (diffID)` }));
        }
        if (l.to !== 'none') stages.push(compressStream(l.to, { level: this.opts.destCompressLevel }));
      }
      let plain: VerifyingStream | undefined;
      let encryption: LayerEncryption | undefined;
      if (l.encrypt) {
        encryption = this.opts.encrypt!.encryptor();
        // what is encrypted is the source blob (verified above), or the recompressed one (hashed here)
        if (l.from !== l.to || l.decrypt) stages.push((plain = verifying({})));
        stages.push(encryption.stream);
      }
      let out: Descriptor | undefined;
      const sink = async (source: AsyncIterable<Uint8Array>) => {
        out = await this.dest.putBlob({ mediaType: l.mediaType }, source, io);
      };
      await (pipeline as unknown as (...a: unknown[]) => Promise<void>)(...stages, sink, io.signal ? { signal: io.signal } : {});
      if (!out) throw new TsimageError(`internal: layer ${d.digest} not stored`);
      let annotations = l.decrypt ? withoutEncAnnotations(d.annotations) : d.annotations;
      if (encryption) annotations = { ...annotations, ...(await encryption.annotations(plain ? plain.result!.digest : d.digest)) };
      this.located(d.digest, out.digest);
      this.stats.bytes += tap.bytes;
      this.count('copied');
      const what = [l.decrypt ? 'decrypted' : '', l.from !== l.to ? `${l.from} -> ${l.to}` : '', l.encrypt ? 'encrypted' : ''].filter(Boolean).join(', ');
      bar.done('copied', `(${what}: ${out.digest})`);
      return { ...out, mediaType: l.mediaType, annotations };
    } catch (e) {
      bar.fail(e);
      // decrypted data is authenticated (HMAC) only at its end: a decompressor may fail on modified data first
      if (decrypting && !decrypting.finished && e instanceof CompressionError)
        throw new TsimageError(`decrypting layer ${d.digest}: ${e.message} (before the end of the layer, where its HMAC is checked: the encrypted layer was probably modified or is corrupt)`, { cause: e });
      throw e;
    }
  }
}

/**
 * Copy the image `src` names to `dest` (both opened by the caller: destination first, as containers/image).
 * Does not close them.
 */
export async function copyImage(src: ImageSource, dest: ImageDestination, opts: CopyOptions = {}): Promise<CopyResult> {
  return new CopyEngine(src, dest, opts).run();
}
