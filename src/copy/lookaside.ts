/**
 * Lookaside storage of "simple signing" signatures (containers/image docker/docker_image_src.go and
 * docker_image_dest.go, docs/signature-protocols.md): the signatures of manifest `algo:hex` of repository `REPO`
 * (the path without the registry host) are `<base>/REPO@algo=hex/signature-1`, `signature-2`, ... read until the
 * first missing one. Reading: `file://` and `http(s)://` (through the registry's client: its TLS settings and
 * connection pools). Writing: `file://` only (containers/image refuses to write to http(s): use
 * `lookaside-staging`), each file atomically (temp + rename); the signatures after the last one written are removed
 * up to the first missing one, so a shorter list is read back whole.
 */
import { mkdir, open, readFile, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { digestAlgorithm, digestHex, type Digest } from '../oci/digest.js';
import { TsimageError } from '../oci/errors.js';
import { readAll, type Io } from '../oci/io.js';
import { writeFileAtomic as writeOciFileAtomic } from '../oci/store.js';

/** containers/image maxLookasideSignatures. */
export const MAX_LOOKASIDE_SIGNATURES = 128;
/** containers/image iolimits.MaxSignatureBodySize. */
export const MAX_SIGNATURE_SIZE = 4 << 20;

export class LookasideError extends TsimageError {}

/** The URL of signature `n` (1-based) of `digest` in `repoPath` under the lookaside `base`. */
export function lookasideUrl(base: string, repoPath: string, digest: Digest, n: number): URL {
  const u = new URL(base);
  // containers/image: baseURL.Path + "/" + repo, then "@algo=hex/signature-N" (a trailing "/" in base is kept)
  u.pathname = `${decodePath(u.pathname)}/${repoPath}@${digestAlgorithm(digest)}=${digestHex(digest)}/signature-${n}`;
  return u;
}

/** A URL path decoded (a stray "%" that is no escape stays as it is). */
function decodePath(p: string): string {
  try {
    return decodeURIComponent(p);
  } catch {
    return p;
  }
}

/** The local path of a file:// URL (a host other than localhost is refused: containers/image would silently drop it). */
export function filePath(u: URL, what: string): string {
  if (u.host !== '' && u.host !== 'localhost')
    throw new LookasideError(`${what}: file URL ${JSON.stringify(u.href)} names a host (${u.host}); want file:///absolute/path`);
  return decodePath(u.pathname);
}

/** GET for http(s) lookasides: status and (when 200) the body, at most `limit` bytes. */
export type LookasideGet = (url: URL, io: Io & { limit: number }) => Promise<{ status: number; body?: Buffer | undefined; contentType?: string | undefined }>;

/** Read the signatures of `digest` (in order) from the lookaside `base`; [] when there are none. */
export async function readLookaside(base: string, repoPath: string, digest: Digest, get: LookasideGet | undefined, io: Io = {}): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (let n = 1; ; n++) {
    if (n > MAX_LOOKASIDE_SIGNATURES) throw new LookasideError(`lookaside ${base}: more than ${MAX_LOOKASIDE_SIGNATURES} signatures for ${repoPath}@${digest}, assuming that's unreasonable and a server error`);
    io.signal?.throwIfAborted();
    const u = lookasideUrl(base, repoPath, digest, n);
    if (u.protocol === 'file:') {
      const p = filePath(u, 'lookaside');
      let b: Buffer;
      try {
        const st = await open(p, 'r');
        try {
          const { size } = await st.stat();
          if (size > MAX_SIGNATURE_SIZE) throw new LookasideError(`signature ${p}: ${size} bytes, more than the ${MAX_SIGNATURE_SIZE} allowed`);
          b = await st.readFile();
        } finally {
          await st.close();
        }
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') break;
        if (e instanceof LookasideError) throw e;
        throw new LookasideError(`reading signature ${p}: ${(e as Error).message}`, { cause: e });
      }
      out.push(b);
    } else if (u.protocol === 'http:' || u.protocol === 'https:') {
      if (!get) throw new LookasideError(`lookaside ${base}: no HTTP client`);
      const r = await get(u, { ...io, limit: MAX_SIGNATURE_SIZE });
      if (r.status === 404) break;
      if (r.status !== 200 || !r.body) throw new LookasideError(`reading signature from ${redacted(u)}: status ${r.status}`);
      out.push(r.body);
    } else {
      throw new LookasideError(`lookaside ${base}: unsupported scheme ${u.protocol} (want file://, http:// or https://)`);
    }
  }
  return out;
}

function redacted(u: URL): string {
  if (!u.username && !u.password) return u.href;
  const c = new URL(u.href);
  c.username = c.username ? 'xxxxx' : '';
  c.password = c.password ? 'xxxxx' : '';
  return c.href;
}

/** Refuse early when signatures could not be written to `base` (only file:// can be). */
export function checkWritableLookaside(base: string, from: string): void {
  const u = new URL(base);
  if (u.protocol === 'file:') {
    filePath(u, from);
    return;
  }
  if (u.protocol === 'http:' || u.protocol === 'https:')
    throw new LookasideError(`Writing directly to a ${u.protocol.slice(0, -1)} lookaside ${redacted(u)} is not supported (${from}). Configure a lookaside-staging: location`);
  throw new LookasideError(`Unsupported scheme when writing signature to ${redacted(u)} (${from})`);
}

/** Write `sigs` as the complete list of signatures of `digest` (file:// only); returns the files written. */
export async function writeLookaside(base: string, from: string, repoPath: string, digest: Digest, sigs: readonly Buffer[]): Promise<string[]> {
  checkWritableLookaside(base, from);
  if (sigs.length === 0) return [];
  const written: string[] = [];
  for (let i = 0; i < sigs.length; i++) {
    const p = filePath(lookasideUrl(base, repoPath, digest, i + 1), from);
    await mkdir(dirname(p), { recursive: true, mode: 0o755 });
    await writeFileAtomic(p, sigs[i]!);
    written.push(p);
  }
  // remove what followed (up to the first missing one: a reader stops there anyway)
  for (let n = sigs.length + 1; n <= MAX_LOOKASIDE_SIGNATURES + 1; n++) {
    const p = filePath(lookasideUrl(base, repoPath, digest, n), from);
    try {
      await unlink(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') break;
      throw new LookasideError(`removing old signature ${p}: ${(e as Error).message}`, { cause: e });
    }
  }
  return written;
}

/**
 * Remove the signatures of `digest` (signature-1, -2, ... up to the first missing one), as containers/image's
 * deleteImage does; returns the files removed. Only file:// can be written: an http(s) lookaside fails with
 * containers/image's message (naming the first signature's URL).
 */
export async function deleteLookaside(base: string, repoPath: string, digest: Digest): Promise<string[]> {
  const removed: string[] = [];
  for (let n = 1; n <= MAX_LOOKASIDE_SIGNATURES + 1; n++) {
    const u = lookasideUrl(base, repoPath, digest, n);
    if (u.protocol === 'http:' || u.protocol === 'https:')
      throw new LookasideError(`Writing directly to a ${u.protocol.slice(0, -1)} lookaside ${redacted(u)} is not supported. Configure a lookaside-staging: location`);
    if (u.protocol !== 'file:') throw new LookasideError(`Unsupported scheme when deleting signature from ${redacted(u)}`);
    const p = filePath(u, 'lookaside');
    try {
      await unlink(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') break;
      throw new LookasideError(`removing signature ${p}: ${(e as Error).message}`, { cause: e });
    }
    removed.push(p);
  }
  return removed;
}

/** temp + fsync + rename, mode 0644 (what containers/image's os.WriteFile gives under the usual umask). */
export async function writeFileAtomic(p: string, data: Buffer): Promise<void> {
  try {
    await writeOciFileAtomic(p, data);
  } catch (e) {
    throw new LookasideError(`writing signature ${p}: ${(e as Error).message}`, { cause: e });
  }
}

/** The signature files `signature-1`, ... (or `<prefix>signature-N`) in a directory, until the first missing one (dir: transport). */
export async function readNumberedFiles(dir: string, prefix: string): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (let n = 1; ; n++) {
    const p = `${dir}/${prefix}signature-${n}`;
    try {
      out.push(await readFile(p));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') break;
      throw new LookasideError(`reading signature ${p}: ${(e as Error).message}`, { cause: e });
    }
  }
  return out;
}

/** Read a response body with a size limit (http lookasides). */
export async function readLimited(body: AsyncIterable<Uint8Array>, limit: number, what: string): Promise<Buffer> {
  return readAll(body, limit, what);
}
