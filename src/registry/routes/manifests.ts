/**
 * Manifests by tag or digest: HEAD/GET (with Accept negotiation for indexes), PUT (validated,
 * referenced content must exist, OCI-Subject for referrers), DELETE (tag or manifest).
 */
import { Hono } from 'hono';
import { OciError, INDEX_TYPES, MANIFEST_TYPES, SizeMismatchError, isDigest, isValidTag, readAll, type ImageIndex } from '../../oci/index.js';
import type { AppEnv } from '../hooks.js';
import { guard, handler, param, send, type Ctx, type Deps } from '../http.js';
import type { ManifestInfo, RegistryStore } from '../store.js';

function reference(c: Ctx): string {
  const ref = param(c, 'reference');
  if (ref.includes(':')) {
    if (!isDigest(ref)) throw new OciError('DIGEST_INVALID', `invalid digest reference ${JSON.stringify(ref)}`, { detail: { digest: ref } });
  } else if (!isValidTag(ref)) throw new OciError('TAG_INVALID', `invalid tag ${JSON.stringify(ref)}`, { detail: { tag: ref } });
  return ref;
}

function acceptList(c: Ctx): string[] {
  const raw = c.env.incoming.headers.accept;
  if (!raw) return [];
  return raw
    .split(',')
    .map((s) => s.split(';')[0]!.trim().toLowerCase())
    .filter(Boolean);
}

/**
 * A client that lists manifest types but no index type (old Docker clients) gets the
 * linux/amd64 image of an index, as distribution does; everything else gets what is stored.
 */
async function negotiate(store: RegistryStore, repo: string, info: ManifestInfo & { bytes?: Buffer }, accept: string[]): Promise<ManifestInfo | undefined> {
  if (!INDEX_TYPES.includes(info.mediaType) || accept.length === 0) return info;
  if (accept.some((a) => INDEX_TYPES.includes(a) || a === '*/*' || a === 'application/*' || a === 'application/json')) return info;
  if (!accept.some((a) => MANIFEST_TYPES.includes(a))) return info;
  const full = info.bytes ? info : await store.getManifest(repo, info.digest);
  if (!full) return undefined;
  const index = JSON.parse(full.bytes!.toString('utf8')) as ImageIndex;
  const child = index.manifests.find((m) => m.platform?.os === 'linux' && m.platform.architecture === 'amd64' && accept.includes(m.mediaType));
  if (!child) return undefined;
  return store.statManifest(repo, child.digest);
}

export function manifestRoutes(deps: Deps): Hono<AppEnv> {
  const { store } = deps;
  const app = new Hono<AppEnv>();

  app.get(
    '/v2/:name{.+}/manifests/:reference',
    guard(deps, 'manifest', (_c, repo) => [{ type: 'repository', name: repo!, actions: ['pull'] }]),
    handler(async (c) => {
      const repo = c.get('repo')!;
      const ref = reference(c);
      const head = c.req.method === 'HEAD';
      let info: (ManifestInfo & { bytes?: Buffer }) | undefined = head ? await store.statManifest(repo, ref) : await store.getManifest(repo, ref);
      if (info) {
        const chosen = await negotiate(store, repo, info, acceptList(c));
        if (!chosen) throw new OciError('MANIFEST_UNKNOWN', `manifest ${ref} is an index and the client accepts none of its types (Accept: ${c.req.header('accept')})`, { detail: { reference: ref } });
        if (chosen.digest !== info.digest) info = head ? chosen : await store.getManifest(repo, chosen.digest);
      }
      if (!info) throw new OciError('MANIFEST_UNKNOWN', `manifest ${ref} is not in repository ${repo}`, { detail: { reference: ref } });
      const headers = {
        'Content-Type': info.mediaType,
        'Docker-Content-Digest': info.digest,
        'Content-Length': info.size,
        ETag: `"${info.digest}"`,
      };
      if (head) return send(c, 200, headers);
      store.emit({ type: 'manifest.pulled', repo, digest: info.digest, reference: ref, size: info.size });
      return send(c, 200, headers, info.bytes!);
    }),
  );

  app.put(
    '/v2/:name{.+}/manifests/:reference',
    guard(deps, 'manifest-put', (_c, repo) => [{ type: 'repository', name: repo!, actions: ['pull', 'push'] }]),
    handler(async (c) => {
      const repo = c.get('repo')!;
      const ref = reference(c);
      const max = deps.maxManifestSize;
      const tooBig = (n: number) =>
        new OciError('MANIFEST_INVALID', `manifest is ${n} bytes, over the limit of ${max} bytes`, { status: 413, detail: { size: n, limit: max } });
      const declared = c.env.incoming.headers['content-length'];
      if (declared !== undefined && Number(declared) > max) throw tooBig(Number(declared));
      let bytes: Buffer;
      try {
        bytes = await readAll(c.env.incoming, max, 'manifest');
      } catch (e) {
        if (e instanceof SizeMismatchError) throw tooBig(e.actual);
        throw e;
      }
      const info = await store.putManifest(repo, ref, bytes, c.env.incoming.headers['content-type']);
      const headers: Record<string, string> = { Location: `/v2/${repo}/manifests/${info.digest}`, 'Docker-Content-Digest': info.digest };
      if (info.subject) headers['OCI-Subject'] = info.subject;
      return send(c, 201, headers);
    }),
  );

  app.delete(
    '/v2/:name{.+}/manifests/:reference',
    guard(deps, 'manifest-delete', (_c, repo) => [{ type: 'repository', name: repo!, actions: ['delete'] }]),
    handler(async (c) => {
      const repo = c.get('repo')!;
      const ref = reference(c);
      if (isDigest(ref)) await store.deleteManifest(repo, ref);
      else await store.deleteTag(repo, ref);
      return send(c, 202, {});
    }),
  );

  return app;
}
