/**
 * Seams for the production features (auth, metrics, retention, immutability, quotas, GC,
 * mirror) that live in their own files: the store calls the check hooks before it writes
 * and emits events after; the app asks an authoriser for every route's access.
 */
import type { Context } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import type { Digest } from '../oci/index.js';

/** One access a request needs (the Docker token spec's resource scope). */
export type Access =
  | { type: 'repository'; name: string; actions: ('pull' | 'push' | 'delete')[] }
  | { type: 'registry'; name: 'catalog'; actions: ['*'] };

/** Which route a request hit (for authorisation, logs and metrics labels). */
export type RouteName =
  | 'base'
  | 'blob'
  | 'blob-delete'
  | 'upload-start'
  | 'upload-mount'
  | 'upload-chunk'
  | 'upload-status'
  | 'upload-finish'
  | 'upload-cancel'
  | 'manifest'
  | 'manifest-put'
  | 'manifest-delete'
  | 'tags'
  | 'catalog'
  | 'referrers';

export type AppEnv = {
  Bindings: HttpBindings;
  Variables: {
    /** Set by the authoriser (regprod) once it knows who is asking. */
    user?: string;
    /** Repository name of the route (after validation), when it has one. */
    repo?: string;
    route?: RouteName;
    /** What the route needs (computed before the authoriser runs). */
    access?: Access[];
    /** Request id for logs (set by a logging middleware if present). */
    requestId?: string;
  };
};

/**
 * Decides whether a request may proceed. Return nothing to allow, or a Response (a 401
 * challenge with WWW-Authenticate, a 403 DENIED envelope) to stop it; throwing an OciError
 * also works. `access` is empty for `GET /v2/` (authentication only). Cross-repository
 * mounts ask for push on the target and pull on the source.
 */
export type Authorizer = (c: Context<AppEnv>, access: Access[], route: RouteName) => Promise<Response | void> | Response | void;

export type RegistryEvent =
  | { type: 'blob.pushed'; repo: string; digest: Digest; size: number; durationMs: number }
  | { type: 'blob.mounted'; repo: string; from?: string | undefined; digest: Digest; size: number }
  | { type: 'blob.deleted'; repo: string; digest: Digest }
  | { type: 'blob.pulled'; repo: string; digest: Digest; bytes: number }
  | { type: 'upload.bytes'; repo: string; id: string; bytes: number }
  | { type: 'manifest.pushed'; repo: string; digest: Digest; tag?: string | undefined; mediaType: string; size: number; subject?: Digest | undefined }
  | { type: 'manifest.deleted'; repo: string; digest: Digest }
  | { type: 'manifest.pulled'; repo: string; digest: Digest; reference: string; size: number }
  | { type: 'tag.deleted'; repo: string; tag: string; digest: Digest }
  | { type: 'upload.purged'; repo: string; id: string };

/**
 * Checks the store runs before it writes. Throw an OciError (e.g. DENIED for an immutable
 * tag, TOOMANYREQUESTS/DENIED for a quota) to refuse; the client gets that error.
 */
export interface StoreHooks {
  /** Before a manifest is stored and (when `tag` is set) the tag moved; `previous` is the tag's current digest. */
  beforeManifestPut?(e: { repo: string; digest: Digest; tag?: string | undefined; previous?: Digest | undefined; mediaType: string; size: number }): Promise<void> | void;
  /** Before a tag is removed (DELETE by tag, or because its manifest is deleted). */
  beforeTagDelete?(e: { repo: string; tag: string; digest: Digest }): Promise<void> | void;
  /** Before a verified upload becomes a blob in `repo` (quotas). */
  beforeBlobCommit?(e: { repo: string; digest: Digest; size: number }): Promise<void> | void;
  /** Before a blob is linked into `repo` by a mount. */
  beforeBlobMount?(e: { repo: string; digest: Digest; size: number; from?: string | undefined }): Promise<void> | void;
}

export type EventListener = (e: RegistryEvent) => void;
