/**
 * Blobs (HEAD/GET with Range, DELETE) and uploads (POST monolithic/session/mount, PATCH
 * chunks, GET status, PUT to finish, DELETE to cancel), as distribution's handlers/blob.go
 * and blobupload.go. Bodies stream from the Node request into storage; blobs stream from
 * storage into the Node response.
 */
import { Hono } from 'hono';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { pipeline } from 'node:stream/promises';
import { open } from 'node:fs';
import { sendFileRange } from '../sendfile.js';
import type { OutgoingHttpHeaders } from 'node:http';
import { OciError, isValidRepositoryName, type Digest } from '../../oci/index.js';
import type { AppEnv } from '../hooks.js';
import { digestParam, param, guard, handler, send, type Ctx, type Deps } from '../http.js';
import type { UploadState } from '../store.js';

const pull = (_c: Ctx, repo: string | undefined) => [{ type: 'repository' as const, name: repo!, actions: ['pull' as const] }];
const push = (_c: Ctx, repo: string | undefined) => [{ type: 'repository' as const, name: repo!, actions: ['pull' as const, 'push' as const] }];
const del = (_c: Ctx, repo: string | undefined) => [{ type: 'repository' as const, name: repo!, actions: ['delete' as const] }];

/** Parse a Range request header against a size: [start, end] inclusive, or 'invalid'. */
function parseRange(h: string, size: number): [number, number] | 'invalid' {
  const m = /^bytes=(\d*)-(\d*)$/.exec(h.trim());
  if (!m || (m[1] === '' && m[2] === '') || h.includes(',')) return 'invalid';
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'invalid';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start > end || start >= size) return 'invalid';
  return [start, end];
}

function uploadHeaders(name: string, u: UploadState): OutgoingHttpHeaders {
  return {
    Location: `/v2/${name}/blobs/uploads/${u.id}`,
    Range: `0-${u.size > 0 ? u.size - 1 : 0}`,
    'Docker-Upload-UUID': u.id,
  };
}

function blobCreated(name: string, d: Digest): OutgoingHttpHeaders {
  return { Location: `/v2/${name}/blobs/${d}`, 'Docker-Content-Digest': d };
}

/** Content-Length of the request, or undefined for chunked/absent. */
function contentLength(c: Ctx): number | undefined {
  const v = c.env.incoming.headers['content-length'];
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new OciError('SIZE_INVALID', `invalid Content-Length ${JSON.stringify(v)}`);
  return Number(v);
}

function hasBody(c: Ctx): boolean {
  const len = contentLength(c);
  return (len !== undefined && len > 0) || c.env.incoming.headers['transfer-encoding'] !== undefined;
}

/** Content-Range of a PATCH/PUT: "<start>-<end>" (also "bytes=<start>-<end>" and "bytes <start>-<end>/<total>"). */
function contentRange(c: Ctx): { start: number; end: number } | undefined {
  const v = c.env.incoming.headers['content-range'];
  if (v === undefined) return undefined;
  const m = /^(?:bytes[= ])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(v.trim());
  if (!m) throw new OciError('RANGE_INVALID', `invalid Content-Range ${JSON.stringify(v)}`);
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start) throw new OciError('RANGE_INVALID', `invalid Content-Range ${JSON.stringify(v)}: end before start`);
  return { start, end };
}

function abortSignal(c: Ctx): AbortSignal {
  const ac = new AbortController();
  const inc = c.env.incoming;
  const onAbort = () => ac.abort(new Error('client closed the connection'));
  inc.once('aborted', onAbort);
  c.env.outgoing.once('close', () => {
    inc.off('aborted', onAbort);
    if (!inc.complete) onAbort();
  });
  return ac.signal;
}

export function blobRoutes(deps: Deps): Hono<AppEnv> {
  const { store } = deps;
  const app = new Hono<AppEnv>();

  // HEAD lands here too (hono dispatches HEAD as GET): never open the file for HEAD.
  app.get(
    '/v2/:name{.+}/blobs/:digest',
    guard(deps, 'blob', pull),
    handler(async (c) => {
      const repo = c.get('repo')!;
      const d = digestParam(param(c, 'digest'));
      const size = await store.statBlob(repo, d);
      if (size === undefined) throw new OciError('BLOB_UNKNOWN', `blob ${d} is not in repository ${repo}`, { detail: { digest: d } });
      const headers: OutgoingHttpHeaders = {
        'Content-Type': 'application/octet-stream',
        'Docker-Content-Digest': d,
        'Accept-Ranges': 'bytes',
        ETag: `"${d}"`,
        'Cache-Control': 'max-age=31536000',
        'Content-Length': size,
      };
      let status = 200;
      let start = 0;
      let end = size - 1;
      const range = c.env.incoming.headers.range;
      if (range !== undefined && size > 0) {
        const r = parseRange(range, size);
        if (r === 'invalid')
          throw new OciError('RANGE_INVALID', `range ${JSON.stringify(range)} is not satisfiable for a blob of ${size} bytes`, {
            detail: { headers: { 'Content-Range': `bytes */${size}` } },
          });
        [start, end] = r;
        status = 206;
        headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
        headers['Content-Length'] = end - start + 1;
      }
      if (c.req.method === 'HEAD' || size === 0) return send(c, status, headers);
      const out = c.env.outgoing;
      // fast path: the blob is a local file (filesystem driver, or cached by the mirror)
      const local = store.blobLocalPath(d);
      const fd = local === undefined ? undefined : await openFd(local);
      if (fd !== undefined) {
        out.writeHead(status, { 'Docker-Distribution-API-Version': 'registry/2.0', ...headers });
        try {
          await sendFileRange(out, fd, start, end);
          store.emit({ type: 'blob.pulled', repo, digest: d, bytes: end - start + 1 });
        } catch {
          out.destroy();
        }
        return sendDone();
      }
      const stream = await store.openBlob(repo, d, start, end);
      out.writeHead(status, { 'Docker-Distribution-API-Version': 'registry/2.0', ...headers });
      try {
        await pipeline(stream, out);
        store.emit({ type: 'blob.pulled', repo, digest: d, bytes: end - start + 1 });
      } catch {
        // client went away, or the file vanished mid-read: the connection is already closed
        stream.destroy();
        out.destroy();
      }
      return sendDone();
    }),
  );

  app.delete(
    '/v2/:name{.+}/blobs/:digest',
    guard(deps, 'blob-delete', del),
    handler(async (c) => {
      const repo = c.get('repo')!;
      const d = digestParam(param(c, 'digest'));
      await store.deleteBlob(repo, d);
      return send(c, 202, { 'Docker-Content-Digest': d });
    }),
  );

  // start an upload: monolithic (?digest=), cross-repository mount (?mount=&from=), or a session
  app.on(
    'POST',
    ['/v2/:name{.+}/blobs/uploads/', '/v2/:name{.+}/blobs/uploads'],
    guard(deps, 'upload-start', (c, repo) => {
      const acc = push(c, repo);
      const from = c.req.query('from');
      const mount = c.req.query('mount');
      if (mount !== undefined && from) {
        if (!isValidRepositoryName(from)) throw new OciError('NAME_INVALID', `invalid repository name in from=${JSON.stringify(from)}`);
        return [...acc, { type: 'repository' as const, name: from, actions: ['pull' as const] }];
      }
      return acc;
    }),
    handler(async (c) => {
      const repo = c.get('repo')!;
      const mount = c.req.query('mount');
      const digestQ = c.req.query('digest');
      if (mount !== undefined) {
        const d = digestParam(mount, 'mount digest');
        const from = c.req.query('from') || undefined;
        const size = await store.mountBlob(repo, d, from);
        if (size !== undefined) return send(c, 201, blobCreated(repo, d));
        const u = await store.startUpload(repo);
        return send(c, 202, uploadHeaders(repo, u));
      }
      if (digestQ !== undefined) {
        const d = digestParam(digestQ);
        const length = contentLength(c);
        const r = await store.putBlob(repo, d, c.env.incoming, { length, signal: abortSignal(c) });
        return send(c, 201, blobCreated(repo, r.digest));
      }
      const u = await store.startUpload(repo);
      return send(c, 202, uploadHeaders(repo, u));
    }),
  );

  app.patch(
    '/v2/:name{.+}/blobs/uploads/:id',
    guard(deps, 'upload-chunk', push),
    handler(async (c) => {
      const repo = c.get('repo')!;
      const id = param(c, 'id');
      const range = contentRange(c);
      const length = contentLength(c);
      if (range && length !== undefined && length !== range.end - range.start + 1)
        throw new OciError('SIZE_INVALID', `Content-Length ${length} does not match Content-Range ${range.start}-${range.end}`);
      const u = await store.appendUpload(repo, id, c.env.incoming, { start: range?.start, length: length ?? (range ? range.end - range.start + 1 : undefined), signal: abortSignal(c) });
      return send(c, 202, uploadHeaders(repo, u));
    }),
  );

  app.get(
    '/v2/:name{.+}/blobs/uploads/:id',
    guard(deps, 'upload-status', push),
    handler(async (c) => {
      const repo = c.get('repo')!;
      const u = await store.getUpload(repo, param(c, 'id'));
      return send(c, 204, uploadHeaders(repo, u));
    }),
  );

  app.put(
    '/v2/:name{.+}/blobs/uploads/:id',
    guard(deps, 'upload-finish', push),
    handler(async (c) => {
      const repo = c.get('repo')!;
      const id = param(c, 'id');
      const d = digestParam(c.req.query('digest'));
      let body;
      if (hasBody(c)) {
        const range = contentRange(c);
        if (range) {
          const u = await store.getUpload(repo, id);
          if (range.start !== u.size)
            throw new OciError('RANGE_INVALID', `upload ${id} is at offset ${u.size}, the request starts at ${range.start}`, { detail: { uuid: id, offset: u.size } });
        }
        body = { stream: c.env.incoming, length: contentLength(c), signal: abortSignal(c) };
      }
      const r = await store.finishUpload(repo, id, d, body);
      return send(c, 201, blobCreated(repo, r.digest));
    }),
  );

  app.delete(
    '/v2/:name{.+}/blobs/uploads/:id',
    guard(deps, 'upload-cancel', push),
    handler(async (c) => {
      const repo = c.get('repo')!;
      await store.cancelUpload(repo, param(c, 'id'));
      return send(c, 204, {});
    }),
  );

  return app;
}

/** An fd for reading, or undefined when the file is not there (mirror: not cached yet). */
function openFd(path: string): Promise<number | undefined> {
  return new Promise((resolve, reject) =>
    open(path, 'r', (err, fd) => {
      if (!err) resolve(fd);
      else if (err.code === 'ENOENT') resolve(undefined);
      else reject(err);
    }),
  );
}

function sendDone(): Response {
  return RESPONSE_ALREADY_SENT;
}
