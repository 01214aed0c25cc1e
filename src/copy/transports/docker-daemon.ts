/**
 * `docker-daemon:NAME:TAG | docker-daemon:NAME@DIGEST | docker-daemon:sha256:IMAGEID`: images of a Docker Engine API
 * daemon (dockerd, or podman's compat service), as skopeo's docker-daemon: transport (containers/image docker/daemon).
 *
 * Source: `GET /images/get?names=NAME` answers a `docker save` tar; it is streamed into a temp file (the manifest.json
 * that says where the layers are comes last, so the tar must be seekable) and read in place as a docker-archive
 * (DockerArchiveReader). The temp file is removed on close() and on every failure path.
 * Destination: a docker-archive (DockerArchiveWriter, via the docker-archive transport's destination) streamed into
 * the body of `POST /images/load` at commit(); the daemon's JSON progress stream is read for errors. Needs NAME:TAG
 * (the archive's RepoTags name the image), plus skopeo's --additional-tag names.
 * The daemon re-exports what it stores: manifest digests are synthesized (layers = diffIDs, uncompressed), the config
 * is kept byte for byte (its digest is the image ID).
 */
import { createWriteStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DockerArchiveReader, dockerRepoTag, type DockerArchiveWriter } from '../../oci/archive.js';
import { TsimageError, UsageError } from '../../oci/errors.js';
import { MAX_MANIFEST_SIZE, readAll, type Io } from '../../oci/io.js';
import { parseReference, familiarName, type ImageReference } from '../../oci/reference.js';
import type { Digest } from '../../oci/digest.js';
import type { ImageName, OpenOptions, Transport } from '../types.js';
import { additionalRepoTags, DockerArchiveDestination, DockerArchiveSource } from './docker-archive.js';
import { LocalName } from './common.js';
import { DaemonClient, daemonAddress, drain } from './daemon-client.js';

interface DaemonName extends ImageName {
  /** The image ID (config digest) for `docker-daemon:sha256:...`. */
  readonly id: Digest | undefined;
  /** The parsed reference (normalized) otherwise. */
  readonly ref: ImageReference | undefined;
  /** What is sent to the daemon (containers/image StringWithinTransport: the familiar name, or the ID). */
  readonly within: string;
}

const DIGEST_LENGTHS: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };

/** containers/image daemon ParseReference: an image ID (sha256 only), or a reference with a tag or a digest (not both). */
function parseDaemonName(rest: string): DaemonName {
  const dm = /^([a-z0-9]+):([a-f0-9]+)$/.exec(rest);
  if (dm && DIGEST_LENGTHS[dm[1]!] === dm[2]!.length) {
    if (dm[1] !== 'sha256') throw new UsageError(`Invalid docker-daemon: reference ${rest}: only digest algorithm sha256 accepted`);
    const id = rest as Digest;
    return Object.assign(new LocalName('docker-daemon', rest, '', [], undefined), { id, ref: undefined, within: id });
  }
  let ref: ImageReference;
  try {
    ref = parseReference(rest, { defaultTag: false });
  } catch (e) {
    throw new UsageError(`Invalid docker-daemon: reference ${JSON.stringify(rest)}: ${(e as Error).message}`);
  }
  const familiar = familiarName(ref);
  if (familiarName({ registry: ref.registry, repository: ref.repository }) === 'sha256')
    throw new UsageError(`Invalid docker-daemon: reference ${rest}: The sha256 repository name is reserved for (non-shortened) digest references`);
  if (!ref.tag && !ref.digest) throw new UsageError(`docker-daemon: reference ${familiar} has neither a tag nor a digest`);
  if (ref.tag && ref.digest) throw new UsageError('docker-daemon: references with both a tag and digest are currently not supported');
  const full = `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : `@${ref.digest}`}`;
  // containers/image: no policy scopes for this transport (image IDs cannot be namespaced): only the "" scope applies
  return Object.assign(new LocalName('docker-daemon', rest, '', [], full), { id: undefined, ref, within: familiar });
}

/** A daemon image read from a `docker save` copy in a temp file, removed on close(). */
class DaemonSource extends DockerArchiveSource {
  constructor(
    name: ImageName,
    reader: DockerArchiveReader,
    private readonly tmp: string,
  ) {
    super(name, reader, 0);
  }

  override async tags(): Promise<string[]> {
    return [];
  }

  override async close(): Promise<void> {
    await fsp.rm(this.tmp, { force: true });
  }
}

/** Stream `GET /images/get` into a temp file (removed on failure). */
async function saveToTemp(client: DaemonClient, n: DaemonName, io: Io): Promise<string> {
  const what = `${n}: loading image from docker engine`;
  const tmp = join(tmpdir(), `tsimage-daemon-${process.pid}-${randomBytes(6).toString('hex')}.tar`);
  let ok = false;
  try {
    const res = await client.request(what, 'GET', `/images/get?names=${encodeURIComponent(n.within)}`, { signal: io.signal });
    const fh = await fsp.open(tmp, 'wx', 0o600);
    try {
      await pipeline(res.body, createWriteStream('', { fd: fh.fd, autoClose: false, highWaterMark: 1024 * 1024 }), io.signal ? { signal: io.signal } : {});
    } finally {
      await fh.close();
    }
    ok = true;
    return tmp;
  } finally {
    if (!ok) await fsp.rm(tmp, { force: true }).catch(() => {});
  }
}

/**
 * Send the archive in the body of `POST /images/load` while it is written; read the daemon's answer (a JSON
 * message stream: `{"stream":"Loaded image: ..."}` or `{"errorDetail":{"message":...},"error":...}`).
 */
async function loadInto(client: DaemonClient, name: ImageName, writer: DockerArchiveWriter, io: Io): Promise<void> {
  const what = `${name}: saving image to docker engine`;
  const body = new PassThrough({ highWaterMark: 1024 * 1024 });
  const ac = new AbortController();
  const onAbort = () => ac.abort(io.signal?.reason);
  io.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const req = client.request(what, 'POST', '/images/load?quiet=1', { body, headers: { 'content-type': 'application/x-tar' }, signal: ac.signal });
    // a request that fails (no daemon, refused) stops the writer: it would otherwise wait on a body nobody reads
    req.catch((e: unknown) => body.destroy(e as Error));
    const sent = writer.write(body, { signal: ac.signal }).catch((e: unknown) => {
      // the archive could not be produced: abort the upload (no terminating chunk: the daemon loads nothing)
      ac.abort(e);
      throw e;
    });
    const [res] = await Promise.all([req, sent]);
    const text = (await readAll(res.body, MAX_MANIFEST_SIZE, 'docker load response')).toString('utf8');
    for (const line of text.split(/\r?\n/)) {
      if (!line.trim()) continue;
      let msg: { errorDetail?: { message?: string }; error?: string };
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        continue;
      }
      const err = msg.errorDetail?.message ?? msg.error;
      if (err) throw new TsimageError(`${what}: docker engine reported: ${JSON.stringify(err)}`);
    }
  } finally {
    io.signal?.removeEventListener('abort', onAbort);
    if (!body.destroyed) body.destroy();
  }
}

class DaemonDestination extends DockerArchiveDestination {
  constructor(
    name: ImageName,
    tag: string,
    additional: string[],
    private readonly client: DaemonClient,
  ) {
    super(name, (w, io) => loadInto(client, name, w, io), tag, additional);
  }

  override async close(): Promise<void> {
    try {
      await super.close();
    } finally {
      await this.client.close();
    }
  }
}

export const dockerDaemonTransport: Transport = {
  name: 'docker-daemon',
  parse: parseDaemonName,
  async source(name, opts: OpenOptions = {}) {
    const n = name as DaemonName;
    const client = new DaemonClient(daemonAddress(opts));
    let tmp: string | undefined;
    try {
      tmp = await saveToTemp(client, n, opts);
      const reader = await DockerArchiveReader.open(tmp, opts);
      if (reader.items.length !== 1)
        throw new TsimageError(`${name}: unexpected tar manifest.json from the daemon: expected 1 item, got ${reader.items.length}`);
      const src = new DaemonSource(name, reader, tmp);
      tmp = undefined;
      return src;
    } finally {
      await client.close();
      if (tmp) await fsp.rm(tmp, { force: true }).catch(() => {});
    }
  },
  async destination(name, opts: OpenOptions = {}) {
    const n = name as DaemonName;
    if (!n.ref?.tag) throw new UsageError(`Invalid destination ${name}: a destination must be a name:tag`);
    const additional = additionalRepoTags(opts.additionalTags);
    const client = new DaemonClient(daemonAddress(opts));
    try {
      // fail before any blob is staged when the daemon is not there
      const res = await client.request(`${name}: initializing docker engine client`, 'GET', '/_ping', { signal: opts.signal });
      await drain(res.body);
    } catch (e) {
      await client.close();
      throw e;
    }
    return new DaemonDestination(name, dockerRepoTag(`${n.ref.registry}/${n.ref.repository}:${n.ref.tag}`), additional, client);
  },
};
