/** `GET /v2/`, tags list, catalog and referrers (all paginated with n/last and Link). */
import { Hono } from 'hono';
import { OciError, MediaTypes } from '../../oci/index.js';
import type { AppEnv } from '../hooks.js';
import { digestParam, param, guard, handler, pageParams, paginate, send, sendJson, type Deps } from '../http.js';

export function metaRoutes(deps: Deps): Hono<AppEnv> {
  const { store } = deps;
  const app = new Hono<AppEnv>();

  app.get(
    '/v2/',
    guard(deps, 'base', () => [], { repo: false }),
    handler((c) => sendJson(c, 200, {})),
  );

  app.get(
    '/v2/_catalog',
    guard(deps, 'catalog', () => [{ type: 'registry', name: 'catalog', actions: ['*'] }], { repo: false }),
    handler(async (c) => {
      const p = pageParams(c, deps.pageSize);
      const all = await store.listRepositories();
      const { page, link } = paginate(all, p, '/v2/_catalog');
      return sendJson(c, 200, { repositories: page }, link ? { Link: link } : {});
    }),
  );

  app.get(
    '/v2/:name{.+}/tags/list',
    guard(deps, 'tags', (_c, repo) => [{ type: 'repository', name: repo!, actions: ['pull'] }]),
    handler(async (c) => {
      const repo = c.get('repo')!;
      const p = pageParams(c, Number.MAX_SAFE_INTEGER);
      const all = await store.tagList(repo, { last: p.last });
      if (!all) throw new OciError('NAME_UNKNOWN', `repository ${repo} is not known to this registry`, { detail: { name: repo } });
      const { page, link } = paginate(all, p, `/v2/${repo}/tags/list`);
      return sendJson(c, 200, { name: repo, tags: page }, link ? { Link: link } : {});
    }),
  );

  app.get(
    '/v2/:name{.+}/referrers/:digest',
    guard(deps, 'referrers', (_c, repo) => [{ type: 'repository', name: repo!, actions: ['pull'] }]),
    handler(async (c) => {
      const repo = c.get('repo')!;
      const subject = digestParam(param(c, 'digest'));
      const artifactType = c.req.query('artifactType') || undefined;
      const all = await store.referrers(repo, subject, artifactType);
      const p = pageParams(c, deps.pageSize);
      const byDigest = new Map(all.map((d) => [d.digest as string, d]));
      const extra = artifactType ? `&artifactType=${encodeURIComponent(artifactType)}` : '';
      const { page, link } = paginate([...byDigest.keys()], p, `/v2/${repo}/referrers/${subject}`, extra);
      const headers: Record<string, string> = { 'Content-Type': MediaTypes.ociIndex };
      if (artifactType) headers['OCI-Filters-Applied'] = 'artifactType';
      if (link) headers.Link = link;
      const body = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: page.map((d) => byDigest.get(d)!) });
      return send(c, 200, headers, body);
    }),
  );

  return app;
}
