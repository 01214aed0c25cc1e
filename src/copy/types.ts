/**
 * The contract between the copy engine and its transports (containers/image's split, go-containerregistry's
 * small interfaces). The engine knows nothing of transports: it sees an ImageSource and an ImageDestination.
 *
 * Call order on a destination (as containers/image states it): putBlob/tryReuse for every blob (in parallel
 * when caps.parallelPuts), then putManifest for child manifests, then the top manifest, then commit(), then
 * close() on every path. A putBlob whose body fails (read error, digest mismatch, abort) must leave no partial
 * data visible. Nothing is visible at the destination under a tag before putManifest of the top manifest.
 */
import type { Readable } from 'node:stream';
import type { Descriptor } from '../oci/manifest.js';
import type { Digest } from '../oci/digest.js';
import type { Io } from '../oci/io.js';
import type { MediaType } from '../oci/mediatypes.js';

/** A parsed `transport:rest` image name. `transport` is the table key (docker, oci, oci-archive, docker-archive, docker-daemon, dir, tsbuild). */
export interface ImageName {
  readonly transport: string;
  /** The part after `transport:` as the user wrote it (for messages and policy scopes). */
  readonly rest: string;
  /** Canonical string form `transport:rest` (docker: `docker://host/repo:tag`). */
  toString(): string;
  /**
   * The registry reference when the transport has one (docker), else undefined.
   * Used for signature identities and policy.json scope lookup.
   */
  readonly dockerReference?: string | undefined;
  /** policy.json scope for this transport (containers/image PolicyConfigurationIdentity), e.g. `host/repo:tag` or `/abs/dir:tag`. */
  policyIdentity(): string;
  /** Parent scopes, most specific first (containers/image PolicyConfigurationNamespaces). */
  policyNamespaces(): string[];
}

/** Options every transport may use when opening a source or destination. */
export interface OpenOptions extends Io {
  /** Registry credentials `user:password`, overriding auth.json. */
  creds?: string | undefined;
  /** Registry bearer token, overriding auth.json. */
  registryToken?: string | undefined;
  /** Anonymous access: no credentials, auth.json not read (skopeo's --no-creds). */
  noCreds?: boolean | undefined;
  /** false = plain HTTP / no TLS verification allowed for this registry (skopeo's --tls-verify=false). */
  tlsVerify?: boolean | undefined;
  /** auth.json path (--authfile). */
  authfile?: string | undefined;
  /** Directory with CA certs / client certs (skopeo's --cert-dir). */
  certDir?: string | undefined;
  /** Retries on temporary failures (--retry-times). */
  retryTimes?: number | undefined;
  /** User-Agent and similar per-process settings. */
  userAgent?: string | undefined;
  /** More names for the image (skopeo's --additional-tag: docker-archive RepoTags). */
  additionalTags?: readonly string[] | undefined;
  /** containers-registries.d(5) directory (skopeo's global --registries.d): where docker:// lookaside signatures live. */
  registriesDir?: string | undefined;
  /** oci: layouts: the blobs live in this directory (`<dir>/sha256/<hex>`), not `<layout>/blobs` (skopeo's --src/--dest-shared-blob-dir). */
  sharedBlobDir?: string | undefined;
  /** docker-daemon: the daemon's address (skopeo's --src-/--dest-daemon-host, inspect's --daemon-host): unix://PATH, tcp://HOST:PORT (HTTPS), http://, https://. */
  daemonHost?: string | undefined;
}

/**
 * Which signatures of a simple-signing store: `digest` is the manifest they sign; `instance` says it is an instance of
 * the index that is the image's top manifest (dir: `<hex>.signature-N`), not the top manifest itself (`signature-N`).
 * Registries key them by digest only (lookaside `<repo>@sha256=<hex>/signature-N`).
 */
export type SignatureIo = Io & { instance?: boolean | undefined };

/**
 * Where an image's blobs live in a registry, for cross-repository mounts and the blob-info cache: `registry` is
 * the host actually contacted (a mirror, or the location registries.conf rewrites a name to), `repository` the
 * path in it. Only registry transports have one.
 */
export interface BlobLocation {
  readonly registry: string;
  readonly repository: string;
}

export interface ManifestBytes {
  /** The bytes exactly as stored/served: never re-serialized. */
  bytes: Buffer;
  mediaType: MediaType;
  digest: Digest;
}

export interface ImageSource {
  readonly name: ImageName;
  /** Registry sources: where the blobs are read from. */
  readonly blobLocation?: BlobLocation | undefined;
  /**
   * The top manifest (no argument) or a child manifest of an index by digest. Bytes are verified against the
   * digest when one is known (by digest reference or `instance`).
   */
  manifest(instance?: Digest, io?: Io): Promise<ManifestBytes>;
  /**
   * A blob's bytes. Digest and size are verified while streaming by the engine or by the destination's putBlob;
   * a source may also verify, and should skip that when `verify` is false (the engine says so when the bytes are
   * verified downstream anyway: one hash pass instead of two).
   */
  blob(d: Descriptor, io?: Io & { start?: number | undefined; verify?: boolean | undefined }): Promise<Readable>;
  /**
   * Write a blob into `fd` (an open, empty file) and return the digest and size of what was written, computed
   * while writing (the caller verifies them). Optional capability, used with ImageDestination.putBlobWith: the
   * docker source downloads large blobs in a worker thread this way.
   */
  blobToFile?(d: Descriptor, fd: number, io?: Io): Promise<{ digest: Digest; size: number }>;
  /** Tags of the repository (docker) or of the layout/archive; optional capability. */
  tags?(io?: Io): Promise<string[]>;
  /** Referrers of a manifest digest (OCI 1.1 referrers API, or the `sha256-<hex>` tag fallback); optional capability. */
  referrers?(digest: Digest, io?: Io & { artifactType?: string | undefined }): Promise<Descriptor[]>;
  /** Manifest by tag or digest in the same repository (used for `.sig` tags and referrers); optional capability. */
  manifestByRef?(tagOrDigest: string, io?: Io): Promise<ManifestBytes | undefined>;
  /**
   * containers-signature(5) "simple signing" signatures of a manifest (containers/image GetSignatures): opaque blobs
   * (OpenPGP messages), in storage order; [] when there are none. docker: the lookaside of registries.d; dir:
   * `signature-N` files. Optional capability: a source without it has none.
   */
  simpleSignatures?(digest: Digest, io?: SignatureIo): Promise<Buffer[]>;
  /**
   * registries.d `use-sigstore-attachments` for where the image is read from: true/false as configured, undefined
   * when nothing sets it (docker only; optional capability).
   */
  sigstoreAttachments?(): Promise<boolean | undefined>;
  close(): Promise<void>;
}

export interface DestinationCaps {
  /** Manifest media types the destination can store; the engine converts (or fails) otherwise. */
  readonly manifestTypes: readonly MediaType[];
  /** Whether putBlob may run concurrently. */
  readonly parallelPuts: boolean;
  /** Whether the destination stores manifest bytes verbatim (digests preserved). docker-archive does not. */
  readonly preservesDigests: boolean;
  /** Whether signatures / referrers can be stored (registries and OCI layouts yes, archives no). */
  readonly acceptsSignatures: boolean;
  /**
   * What the destination wants done with layer compression when no `--dest-compress-format` is asked for
   * (containers/image's DesiredLayerCompression): 'preserve' (default: dir:), 'compress' (registries, OCI layouts:
   * uncompressed layers are gzipped on the way) or 'decompress' (docker-archive stores plain tars; it may also do
   * this itself in putBlob).
   */
  readonly layerCompression?: 'preserve' | 'compress' | 'decompress' | undefined;
}

/**
 * What putBlob is told about a blob. `digest`/`size` are undefined when the engine produces the content on the
 * fly (recompression, conversion): the destination computes them while streaming (registries: chunked upload and
 * the digest on the final PUT) and returns them.
 */
export interface PutBlobInfo {
  mediaType: MediaType;
  digest?: Digest | undefined;
  size?: number | undefined;
  annotations?: Record<string, string> | undefined;
}

/** putBlob options: `reopen` gives the body again from byte `start` (the source's blob with a Range), so a registry
 * destination can stream in one PATCH and continue an interrupted upload from the registry's offset. */
export type PutBlobIo = Io & { reopen?: ((start: number) => Promise<Readable | AsyncIterable<Uint8Array>>) | undefined };

/** tryReuse options. */
export type ReuseIo = Io & {
  /** Repositories that hold the blob (the source's own): the first may be asked together with the HEAD. */
  mountFrom?: readonly string[] | undefined;
  /** Repositories that probably hold it (the blob-info cache): asked only when the blob is not present. */
  alsoMountFrom?: readonly string[] | undefined;
};

export type ReuseResult =
  /** The blob is already there (HEAD 200): nothing to send. */
  | { kind: 'present'; descriptor: Descriptor }
  /** Cross-repository mount succeeded. */
  | { kind: 'mounted'; descriptor: Descriptor; from: string }
  | { kind: 'absent' };

export interface ImageDestination {
  readonly name: ImageName;
  /** Registry destinations: where the blobs go (mounts are possible from other repositories of that registry). */
  readonly blobLocation?: BlobLocation | undefined;
  readonly caps: DestinationCaps;
  /**
   * Try to avoid sending a blob: present already, or mountable from `mountFrom` / `alsoMountFrom` repositories
   * (same registry, `repo` names without host). Cheap: at most one request per candidate.
   */
  tryReuse(d: Descriptor, io?: ReuseIo): Promise<ReuseResult>;
  /**
   * Store a blob from a stream; verifies digest/size when given (and computes them when not: see PutBlobInfo);
   * returns the stored descriptor; leaves nothing behind on failure.
   */
  putBlob(d: PutBlobInfo, body: Readable | AsyncIterable<Uint8Array>, io?: PutBlobIo): Promise<Descriptor>;
  /**
   * Store a blob that `fill` writes into a file the destination opened (ImageSource.blobToFile), verified against
   * `d` from what `fill` reports, atomically; leaves nothing behind on failure. Optional capability (OCI layouts).
   */
  putBlobWith?(d: Descriptor, fill: (fd: number) => Promise<{ digest: Digest; size: number }>, io?: Io): Promise<Descriptor>;
  /**
   * Store a manifest. `tagOrDigest` undefined = by digest only (children of an index); a tag = also point the tag
   * at it; the manifest's own digest = the top manifest of a destination named without a tag (oci:DIR adds an
   * unnamed index.json entry, docker PUTs by digest). The bytes are stored verbatim.
   */
  putManifest(m: ManifestBytes, tagOrDigest?: string, io?: Io): Promise<void>;
  /** Tag to write when the destination name has none (docker: from the name; oci: the ref in the name). */
  readonly tag?: string | undefined;
  /** Delete a manifest/tag (sync --prune, tscopy delete); optional capability. */
  deleteManifest?(tagOrDigest: string, io?: Io): Promise<void>;
  /** Tags at the destination (sync incremental, prune); optional capability. */
  tags?(io?: Io): Promise<string[]>;
  /** Digest the destination currently has for a tag, if any (sync: one HEAD); optional capability. */
  manifestDigest?(tag: string, io?: Io): Promise<Digest | undefined>;
  /**
   * Store `sigs` as the complete list of simple signatures of a manifest written here (containers/image
   * PutSignatures: what was there for that digest is replaced). Optional capability: a destination without it cannot
   * store them (oci:, archives: as skopeo).
   */
  putSimpleSignatures?(digest: Digest, sigs: readonly Buffer[], io?: SignatureIo): Promise<void>;
  /**
   * Throws, naming why, when putSimpleSignatures could not store signatures here (docker: the registries.d lookaside
   * for writing is not a file:// URL). Called before anything is written; optional.
   */
  checkSimpleSignatures?(io?: Io): Promise<void>;
  /** registries.d `use-sigstore-attachments` for where the image goes (as ImageSource's; optional capability). */
  sigstoreAttachments?(): Promise<boolean | undefined>;
  /** Make what was put durable/visible (archives are written here). */
  commit(io?: Io): Promise<void>;
  close(): Promise<void>;
}

export interface Transport {
  /** Table key: `docker`, `oci`, `oci-archive`, `docker-archive`, `dir`, `tsbuild`. */
  readonly name: string;
  /** Parse the part after `name:`; throws UsageError naming the problem. */
  parse(rest: string): ImageName;
  source(name: ImageName, opts?: OpenOptions): Promise<ImageSource>;
  destination(name: ImageName, opts?: OpenOptions): Promise<ImageDestination>;
}

/** Optional-capability probes (go-containerregistry style). */
export const canListTags = (s: ImageSource): s is ImageSource & Required<Pick<ImageSource, 'tags'>> => typeof s.tags === 'function';
export const canListReferrers = (s: ImageSource): s is ImageSource & Required<Pick<ImageSource, 'referrers'>> =>
  typeof s.referrers === 'function';
