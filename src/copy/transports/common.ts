/** Helpers shared by the local transports (names, paths, manifest reads). */
import { createWriteStream, realpathSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { digestOf, parseDigest, verifying, type Digest } from '../../oci/digest.js';
import { guessManifestType, isIndexType, isManifestType, isSchema1Type } from '../../oci/mediatypes.js';
import { OciError, UsageError } from '../../oci/errors.js';
import { fillFileAtomic } from '../../oci/store.js';
import { type Descriptor } from '../../oci/manifest.js';
import { type Io } from '../../oci/io.js';
import type { ImageName, ManifestBytes } from '../types.js';

/** A transport:rest name with a policy identity and namespaces (containers/image's ImageReference essentials). */
export class LocalName implements ImageName {
  constructor(
    readonly transport: string,
    readonly rest: string,
    private readonly identity: string,
    private readonly namespaces: string[],
    readonly dockerReference?: string | undefined,
  ) {}
  toString(): string {
    return `${this.transport}:${this.rest}`;
  }
  policyIdentity(): string {
    return this.identity;
  }
  policyNamespaces(): string[] {
    return [...this.namespaces];
  }
}

/**
 * An absolute path with symlinks resolved in its existing part (containers/image's
 * explicitfilepath.ResolvePathToFullyExplicit): the parent must exist when the path does not.
 */
export function explicitPath(p: string, what: string): string {
  const abs = resolve(p);
  try {
    return realpathSync(abs);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  try {
    return join(realpathSync(dirname(abs)), basename(abs));
  } catch {
    throw new UsageError(`invalid ${what} path ${JSON.stringify(p)}: parent directory ${dirname(abs)} does not exist`);
  }
}

/** Parent directories of an absolute path, most specific first, without "/" (policy namespaces). */
export function pathNamespaces(path: string, includeSelf: boolean): string[] {
  const out: string[] = [];
  let p = path;
  if (!includeSelf) p = dirname(p);
  while (p !== '/' && p !== '.' && p !== '') {
    out.push(p);
    const parent = dirname(p);
    if (parent === p) break;
    p = parent;
  }
  return out;
}

/** Split `PATH[:REF]` at the first ':' (containers/image's splitPathAndImage on Unix). */
export function splitPathAndRef(rest: string): { path: string; ref: string } {
  const i = rest.indexOf(':');
  return i < 0 ? { path: rest, ref: '' } : { path: rest.slice(0, i), ref: rest.slice(i + 1) };
}

/** Manifest bytes with a media type: from the descriptor when given, else guessed from the JSON; schema 1 refused. */
export function manifestBytes(bytes: Buffer, mediaType: string | undefined, where: string, digest?: Digest): ManifestBytes {
  let mt = mediaType && (isManifestType(mediaType) || isIndexType(mediaType)) ? mediaType : undefined;
  if (!mt) {
    let doc: unknown;
    try {
      doc = JSON.parse(bytes.toString('utf8'));
    } catch (e) {
      throw new OciError('MANIFEST_INVALID', `${where}: manifest is not valid JSON: ${(e as Error).message}`);
    }
    mt = guessManifestType(doc) ?? mediaType;
  }
  if (!mt) throw new OciError('MANIFEST_INVALID', `${where}: cannot tell the manifest's media type`);
  if (isSchema1Type(mt)) throw new OciError('MANIFEST_INVALID', `${where}: Docker schema 1 manifests are not supported`);
  return { bytes, mediaType: mt, digest: digest ?? digestOf(bytes) };
}

/** A reference that is a digest (`sha256:...` or `@sha256:...`), else undefined. */
export function digestRef(ref: string): Digest | undefined {
  const s = ref.startsWith('@') ? ref.slice(1) : ref;
  if (/^[a-z0-9]+:[a-f0-9]{32,}$/.test(s)) return parseDigest(s);
  return undefined;
}

export type { Descriptor };

/**
 * Stream a blob into `dir` (temp file, verified while it flows, fsynced, renamed to `nameFor(digest)`);
 * the temp file is removed on every failure path.
 */
export async function writeBlobFile(
  dir: string,
  nameFor: (d: Digest) => string,
  info: { digest?: Digest | undefined; size?: number | undefined; mediaType: string },
  body: Readable | AsyncIterable<Uint8Array>,
  io: Io = {},
): Promise<Descriptor> {
  const tmp = join(dir, `.tmp-blob-${process.pid}-${randomBytes(6).toString('hex')}`);
  const v = verifying({ digest: info.digest, size: info.size, what: info.digest ? `blob ${info.digest}` : 'blob' });
  let done = false;
  try {
    const fh = await fsp.open(tmp, 'wx', 0o644);
    try {
      await pipeline(body, v, createWriteStream('', { fd: fh.fd, autoClose: false, highWaterMark: 1024 * 1024 }), io.signal ? { signal: io.signal } : {});
      await fh.sync();
    } finally {
      await fh.close();
    }
    const { digest, size } = v.result!;
    await fsp.rename(tmp, join(dir, nameFor(digest)));
    done = true;
    return { mediaType: info.mediaType, digest, size };
  } finally {
    if (!done) await fsp.rm(tmp, { force: true }).catch(() => {});
  }
}

/**
 * writeBlobFile for a blob that `fill` writes into the temp file (ImageSource.blobToFile: a registry source
 * downloads it in a worker thread) and whose digest and size `fill` reports (fillFileAtomic: checked against `d`,
 * fsynced, renamed; the temp file removed on every failure path).
 */
export async function writeBlobFileWith(
  dir: string,
  nameFor: (d: Digest) => string,
  d: Descriptor,
  fill: (fd: number) => Promise<{ digest: Digest; size: number }>,
): Promise<Descriptor> {
  const tmp = join(dir, `.tmp-blob-${process.pid}-${randomBytes(6).toString('hex')}`);
  await fillFileAtomic(tmp, join(dir, nameFor(d.digest)), d, fill, { sync: true, what: `blob ${d.digest}` });
  return { mediaType: d.mediaType, digest: d.digest, size: d.size };
}
