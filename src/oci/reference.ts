/**
 * Image references: `[host[:port]/]path[:tag][@digest]` with the distribution reference
 * grammar, and Docker Hub normalisation (`busybox` -> `docker.io/library/busybox:latest`).
 */
import { parseDigest, type Digest } from './digest.js';
import { UsageError } from './errors.js';

export const DEFAULT_REGISTRY = 'docker.io';
export const DEFAULT_TAG = 'latest';
/** The host Docker Hub's API actually lives on. */
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';

/** path-component := alpha-numeric (separator alpha-numeric)*, separator := [_.] | __ | -+ */
export const PATH_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*';
/** The spec's repository name regex (as the distribution spec and zot use). */
export const NAME_RE = new RegExp(`^${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);
export const TAG_RE = /^[\w][\w.-]{0,127}$/;
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN_NAME = `${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*`;
const IPV6 = '\\[(?:[a-fA-F0-9:]+)\\]';
const HOST_RE = new RegExp(`^(?:${DOMAIN_NAME}|${IPV6})(?::[0-9]+)?$`);
const MAX_NAME = 255;

export interface ImageReference {
  /** Registry host with optional port, e.g. `docker.io`, `localhost:5000`, `[::1]:5000`. */
  registry: string;
  /** Repository path, e.g. `library/busybox`. */
  repository: string;
  tag?: string | undefined;
  digest?: Digest | undefined;
}

export function isValidRepositoryName(name: string): boolean {
  return name.length <= MAX_NAME && NAME_RE.test(name);
}

export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

function looksLikeHost(first: string): boolean {
  return first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[') || first !== first.toLowerCase();
}

/**
 * Parse a reference. With `normalize` (default) a missing registry becomes docker.io,
 * single-component Docker Hub names get `library/`, and a missing tag and digest becomes
 * `latest`. Throws UsageError naming what is wrong.
 */
export function parseReference(input: string, opts: { normalize?: boolean; defaultTag?: boolean } = {}): ImageReference {
  const normalize = opts.normalize ?? true;
  const defaultTag = opts.defaultTag ?? normalize;
  const bad = (why: string): never => {
    throw new UsageError(`invalid image reference ${JSON.stringify(input)}: ${why}`);
  };
  if (typeof input !== 'string' || input === '') bad('empty reference');
  if (/\s/.test(input)) bad('contains whitespace');
  let rest = input;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const d = rest.slice(at + 1);
    rest = rest.slice(0, at);
    try {
      digest = parseDigest(d);
    } catch (e) {
      bad((e as Error).message);
    }
  }
  // A tag is the text after the last ':' if that part contains no '/'.
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0 && !rest.slice(colon + 1).includes('/') && !rest.slice(colon + 1).includes(']')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) bad(`invalid tag ${JSON.stringify(tag)} (want [A-Za-z0-9_][A-Za-z0-9_.-]{0,127})`);
  }
  if (rest === '') bad('missing repository name');
  let registry: string | undefined;
  let path = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0 && looksLikeHost(rest.slice(0, slash))) {
    registry = rest.slice(0, slash);
    path = rest.slice(slash + 1);
    if (!HOST_RE.test(registry)) bad(`invalid registry host ${JSON.stringify(registry)}`);
  }
  if (path === '') bad('missing repository name');
  if (path !== path.toLowerCase()) bad(`repository name ${JSON.stringify(path)} must be lowercase`);
  if (!NAME_RE.test(path)) bad(`invalid repository name ${JSON.stringify(path)} (components of [a-z0-9] separated by '.', '_', '__' or '-', joined by '/')`);
  if ((registry ? registry.length + 1 : 0) + path.length > MAX_NAME) bad(`name longer than ${MAX_NAME} characters`);
  if (normalize) {
    if (!registry || registry === 'index.docker.io' || registry === DOCKER_HUB_API_HOST) registry = DEFAULT_REGISTRY;
    if (registry === DEFAULT_REGISTRY && !path.includes('/')) path = `library/${path}`;
    if (defaultTag && !tag && !digest) tag = DEFAULT_TAG;
  }
  return { registry: registry ?? '', repository: path, tag, digest };
}

/** Familiar/full string form: `registry/repository[:tag][@digest]`. */
export function formatReference(r: ImageReference): string {
  let s = r.registry ? `${r.registry}/${r.repository}` : r.repository;
  if (r.tag) s += `:${r.tag}`;
  if (r.digest) s += `@${r.digest}`;
  return s;
}

/** `registry/repository` without tag or digest. */
export function repositoryName(r: ImageReference): string {
  return r.registry ? `${r.registry}/${r.repository}` : r.repository;
}

/** The shortest familiar form as docker/podman print it (`busybox:latest`). */
export function familiarName(r: ImageReference): string {
  let repo = r.repository;
  if (r.registry === DEFAULT_REGISTRY) {
    if (repo.startsWith('library/') && repo.split('/').length === 2) repo = repo.slice('library/'.length);
  } else if (r.registry) repo = `${r.registry}/${repo}`;
  let s = repo;
  if (r.tag) s += `:${r.tag}`;
  if (r.digest) s += `@${r.digest}`;
  return s;
}

/** The host to contact for a registry name (Docker Hub's API host for docker.io). */
export function registryHost(registry: string): string {
  return registry === DEFAULT_REGISTRY ? DOCKER_HUB_API_HOST : registry;
}
