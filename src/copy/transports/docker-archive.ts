/**
 * `docker-archive:FILE[:NAME:TAG|:@N]`: `docker save` archives (skopeo's docker-archive: transport) over
 * src/oci's DockerArchiveReader/Writer. As a source an image is a Docker schema 2 manifest whose layers are the
 * uncompressed tars (digests = diffIDs), as skopeo presents it; as a destination layers are stored uncompressed
 * (verified against their diffIDs), the config verbatim, and the archive is written at commit().
 */
import * as fsp from 'node:fs/promises';
import { Readable } from 'node:stream';
import { DockerArchiveReader, DockerArchiveWriter, dockerRepoTag } from '../../oci/archive.js';
import { isIndexType, isLayerType, MediaTypes } from '../../oci/mediatypes.js';
import { MAX_MANIFEST_SIZE, readAll, type Io } from '../../oci/io.js';
import { OciError, TsimageError, UsageError } from '../../oci/errors.js';
import { parseConfig, parseManifest, type Descriptor } from '../../oci/manifest.js';
import { parseReference } from '../../oci/reference.js';
import { verifying, type Digest } from '../../oci/digest.js';
import type { PutBlobInfo, DestinationCaps, ImageDestination, ImageName, ImageSource, ManifestBytes, ReuseResult, Transport } from '../types.js';
import { explicitPath, LocalName, pathNamespaces } from './common.js';

interface DockerArchiveName extends ImageName {
  readonly file: string;
  /** Normalised `host/repo:tag`, or undefined. */
  readonly ref: string | undefined;
  readonly index: number | undefined;
}

/** Exported for docker-daemon: (a `docker save` stream read as a docker-archive). */
export class DockerArchiveSource implements ImageSource {
  constructor(
    readonly name: ImageName,
    private readonly reader: DockerArchiveReader,
    private readonly i: number,
  ) {}

  async manifest(instance?: Digest): Promise<ManifestBytes> {
    const img = await this.reader.image(this.i);
    if (instance && instance !== img.manifest.digest)
      throw new OciError('MANIFEST_UNKNOWN', `${this.name}: no manifest ${instance} (a docker-archive image has one manifest)`);
    return { bytes: img.manifest.bytes, mediaType: img.manifest.mediaType, digest: img.manifest.digest };
  }

  blob(d: Descriptor, io: Io = {}): Promise<Readable> {
    return this.reader.blob(this.i, d.digest, { signal: io.signal });
  }

  async tags(): Promise<string[]> {
    return (await this.reader.image(this.i)).repoTags;
  }

  async close(): Promise<void> {}
}

const CAPS: DestinationCaps = {
  // The archive keeps no manifest: config and layers are what is written, so either schema 2 or OCI will do.
  manifestTypes: [MediaTypes.dockerManifest, MediaTypes.ociManifest],
  parallelPuts: true,
  preservesDigests: false,
  acceptsSignatures: false,
  // Layers are decompressed by the writer itself (verified against the config's diffIDs).
  layerCompression: 'preserve',
};

/**
 * Where commit() writes the archive: a file path, or a function that takes the writer (docker-daemon: streams it into
 * the daemon's load request).
 */
export type DockerArchiveOutput = string | ((writer: DockerArchiveWriter, io: Io) => Promise<void>);

export class DockerArchiveDestination implements ImageDestination {
  readonly caps = CAPS;
  private readonly writer = new DockerArchiveWriter();
  private readonly configs = new Map<Digest, Buffer>();
  /** blob digest -> diffID */
  private readonly layers = new Map<Digest, Digest>();
  private added = false;

  constructor(
    readonly name: ImageName,
    private readonly output: DockerArchiveOutput,
    readonly tag: string | undefined,
    private readonly additionalTags: string[] = [],
  ) {}

  async tryReuse(): Promise<ReuseResult> {
    return { kind: 'absent' };
  }

  async putBlob(d: PutBlobInfo, body: Readable | AsyncIterable<Uint8Array>, io: Io = {}): Promise<Descriptor> {
    if (!isLayerType(d.mediaType)) {
      const bytes = await readAll(body, MAX_MANIFEST_SIZE, `config ${d.digest ?? ''}`);
      const desc = { mediaType: d.mediaType, digest: this.writer.addConfig(bytes), size: bytes.length };
      this.configs.set(desc.digest, bytes);
      return desc;
    }
    if (!d.digest) throw new TsimageError('docker-archive destination: a layer without a digest');
    const v = verifying({ digest: d.digest, size: d.size, what: `layer ${d.digest}` });
    const src = body instanceof Readable ? body : Readable.from(body);
    src.on('error', (e) => v.destroy(e));
    const { diffID } = await this.writer.addLayer(undefined, src.pipe(v), io);
    this.layers.set(d.digest, diffID);
    return { mediaType: d.mediaType, digest: d.digest, size: d.size ?? 0 };
  }

  async putManifest(m: ManifestBytes, tagOrDigest?: string): Promise<void> {
    if (isIndexType(m.mediaType)) throw new UsageError(`${this.name}: a docker-archive holds single-platform images: copy one platform (no --all)`);
    if (tagOrDigest === undefined) throw new UsageError(`${this.name}: a docker-archive cannot hold manifest list children`);
    const p = parseManifest(m.bytes, m.mediaType);
    if (p.kind !== 'manifest') throw new UsageError(`${this.name}: not an image manifest`);
    const configBytes = this.configs.get(p.doc.config.digest);
    if (!configBytes) throw new TsimageError(`${this.name}: config ${p.doc.config.digest} was not stored before the manifest`);
    const diffIDs = parseConfig(configBytes).rootfs.diff_ids;
    const layers = p.doc.layers.map((l, i) => {
      const diffID = this.layers.get(l.digest);
      if (!diffID) throw new TsimageError(`${this.name}: layer ${l.digest} was not stored before the manifest`);
      if (diffIDs[i] !== diffID) throw new OciError('DIGEST_INVALID', `layer ${i} (${l.digest}) uncompresses to ${diffID}, but the config lists diffID ${diffIDs[i]}`);
      return diffID;
    });
    if (diffIDs.length !== layers.length) throw new OciError('MANIFEST_INVALID', `the config lists ${diffIDs.length} diffIDs for ${layers.length} layers`);
    this.writer.addImage({ config: p.doc.config.digest, layers, repoTags: [...(this.tag ? [this.tag] : []), ...this.additionalTags] });
    this.added = true;
  }

  async commit(io: Io = {}): Promise<void> {
    if (!this.added) throw new TsimageError(`${this.name}: no image to write`);
    if (typeof this.output === 'string') await this.writer.write(this.output, { signal: io.signal });
    else await this.output(this.writer, { signal: io.signal });
  }

  async close(): Promise<void> {
    await this.writer.close();
  }
}

/** skopeo's --additional-tag values as RepoTags (docker-archive: and docker-daemon: destinations). */
export function additionalRepoTags(tags: readonly string[] | undefined): string[] {
  return (tags ?? []).map((t) => {
    try {
      return dockerRepoTag(t);
    } catch (e) {
      throw new UsageError(`--additional-tag ${JSON.stringify(t)}: ${(e as Error).message}`);
    }
  });
}

export const dockerArchiveTransport: Transport = {
  name: 'docker-archive',
  parse(rest) {
    const i = rest.indexOf(':');
    const path = i < 0 ? rest : rest.slice(0, i);
    const refPart = i < 0 ? '' : rest.slice(i + 1);
    if (path === '') throw new UsageError('docker-archive reference: empty path');
    let ref: string | undefined;
    let index: number | undefined;
    if (refPart.startsWith('@')) {
      if (!/^@\d+$/.test(refPart)) throw new UsageError(`Invalid source index ${refPart} in docker-archive:${rest}`);
      index = Number(refPart.slice(1));
    } else if (refPart !== '') {
      let r;
      try {
        r = parseReference(refPart);
      } catch {
        throw new UsageError(`docker-archive reference ${refPart} is not a valid image reference`);
      }
      if (r.digest) throw new UsageError(`docker-archive doesn't support digest references: ${refPart}`);
      ref = dockerRepoTag(refPart);
    }
    const file = explicitPath(path, 'docker-archive');
    // containers/image: the identity is the path only (a policy scope per file, not per image in it).
    const name = new LocalName('docker-archive', rest, file, pathNamespaces(file, false), ref);
    return Object.assign(name, { file, ref, index });
  },
  async source(name) {
    const n = name as DockerArchiveName;
    const reader = await DockerArchiveReader.open(n.file).catch((e: unknown) => {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new UsageError(`docker-archive ${n.file} does not exist`);
      throw e;
    });
    return new DockerArchiveSource(name, reader, reader.select(n.index ?? n.ref));
  },
  async destination(name, opts) {
    const n = name as DockerArchiveName;
    const additional = additionalRepoTags(opts?.additionalTags);
    if (n.index !== undefined) throw new UsageError(`${name}: a source index (@N) cannot be a destination`);
    const st = await fsp.stat(n.file).catch(() => undefined);
    if (st && !st.isFile()) throw new UsageError(`docker-archive ${n.file} exists and is not a regular file`);
    if (st && st.size > 0) throw new UsageError(`docker-archive doesn't support modifying existing images (${n.file} exists)`);
    return new DockerArchiveDestination(name, n.file, n.ref, additional);
  },
};
