/**
 * `oci-archive:FILE[:REF]`: a tar of an OCI image layout (skopeo's oci-archive: transport). Read in place
 * (OciArchiveReader seeks into the tar); written through a temporary layout that commit() exports as the
 * archive (atomically: temp file + rename), as containers/image does.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { exportOciArchive, OciArchiveReader } from '../../oci/archive.js';
import { OciError, UsageError } from '../../oci/errors.js';
import { OciLayout } from '../../oci/store.js';
import { type Descriptor } from '../../oci/manifest.js';
import { type Digest } from '../../oci/digest.js';
import { type Io } from '../../oci/io.js';
import type { ImageName, ImageSource, ManifestBytes, Transport } from '../types.js';
import { digestRef, manifestBytes } from './common.js';
import { LAYOUT_CAPS, LayoutDestination, parseOciName, type OciName } from './oci.js';

class OciArchiveSource implements ImageSource {
  constructor(
    readonly name: ImageName,
    private readonly reader: OciArchiveReader,
    private readonly ref: string,
  ) {}

  async manifest(instance?: Digest): Promise<ManifestBytes> {
    const d = instance ? await this.reader.find(instance) : await this.reader.resolve(this.ref || undefined);
    if (!d) throw new OciError('MANIFEST_UNKNOWN', `manifest ${instance} not found in OCI archive ${this.reader.path}`);
    return manifestBytes(await this.reader.readBytes(d.digest), d.mediaType, `${this.name}`, d.digest);
  }

  async blob(d: Descriptor, io: Io & { start?: number | undefined } = {}): Promise<Readable> {
    return this.reader.open(d.digest, { signal: io.signal, start: io.start });
  }

  async tags(): Promise<string[]> {
    return this.reader.list().map((e) => e.name);
  }

  async manifestByRef(ref: string): Promise<ManifestBytes | undefined> {
    const d = await this.reader.find(ref);
    return d ? manifestBytes(await this.reader.readBytes(d.digest), d.mediaType, `${this.name}`, d.digest) : undefined;
  }

  async close(): Promise<void> {}
}

class OciArchiveDestination extends LayoutDestination {
  constructor(
    name: ImageName,
    layout: OciLayout,
    tag: string | undefined,
    private readonly file: string,
    private readonly tmp: string,
  ) {
    super(name, layout, tag, { ...LAYOUT_CAPS, acceptsSignatures: false });
  }

  override async commit(io: Io = {}): Promise<void> {
    await exportOciArchive(this.layout, this.file, { signal: io.signal });
  }

  override async close(): Promise<void> {
    await rm(this.tmp, { recursive: true, force: true });
  }
}

export const ociArchiveTransport: Transport = {
  name: 'oci-archive',
  parse: (rest) => parseOciName('oci-archive', rest),
  async source(name) {
    const n = name as OciName;
    const reader = await OciArchiveReader.open(n.dir).catch((e: unknown) => {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new UsageError(`OCI archive ${n.dir} does not exist`);
      throw e;
    });
    return new OciArchiveSource(name, reader, n.ref);
  },
  async destination(name) {
    const n = name as OciName;
    if (n.ref && digestRef(n.ref)) throw new UsageError(`${name}: cannot write to a digest reference (use a tag)`);
    const tmp = await mkdtemp(join(tmpdir(), 'tsimage-ociarchive-'));
    try {
      const layout = await OciLayout.open(join(tmp, 'layout'), { create: true, sync: false });
      return new OciArchiveDestination(name, layout, n.ref || undefined, n.dir, tmp);
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
  },
};
