/**
 * `dir:PATH`: skopeo's directory transport (containers/image directory/): `manifest.json` (the top manifest),
 * `<hex>.manifest.json` (index children), every blob as a file named by its sha256 hex (other algorithms:
 * `<alg>-<hex>`), and a `version` file `Directory Transport Version: 1.1\n`. A destination directory that is
 * not empty must already be a dir: image (it is emptied first, one image per directory, as skopeo does).
 */
import * as fsp from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { digestAlgorithm, digestHex, type Digest } from '../../oci/digest.js';
import { MAX_MANIFEST_SIZE, readAll, type Io } from '../../oci/io.js';
import { MediaTypes } from '../../oci/mediatypes.js';
import { OciError, TsimageError, UsageError } from '../../oci/errors.js';
import { type Descriptor } from '../../oci/manifest.js';
import type { PutBlobInfo, DestinationCaps, ImageDestination, ImageName, ImageSource, ManifestBytes, ReuseResult, SignatureIo, Transport } from '../types.js';
import { explicitPath, LocalName, manifestBytes, pathNamespaces, writeBlobFile, writeBlobFileWith } from './common.js';

export const DIR_VERSION = 'Directory Transport Version: 1.1\n';

interface DirName extends ImageName {
  readonly dir: string;
}

function blobName(d: Digest): string {
  return digestAlgorithm(d) === 'sha256' ? digestHex(d) : `${digestAlgorithm(d)}-${digestHex(d)}`;
}

function isENOENT(e: unknown): boolean {
  return (e as NodeJS.ErrnoException)?.code === 'ENOENT';
}

class DirSource implements ImageSource {
  constructor(
    readonly name: ImageName,
    private readonly dir: string,
  ) {}

  async manifest(instance?: Digest): Promise<ManifestBytes> {
    const file = join(this.dir, instance ? `${blobName(instance)}.manifest.json` : 'manifest.json');
    let bytes: Buffer;
    try {
      bytes = await readAll(createReadStream(file), MAX_MANIFEST_SIZE, file);
    } catch (e) {
      if (isENOENT(e)) throw new OciError('MANIFEST_UNKNOWN', instance ? `manifest ${instance} not found in ${this.name} (${file})` : `${file} does not exist: not a dir: image`);
      throw e;
    }
    return manifestBytes(bytes, undefined, file);
  }

  async blob(d: Descriptor, io: Io & { start?: number | undefined } = {}): Promise<Readable> {
    const file = join(this.dir, blobName(d.digest));
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(file, 'r');
    } catch (e) {
      if (isENOENT(e)) throw new OciError('BLOB_UNKNOWN', `blob ${d.digest} not found in ${this.name} (${file})`);
      throw e;
    }
    const s = fh.createReadStream({ highWaterMark: 512 * 1024, ...(io.start ? { start: io.start } : {}) }) as unknown as Readable;
    if (io.signal) {
      const sig = io.signal;
      const onAbort = () => s.destroy(sig.reason as Error);
      sig.addEventListener('abort', onAbort, { once: true });
      s.once('close', () => sig.removeEventListener('abort', onAbort));
    }
    return s;
  }

  /** `signature-1`, `signature-2`, ... (an index's instance: `<hex>.signature-N`), as containers/image's dir transport. */
  async simpleSignatures(digest: Digest, io: SignatureIo = {}): Promise<Buffer[]> {
    const { readNumberedFiles } = await import('../lookaside.js');
    return readNumberedFiles(this.dir, io.instance ? `${digestHex(digest)}.` : '');
  }

  async close(): Promise<void> {}
}

const DIR_CAPS: DestinationCaps = {
  manifestTypes: [MediaTypes.ociManifest, MediaTypes.ociIndex, MediaTypes.dockerManifest, MediaTypes.dockerManifestList],
  parallelPuts: true,
  preservesDigests: true,
  acceptsSignatures: true,
  layerCompression: 'preserve',
};

class DirDestination implements ImageDestination {
  readonly caps = DIR_CAPS;
  readonly tag = undefined;
  constructor(
    readonly name: ImageName,
    private readonly dir: string,
  ) {}

  static async open(name: ImageName, dir: string): Promise<DirDestination> {
    let entries: string[] | undefined;
    try {
      entries = await fsp.readdir(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOTDIR') throw new UsageError(`${dir} is not a directory`);
      if (!isENOENT(e)) throw e;
    }
    if (entries === undefined) await fsp.mkdir(dir, { recursive: true });
    else if (entries.length > 0) {
      const version = await fsp.readFile(join(dir, 'version'), 'utf8').catch(() => undefined);
      if (version !== DIR_VERSION)
        throw new UsageError(`${dir} is not empty and is not a dir: image (no ${JSON.stringify(DIR_VERSION.trim())} version file): not a containers image directory, don't want to overwrite important data`);
      // One image per directory: remove what the previous image left.
      await Promise.all(entries.map((e) => fsp.rm(join(dir, e), { recursive: true, force: true })));
    }
    await fsp.writeFile(join(dir, 'version'), DIR_VERSION);
    return new DirDestination(name, dir);
  }

  async tryReuse(d: Descriptor): Promise<ReuseResult> {
    const st = await fsp.stat(join(this.dir, blobName(d.digest))).catch(() => undefined);
    if (st?.isFile() && st.size === d.size) return { kind: 'present', descriptor: { mediaType: d.mediaType, digest: d.digest, size: d.size } };
    return { kind: 'absent' };
  }

  putBlob(d: PutBlobInfo, body: Readable | AsyncIterable<Uint8Array>, io: Io = {}): Promise<Descriptor> {
    return writeBlobFile(this.dir, blobName, d, body, io);
  }

  /** A blob written by the source into our temp file (a registry's, downloaded in a worker thread). */
  putBlobWith(d: Descriptor, fill: (fd: number) => Promise<{ digest: Digest; size: number }>): Promise<Descriptor> {
    return writeBlobFileWith(this.dir, blobName, d, fill);
  }

  async putManifest(m: ManifestBytes, tagOrDigest?: string): Promise<void> {
    const file = tagOrDigest === undefined ? `${blobName(m.digest)}.manifest.json` : 'manifest.json';
    const tmp = join(this.dir, `.tmp-${file}-${process.pid}`);
    try {
      await fsp.writeFile(tmp, m.bytes);
      await fsp.rename(tmp, join(this.dir, file));
    } catch (e) {
      await fsp.rm(tmp, { force: true }).catch(() => {});
      throw new TsimageError(`${this.name}: writing ${file}: ${(e as Error).message}`, { cause: e });
    }
  }

  /** `signature-N` files (an instance's: `<hex>.signature-N`), each written atomically, mode 0644. */
  async putSimpleSignatures(digest: Digest, sigs: readonly Buffer[], io: SignatureIo = {}): Promise<void> {
    const { writeFileAtomic } = await import('../lookaside.js');
    const prefix = io.instance ? `${digestHex(digest)}.` : '';
    for (let i = 0; i < sigs.length; i++) await writeFileAtomic(join(this.dir, `${prefix}signature-${i + 1}`), sigs[i]!);
  }

  async commit(): Promise<void> {}
  async close(): Promise<void> {}
}

export const dirTransport: Transport = {
  name: 'dir',
  parse(rest) {
    if (rest === '') throw new UsageError('invalid dir: reference: empty path');
    const dir = explicitPath(rest, 'dir:');
    return Object.assign(new LocalName('dir', rest, dir, pathNamespaces(dir, false)), { dir });
  },
  async source(name) {
    const dir = (name as DirName).dir;
    const st = await fsp.stat(dir).catch(() => undefined);
    if (!st?.isDirectory()) throw new UsageError(`${name}: ${dir} is not a directory`);
    return new DirSource(name, dir);
  },
  destination(name) {
    return DirDestination.open(name, (name as DirName).dir);
  },
};
