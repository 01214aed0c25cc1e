/**
 * The `docker://` transport: images in a registry, over the one RegistryClient.
 * Names as containers/image's docker transport: `docker://host/repo:tag` or `docker://host/repo@digest`
 * (Docker Hub normalisation; a tag and a digest together are refused), policy scopes from the full name.
 */
import type { Readable } from 'node:stream';
import {
  ALL_MANIFEST_TYPES,
  OciError,
  UsageError,
  formatReference,
  isDigest,
  parseReference,
  repositoryName,
  type Descriptor,
  type Digest,
  type ImageReference,
  type Io,
} from '../registry/oci.js';
import type {
  BlobLocation,
  ReuseIo,
  PutBlobInfo,
  PutBlobIo as TransportPutBlobIo,
  DestinationCaps,
  ImageDestination,
  ImageName,
  ImageSource,
  ManifestBytes,
  OpenOptions,
  ReuseResult,
  SignatureIo,
  Transport,
} from '../types.js';
import { refuseBlockedRegistry, pullSources, pushLocation, tlsVerifyFor, type PullSource } from '../registry/registries.js';
import { registryClient, type BlobUploadIo, type RegistryClient, type RegistryClientOptions } from '../registry/client.js';

export class DockerImageName implements ImageName {
  readonly transport = 'docker';
  constructor(
    readonly ref: ImageReference,
    readonly rest: string,
  ) {}
  toString(): string {
    return `docker://${formatReference(this.ref)}`;
  }
  get dockerReference(): string {
    return formatReference(this.ref);
  }
  /** `host/repo:tag` or `host/repo@digest` (containers/image PolicyConfigurationIdentity). */
  policyIdentity(): string {
    return formatReference(this.ref);
  }
  /** `host/a/b`, `host/a`, `host`, then `*.domain` wildcards (containers/image DockerReferenceNamespaces). */
  policyNamespaces(): string[] {
    const out: string[] = [];
    let name = repositoryName(this.ref);
    for (;;) {
      out.push(name);
      const i = name.lastIndexOf('/');
      if (i < 0) break;
      name = name.slice(0, i);
    }
    let host = this.ref.registry;
    if (host.startsWith('[')) return out;
    host = host.replace(/:\d+$/, '');
    for (;;) {
      const dot = host.indexOf('.');
      if (dot < 0) break;
      host = host.slice(dot + 1);
      out.push(`*.${host}`);
    }
    return out;
  }
}

/** Parse the part after `docker:` (it must start with `//`). */
export function parseDockerName(rest: string): DockerImageName {
  if (!rest.startsWith('//')) throw new UsageError(`invalid docker image name "docker:${rest}": expected docker://[host/]repo[:tag|@digest]`);
  const ref = parseReference(rest.slice(2));
  if (ref.tag && ref.digest)
    throw new UsageError(`docker://${rest.slice(2)}: references with both a tag and a digest are not supported (use one)`);
  return new DockerImageName(ref, rest);
}

function clientOptions(o: OpenOptions = {}): RegistryClientOptions {
  return {
    tlsVerify: o.tlsVerify,
    creds: o.noCreds ? { source: '--no-creds' } : o.creds,
    registryToken: o.registryToken,
    authfile: o.authfile,
    certDir: o.certDir,
    retryTimes: o.retryTimes,
    userAgent: o.userAgent,
  };
}

function nameOf(name: ImageName): DockerImageName {
  if (name instanceof DockerImageName) return name;
  return parseDockerName(name.rest);
}

function signalOf(...ios: (Io | undefined)[]): AbortSignal | undefined {
  for (const io of ios) if (io?.signal) return io.signal;
  return undefined;
}

export class DockerSource implements ImageSource {
  /** The top manifest, when opening already fetched it (trying mirrors). */
  private first: ManifestBytes | undefined;

  /** `at`: where the bytes come from (a mirror, or the location registries.conf rewrites the name to). */
  constructor(
    readonly name: DockerImageName,
    readonly client: RegistryClient,
    private readonly io: Io = {},
    readonly at: ImageReference = name.ref,
  ) {}

  private get repo(): string {
    return this.at.repository;
  }

  get blobLocation(): BlobLocation {
    return { registry: this.at.registry, repository: this.at.repository };
  }

  async manifest(instance?: Digest, io?: Io): Promise<ManifestBytes> {
    if (instance === undefined && this.first) return this.first;
    const ref = instance ?? this.name.ref.digest ?? this.name.ref.tag ?? 'latest';
    return this.client.getManifest(this.repo, ref, { signal: signalOf(io, this.io) });
  }

  /** Fetch the top manifest now (a pull source that does not have the image fails here, and the next is tried). */
  async prime(io?: Io): Promise<void> {
    this.first = await this.manifest(undefined, io);
  }

  async blob(d: Descriptor, io?: Io & { start?: number | undefined; verify?: boolean | undefined }): Promise<Readable> {
    return this.client.getBlob(this.repo, d, { signal: signalOf(io, this.io), onProgress: io?.onProgress, start: io?.start, verify: io?.verify });
  }

  async blobToFile(d: Descriptor, fd: number, io?: Io): Promise<{ digest: Digest; size: number }> {
    return this.client.getBlobToFile(this.repo, d, fd, { signal: signalOf(io, this.io), onProgress: io?.onProgress });
  }

  async tags(io?: Io): Promise<string[]> {
    return this.client.listTags(this.repo, { signal: signalOf(io, this.io) });
  }

  async referrers(digest: Digest, io?: Io & { artifactType?: string | undefined }): Promise<Descriptor[]> {
    return this.client.referrers(this.repo, digest, { signal: signalOf(io, this.io), artifactType: io?.artifactType });
  }

  async manifestByRef(tagOrDigest: string, io?: Io): Promise<ManifestBytes | undefined> {
    try {
      return await this.client.getManifest(this.repo, tagOrDigest, { signal: signalOf(io, this.io) });
    } catch (e) {
      if (e instanceof OciError && (e.code === 'MANIFEST_UNKNOWN' || e.status === 404)) return undefined;
      throw e;
    }
  }

  /** registries.d directory (--registries.d) for the lookaside. */
  registriesDir: string | undefined;

  /** registries.d use-sigstore-attachments for where the image is read from (undefined: not set). */
  async sigstoreAttachments(): Promise<boolean | undefined> {
    const { sigstoreAttachmentsOf } = await import('./docker-lookaside.js');
    return sigstoreAttachmentsOf(this.at, this.registriesDir);
  }

  /** Simple signatures from the registries.d lookaside of where the image is read from (mirror or location). */
  async simpleSignatures(digest: Digest, io?: SignatureIo): Promise<Buffer[]> {
    const { readLookasideOf } = await import('./docker-lookaside.js');
    return readLookasideOf(this.client, this.at, this.registriesDir, digest, { signal: signalOf(io, this.io) });
  }

  async close(): Promise<void> {
    /* pools are shared per registry (closeRegistryClients) */
  }
}

const CAPS: DestinationCaps = { manifestTypes: ALL_MANIFEST_TYPES, parallelPuts: true, preservesDigests: true, acceptsSignatures: true, layerCompression: 'compress' };

export class DockerDestination implements ImageDestination {
  readonly caps = CAPS;
  /** `at`: where the image goes (the location registries.conf rewrites the name to; never a mirror). */
  constructor(
    readonly name: DockerImageName,
    readonly client: RegistryClient,
    private readonly io: Io = {},
    readonly at: ImageReference = name.ref,
  ) {
    client.wantPush(at.repository);
  }

  private get repo(): string {
    return this.at.repository;
  }

  get blobLocation(): BlobLocation {
    return { registry: this.at.registry, repository: this.at.repository };
  }

  get tag(): string | undefined {
    return this.name.ref.digest ? undefined : (this.name.ref.tag ?? 'latest');
  }

  async tryReuse(d: Descriptor, io?: ReuseIo): Promise<ReuseResult> {
    const signal = signalOf(io, this.io);
    // HEAD first, then mounts (containers/image's order). Not both at once: distribution 2.8 writes a mount's link
    // file in place, and a HEAD of the same blob that reads it half-written answers 500.
    const st = await this.client.statBlob(this.repo, d.digest, { signal });
    if (st) return { kind: 'present', descriptor: { ...d, size: st.size >= 0 ? st.size : d.size } };
    const candidates = [...(io?.mountFrom ?? []), ...(io?.alsoMountFrom ?? [])].filter((from, i, all) => from !== this.repo && all.indexOf(from) === i);
    for (const from of candidates) {
      if (await this.client.mountBlob(this.repo, d.digest, from, { signal })) return { kind: 'mounted', descriptor: d, from };
    }
    return { kind: 'absent' };
  }

  async putBlob(d: PutBlobInfo, body: Readable | AsyncIterable<Uint8Array>, io?: TransportPutBlobIo): Promise<Descriptor> {
    const r = await this.client.putBlob(
      this.repo,
      { digest: d.digest && isDigest(d.digest) ? d.digest : undefined, size: d.size !== undefined && d.size >= 0 ? d.size : undefined },
      body,
      { signal: signalOf(io, this.io), onProgress: io?.onProgress, reopen: io?.reopen as BlobUploadIo['reopen'] },
    );
    return { ...d, digest: r.digest, size: r.size };
  }

  async putManifest(m: ManifestBytes, tagOrDigest?: string, io?: Io): Promise<void> {
    await this.client.putManifest(this.repo, tagOrDigest ?? m.digest, m.bytes, m.mediaType, { signal: signalOf(io, this.io) });
  }

  async deleteManifest(tagOrDigest: string, io?: Io): Promise<void> {
    await this.client.deleteManifest(this.repo, tagOrDigest, { signal: signalOf(io, this.io) });
  }

  async tags(io?: Io): Promise<string[]> {
    try {
      return await this.client.listTags(this.repo, { signal: signalOf(io, this.io) });
    } catch (e) {
      // a repository that does not exist yet has no tags
      if (e instanceof OciError && (e.code === 'NAME_UNKNOWN' || e.status === 404)) return [];
      throw e;
    }
  }

  async manifestDigest(tag: string, io?: Io): Promise<Digest | undefined> {
    return (await this.client.headManifest(this.repo, tag, { signal: signalOf(io, this.io) }))?.digest;
  }

  /** registries.d directory (--registries.d) for the lookaside. */
  registriesDir: string | undefined;

  /** registries.d use-sigstore-attachments for where the image goes (undefined: not set). */
  async sigstoreAttachments(): Promise<boolean | undefined> {
    const { sigstoreAttachmentsOf } = await import('./docker-lookaside.js');
    return sigstoreAttachmentsOf(this.at, this.registriesDir);
  }

  async checkSimpleSignatures(): Promise<void> {
    const { checkLookasideOf } = await import('./docker-lookaside.js');
    await checkLookasideOf(this.at, this.registriesDir);
  }

  /** Simple signatures to the registries.d lookaside (lookaside-staging, else lookaside; file:// only). */
  async putSimpleSignatures(digest: Digest, sigs: readonly Buffer[]): Promise<void> {
    const { writeLookasideOf } = await import('./docker-lookaside.js');
    await writeLookasideOf(this.at, this.registriesDir, digest, sigs);
  }

  async commit(): Promise<void> {}

  async close(): Promise<void> {}
}

/** The RegistryClient a docker name and options map to (shared per registry and options). */
export function dockerClient(name: ImageName, opts?: OpenOptions): RegistryClient {
  return registryClient(nameOf(name).ref.registry, clientOptions(opts));
}

const envOf = (opts?: OpenOptions) => (opts as { env?: NodeJS.ProcessEnv } | undefined)?.env;

/** registries.conf `blocked = true`: refuse before any request (containers/image does the same). */
async function refuseBlocked(n: DockerImageName, opts?: OpenOptions): Promise<void> {
  await refuseBlockedRegistry(repositoryName(n.ref), n.toString(), envOf(opts));
}

/** The name's reference moved to `repository` (`host/path`), same tag or digest; and its client. */
function placed(n: DockerImageName, where: PullSource, opts?: OpenOptions): { at: ImageReference; client: RegistryClient } {
  const at = parseReference(`${where.repository}${n.ref.digest ? `@${n.ref.digest}` : `:${n.ref.tag ?? 'latest'}`}`);
  // registries.conf's insecure for this location or mirror, unless the command line said otherwise
  const tlsVerify = tlsVerifyFor(where, opts?.tlsVerify);
  return { at, client: registryClient(at.registry, clientOptions({ ...opts, tlsVerify })) };
}

/**
 * The client source() (push: destination()) talks to first: the first pull source (or the push location) with its
 * registries.conf TLS setting (never a blocked one). For a warm-up ping that the copy then reuses.
 */
export async function firstClient(name: ImageName, opts: OpenOptions | undefined, push: boolean): Promise<RegistryClient> {
  const n = nameOf(name);
  await refuseBlocked(n, opts);
  const repo = repositoryName(n.ref);
  const where = push ? await pushLocation(repo, envOf(opts)) : (await pullSources(repo, n.ref.digest !== undefined, envOf(opts)))[0]!;
  return placed(n, where, opts).client;
}

export const dockerTransport: Transport = {
  name: 'docker',
  parse: parseDockerName,
  async source(name: ImageName, opts?: OpenOptions): Promise<ImageSource> {
    const n = nameOf(name);
    await refuseBlocked(n, opts);
    const io = { signal: opts?.signal };
    const sources = await pullSources(repositoryName(n.ref), n.ref.digest !== undefined, envOf(opts));
    const withDir = <T extends { registriesDir: string | undefined }>(x: T): T => Object.assign(x, { registriesDir: opts?.registriesDir });
    // (the entry matching the name decides insecure, prefix-level: a client per host and TLS setting)
    if (sources.length === 1 && sources[0]!.repository === repositoryName(n.ref))
      return withDir(new DockerSource(n, dockerClient(n, { ...opts, tlsVerify: tlsVerifyFor(sources[0]!, opts?.tlsVerify) }), io));
    // registries.conf mirrors (then the location): the first that serves the manifest is the source
    const failures: string[] = [];
    let last: unknown;
    for (const where of sources) {
      const { at, client } = placed(n, where, opts);
      const src = withDir(new DockerSource(n, client, io, at));
      if (sources.length === 1) return src;
      try {
        await src.prime(io);
        return src;
      } catch (e) {
        if (opts?.signal?.aborted) throw e;
        last = e;
        failures.push(`${where.mirror ? 'mirror ' : ''}${formatReference(at)}: ${(e as Error).message}`);
      }
    }
    const code = last instanceof OciError ? last.code : 'UNAVAILABLE';
    throw new OciError(code, `${n}: no pull source has it (registries.conf): ${failures.join('; ')}`, { cause: last, temporary: false });
  },
  async destination(name: ImageName, opts?: OpenOptions): Promise<ImageDestination> {
    const n = nameOf(name);
    await refuseBlocked(n, opts);
    const io = { signal: opts?.signal };
    const where = await pushLocation(repositoryName(n.ref), envOf(opts));
    const dest = where.repository === repositoryName(n.ref) ? new DockerDestination(n, dockerClient(n, { ...opts, tlsVerify: tlsVerifyFor(where, opts?.tlsVerify) }), io) : (() => {
      const { at, client } = placed(n, where, opts);
      return new DockerDestination(n, client, io, at);
    })();
    dest.registriesDir = opts?.registriesDir;
    return dest;
  },
};
