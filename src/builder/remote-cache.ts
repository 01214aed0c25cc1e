/**
 * `--cache-to REPO` / `--cache-from REPO`: build cache entries in a registry repository as OCI artifacts
 * (through the copy engine's transports, the one registry client). One manifest per step key, tagged
 * `cache-<key hex>`: artifactType application/vnd.tsimage.buildcache.v1, empty config, the step's
 * layer (if any) as its only layer, the diffID and history time as annotations. A local miss looks
 * the key up in the --cache-from repositories; a hit brings the layer into the local store.
 */
import { EMPTY_DESCRIPTOR, MediaTypes, parseDigest, TsimageError, toJsonBytes, type Descriptor, type Digest, type ImageManifest } from '../oci/index.js';
import type { ImageStore } from './store.js';

export const CACHE_ARTIFACT_TYPE = 'application/vnd.tsimage.buildcache.v1';
const A_KEY = 'io.tsimage.cache.key';
const A_DIFFID = 'io.tsimage.cache.diffid';
const A_CREATED = 'io.tsimage.cache.created';

export interface RemoteEntry {
  key: string;
  layer?: { mediaType: string; digest: Digest; size: number; diffID: Digest } | undefined;
  created: string;
}

export interface RemoteCacheOptions {
  tlsVerify?: boolean | undefined;
  authfile?: string | undefined;
  creds?: string | undefined;
  certDir?: string | undefined;
  signal?: AbortSignal | undefined;
}

const tagOf = (key: string) => `cache-${key.replace(/^sha256:/, '')}`;
const repoRef = (repo: string, tag: string) => `docker://${repo.replace(/^docker:\/\//, '').replace(/:[\w.-]+$/, '')}:${tag}`;

/** Look a step key up in the repositories; on a hit the layer is in the local store afterwards. */
export async function remoteLookup(repos: readonly string[], key: string, store: ImageStore, o: RemoteCacheOptions): Promise<RemoteEntry | undefined> {
  const t = await import('../copy/transports/index.js');
  const open = { tlsVerify: o.tlsVerify, authfile: o.authfile, creds: o.creds, certDir: o.certDir, signal: o.signal };
  for (const repo of repos) {
    let src;
    try {
      src = await t.openSource(await t.parseImageName(repoRef(repo, tagOf(key))), open);
      const mb = await src.manifest(undefined, { signal: o.signal });
      const m = JSON.parse(Buffer.from(mb.bytes).toString('utf8')) as ImageManifest;
      if (m.artifactType !== CACHE_ARTIFACT_TYPE || m.annotations?.[A_KEY] !== key) continue;
      const created = m.annotations?.[A_CREATED] ?? new Date().toISOString();
      const l = m.layers[0];
      if (!l) return { key, created };
      const diffID = parseDigest(l.annotations?.[A_DIFFID] ?? '', 'cache layer diffID');
      if (!(await store.layout.has(l.digest))) {
        const body = await src.blob(l, { signal: o.signal });
        await store.layout.ingest({ digest: l.digest, size: l.size, mediaType: l.mediaType }, body, { signal: o.signal });
      }
      return { key, created, layer: { mediaType: l.mediaType, digest: l.digest, size: l.size, diffID } };
    } catch {
      // not there (or unreachable): a miss
    } finally {
      await src?.close().catch(() => {});
    }
  }
  await t.closeTransports();
  return undefined;
}

/** Push the build's step entries to `repo` (layers first, then one tagged manifest per key). */
export async function remoteExport(repo: string, entries: readonly RemoteEntry[], store: ImageStore, o: RemoteCacheOptions): Promise<number> {
  if (!entries.length) return 0;
  const t = await import('../copy/transports/index.js');
  const open = { tlsVerify: o.tlsVerify, authfile: o.authfile, creds: o.creds, certDir: o.certDir, signal: o.signal };
  const dest = await t.openDestination(await t.parseImageName(repoRef(repo, 'cache')), open);
  try {
    const empty: Descriptor = { mediaType: EMPTY_DESCRIPTOR.mediaType, digest: EMPTY_DESCRIPTOR.digest, size: 2 };
    if ((await dest.tryReuse(empty)).kind === 'absent') await dest.putBlob(empty, [Buffer.from('{}')] as unknown as AsyncIterable<Uint8Array>);
    const done = new Set<string>();
    for (const e of entries) {
      if (e.layer && !done.has(e.layer.digest)) {
        done.add(e.layer.digest);
        const d: Descriptor = { mediaType: e.layer.mediaType, digest: e.layer.digest, size: e.layer.size };
        if ((await dest.tryReuse(d, { signal: o.signal })).kind === 'absent') await dest.putBlob(d, await store.layout.open(d.digest, { signal: o.signal }), { signal: o.signal });
      }
      const m: ImageManifest = {
        schemaVersion: 2,
        mediaType: MediaTypes.ociManifest,
        artifactType: CACHE_ARTIFACT_TYPE,
        config: empty,
        layers: e.layer ? [{ mediaType: e.layer.mediaType, digest: e.layer.digest, size: e.layer.size, annotations: { [A_DIFFID]: e.layer.diffID } }] : [],
        annotations: { [A_KEY]: e.key, [A_CREATED]: e.created },
      };
      const bytes = toJsonBytes(m);
      const { digestOf } = await import('../oci/index.js');
      await dest.putManifest({ bytes, mediaType: MediaTypes.ociManifest, digest: digestOf(bytes) }, tagOf(e.key), { signal: o.signal });
    }
    await dest.commit({ signal: o.signal });
  } catch (e) {
    throw new TsimageError(`--cache-to ${repo}: ${(e as Error).message}`, { cause: e });
  } finally {
    await dest.close().catch(() => {});
    await t.closeTransports();
  }
  return entries.length;
}
