/**
 * The on-disk (driver path) layout of tsregistry, in one place (as distribution's
 * registry/storage/paths.go). Every path the store uses is built here.
 *
 *   /blobs/<alg>/<hh>/<hex>                       blob data, global and content-addressed
 *                                                 (layers, configs and manifests alike; stored once)
 *   /repositories/<name>/                         one directory per repository (<name> may have slashes)
 *     _layers/<alg>/<hex>                         blob link: the blob is in this repository
 *                                                 (content: the digest; mounts only write this)
 *     _manifests/revisions/<alg>/<hex>            manifest link: JSON {mediaType, size, subject?, artifactType?}
 *     _manifests/tags/<tag>                       tag pointer: content is the manifest digest
 *     _referrers/<alg>/<subjecthex>/<alg>-<hex>   referrer entry: JSON descriptor of a manifest whose
 *                                                 `subject` is <alg>:<subjecthex> (removed with the manifest)
 *     _uploads/<uuid>/data                        upload session bytes (appended by PATCH)
 *     _uploads/<uuid>/startedat                   RFC 3339 time the session started (expiry)
 *
 * Repository directories are recognised by having a `_layers`, `_manifests` or `_uploads`
 * child; path components of repository names cannot start with `_`, so there is no clash.
 * Writes of small files are atomic (temp `*.tmp-<rand>` + fsync + rename); a blob appears
 * under its digest only after it was verified; temp files are ignored by listings.
 */
import { digestAlgorithm, digestHex, type Digest } from '../oci/index.js';

export const BLOBS = '/blobs';
export const REPOSITORIES = '/repositories';

export function blobDataPath(d: Digest): string {
  const hex = digestHex(d);
  return `${BLOBS}/${digestAlgorithm(d)}/${hex.slice(0, 2)}/${hex}`;
}

export function repoPath(repo: string): string {
  return `${REPOSITORIES}/${repo}`;
}

export function layerLinkPath(repo: string, d: Digest): string {
  return `${repoPath(repo)}/_layers/${digestAlgorithm(d)}/${digestHex(d)}`;
}

export function layersDir(repo: string): string {
  return `${repoPath(repo)}/_layers`;
}

export function manifestRevisionPath(repo: string, d: Digest): string {
  return `${repoPath(repo)}/_manifests/revisions/${digestAlgorithm(d)}/${digestHex(d)}`;
}

export function manifestRevisionsDir(repo: string): string {
  return `${repoPath(repo)}/_manifests/revisions`;
}

export function tagsDir(repo: string): string {
  return `${repoPath(repo)}/_manifests/tags`;
}

export function tagPath(repo: string, tag: string): string {
  return `${tagsDir(repo)}/${tag}`;
}

export function referrersDir(repo: string, subject: Digest): string {
  return `${repoPath(repo)}/_referrers/${digestAlgorithm(subject)}/${digestHex(subject)}`;
}

export function referrerPath(repo: string, subject: Digest, referrer: Digest): string {
  return `${referrersDir(repo, subject)}/${digestAlgorithm(referrer)}-${digestHex(referrer)}`;
}

export function uploadsDir(repo: string): string {
  return `${repoPath(repo)}/_uploads`;
}

export function uploadDataPath(repo: string, id: string): string {
  return `${uploadsDir(repo)}/${id}/data`;
}

export function uploadStartedAtPath(repo: string, id: string): string {
  return `${uploadsDir(repo)}/${id}/startedat`;
}

export function uploadDir(repo: string, id: string): string {
  return `${uploadsDir(repo)}/${id}`;
}

/** The marker children that make a directory under /repositories a repository. */
export const REPO_MARKERS = ['_layers', '_manifests', '_uploads'] as const;
