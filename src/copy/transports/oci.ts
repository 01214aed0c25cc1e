/**
 * `oci:DIR[:REF]`: an OCI image layout directory (skopeo's oci: transport) over src/oci's OciLayout.
 * REF is an `org.opencontainers.image.ref.name` (a tag) or a manifest digest; without one, the source is the
 * layout's only image and the destination adds an unnamed index.json entry.
 */
import type { Readable } from 'node:stream';
import { resolve } from 'node:path';
import { MediaTypes } from '../../oci/mediatypes.js';
import { REF_NAME_ANNOTATION, OciLayout, validateRefName } from '../../oci/store.js';
import { OciError, UsageError } from '../../oci/errors.js';
import { type Descriptor } from '../../oci/manifest.js';
import { type Digest } from '../../oci/digest.js';
import { type Io } from '../../oci/io.js';
import type {
  PutBlobInfo,
  DestinationCaps,
  ImageDestination,
  ImageName,
  ImageSource,
  ManifestBytes,
  OpenOptions,
  ReuseResult,
  Transport,
} from '../types.js';
import { isAttachmentTag } from '../sign/attachments.js';
import { digestRef, explicitPath, LocalName, manifestBytes, pathNamespaces, splitPathAndRef } from './common.js';

/** An image source over an OCI layout; `refs` are tried in order (the first that exists is the image). */
export class LayoutSource implements ImageSource {
  constructor(
    readonly name: ImageName,
    readonly layout: OciLayout,
    private readonly refs: string[],
  ) {}

  private async top(): Promise<Descriptor> {
    if (this.refs.length === 0) {
      // the layout's one image, not counting signatures (.sig tags), referrers fallback indexes and referrers
      const images = (await this.layout.readIndex()).manifests.filter((m) => {
        const n = m.annotations?.[REF_NAME_ANNOTATION];
        return !(n && isAttachmentTag(n)) && !m.artifactType;
      });
      return images.length === 1 ? structuredClone(images[0]!) : this.layout.resolve();
    }
    for (const r of this.refs) {
      const d = await this.layout.find(r);
      if (d) return d;
    }
    throw new OciError('MANIFEST_UNKNOWN', `no image ${JSON.stringify(this.refs[0])} in OCI layout ${this.layout.dir}`);
  }

  async manifest(instance?: Digest, _io?: Io): Promise<ManifestBytes> {
    const d = instance ? await this.layout.find(instance) : await this.top();
    if (!d) throw new OciError('MANIFEST_UNKNOWN', `manifest ${instance} not found in OCI layout ${this.layout.dir}`);
    const bytes = await this.layout.readBytes(d.digest);
    return manifestBytes(bytes, d.mediaType, `${this.name}`, d.digest);
  }

  async blob(d: Descriptor, io: Io & { start?: number | undefined } = {}): Promise<Readable> {
    return this.layout.open(d.digest, { signal: io.signal, start: io.start });
  }

  async tags(): Promise<string[]> {
    return (await this.layout.list()).map((e) => e.name);
  }

  async manifestByRef(ref: string): Promise<ManifestBytes | undefined> {
    const d = await this.layout.find(ref);
    if (!d) return undefined;
    return manifestBytes(await this.layout.readBytes(d.digest), d.mediaType, `${this.name}`, d.digest);
  }

  async close(): Promise<void> {}
}

export const LAYOUT_CAPS: DestinationCaps = {
  manifestTypes: [MediaTypes.ociManifest, MediaTypes.ociIndex],
  parallelPuts: true,
  preservesDigests: true,
  acceptsSignatures: true,
  layerCompression: 'compress',
};

/** An image destination over an OCI layout. Index.json changes only in putManifest of the top manifest. */
export class LayoutDestination implements ImageDestination {
  readonly caps: DestinationCaps;
  constructor(
    readonly name: ImageName,
    readonly layout: OciLayout,
    readonly tag: string | undefined,
    caps: DestinationCaps = LAYOUT_CAPS,
  ) {
    this.caps = caps;
  }

  async tryReuse(d: Descriptor): Promise<ReuseResult> {
    const st = await this.layout.stat(d.digest);
    if (st && st.size === d.size) return { kind: 'present', descriptor: { mediaType: d.mediaType, digest: d.digest, size: d.size } };
    return { kind: 'absent' };
  }

  async putBlob(d: PutBlobInfo, body: Readable | AsyncIterable<Uint8Array>, io: Io = {}): Promise<Descriptor> {
    const stored = await this.layout.ingest({ digest: d.digest, size: d.size, mediaType: d.mediaType }, body, { signal: io.signal, onProgress: io.onProgress });
    return stored;
  }

  async putBlobWith(d: Descriptor, fill: (fd: number) => Promise<{ digest: Digest; size: number }>, io: Io = {}): Promise<Descriptor> {
    return this.layout.ingestWith({ digest: d.digest, size: d.size, mediaType: d.mediaType }, fill, { signal: io.signal });
  }

  async putManifest(m: ManifestBytes, tagOrDigest?: string): Promise<void> {
    const desc = await this.layout.putBytes(m.mediaType, m.bytes);
    if (desc.digest !== m.digest) throw new OciError('DIGEST_INVALID', `manifest digest ${m.digest} given for content that hashes to ${desc.digest}`);
    if (tagOrDigest === undefined) return;
    if (tagOrDigest === m.digest) await this.layout.addManifest(desc);
    else await this.layout.tag(tagOrDigest, desc);
  }

  async deleteManifest(tagOrDigest: string): Promise<void> {
    const d = digestRef(tagOrDigest);
    const removed = d ? await this.layout.removeManifest(d) : await this.layout.untag(tagOrDigest);
    if (!removed) throw new OciError('MANIFEST_UNKNOWN', `no image ${JSON.stringify(tagOrDigest)} in OCI layout ${this.layout.dir}`);
  }

  async tags(): Promise<string[]> {
    return (await this.layout.list()).map((e) => e.name);
  }

  async manifestDigest(tag: string): Promise<Digest | undefined> {
    return (await this.layout.find(tag))?.digest;
  }

  async commit(): Promise<void> {}
  async close(): Promise<void> {}
}

export interface OciName extends ImageName {
  readonly dir: string;
  readonly ref: string;
}

export function parseOciName(transport: string, rest: string): OciName {
  const { path, ref } = splitPathAndRef(rest);
  if (path === '') throw new UsageError(`invalid ${transport} reference ${JSON.stringify(`${transport}:${rest}`)}: empty path`);
  if (ref !== '' && !digestRef(ref)) {
    try {
      validateRefName(ref);
    } catch {
      throw new UsageError(`Invalid image ${ref}: not a valid ${transport}: reference name (ref names are [A-Za-z0-9] components joined by - . _ : @ + or --, separated by /)`);
    }
  }
  const dir = explicitPath(path, transport);
  const identity = ref ? `${dir}:${ref}` : dir;
  const name = new LocalName(transport, rest, identity, pathNamespaces(dir, true));
  return Object.assign(name, { dir, ref });
}

/** skopeo's shared blob directory (an absolute path: the layout's own relative paths stay relative to the cwd). */
function sharedBlobs(opts?: OpenOptions): string | undefined {
  return opts?.sharedBlobDir ? resolve(opts.sharedBlobDir) : undefined;
}

export const ociTransport: Transport = {
  name: 'oci',
  parse: (rest) => parseOciName('oci', rest),
  async source(name, opts?: OpenOptions) {
    const n = name as OciName;
    const layout = await OciLayout.open(n.dir, { blobsDir: sharedBlobs(opts) });
    return new LayoutSource(name, layout, n.ref ? [n.ref] : []);
  },
  async destination(name: ImageName, opts?: OpenOptions) {
    const n = name as OciName;
    if (n.ref && digestRef(n.ref)) throw new UsageError(`${name}: cannot write to a digest reference (use a tag)`);
    const layout = await OciLayout.open(n.dir, { create: true, blobsDir: sharedBlobs(opts) });
    return new LayoutDestination(name, layout, n.ref || undefined);
  },
};
