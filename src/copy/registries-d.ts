/**
 * containers-registries.d(5): where "simple signing" signatures of docker:// images live (lookaside storage).
 *
 * The directory is skopeo's `--registries.d DIR`, else `$HOME/.config/containers/registries.d` when it exists, else
 * `/etc/containers/registries.d` (containers/image docker/registries_d.go registriesDirPath). Every `*.yaml` file in it
 * is read and merged; a `default-docker` section or a `docker:` namespace defined in two files is an error naming both.
 * Keys per section: `lookaside`, `lookaside-staging` (and their older names `sigstore`, `sigstore-staging`),
 * `use-sigstore-attachments`. Unknown keys are ignored, as containers/image does (newer files stay readable).
 *
 * Lookup (signatureTopLevel): the image's full identity (`host/repo:tag`), then each parent namespace (`host/repo`,
 * `host`, `*.domain`), then `default-docker`; the first section that names a location wins (a section without one
 * falls through to its parents). For writing, `lookaside-staging` comes before `lookaside`. When nothing matches,
 * containers/image's built-in default: `file:///var/lib/containers/sigstore` for root, else
 * `file://$HOME/.local/share/containers/sigstore`.
 */
import { readdir, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { UsageError } from '../oci/errors.js';

export const SYSTEM_REGISTRIES_D = '/etc/containers/registries.d';
export const USER_REGISTRIES_D = '.config/containers/registries.d';

export interface RegistryNamespace {
  lookaside?: string | undefined;
  lookasideStaging?: string | undefined;
  /** The older names (still read, as containers/image does). */
  sigstore?: string | undefined;
  sigstoreStaging?: string | undefined;
  useSigstoreAttachments?: boolean | undefined;
  /** The file this section came from (messages). */
  file: string;
}

export interface RegistriesD {
  /** The directory read (messages). */
  dir: string;
  defaultDocker?: RegistryNamespace | undefined;
  docker: Map<string, RegistryNamespace>;
}

/** The identity of a docker image for the lookup: `host/repo:tag` (or `@digest`) and its parent scopes, most specific first. */
export interface LookasideScope {
  identity: string;
  namespaces: readonly string[];
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function parseNamespace(v: unknown, file: string, path: string): RegistryNamespace {
  const ns: RegistryNamespace = { file };
  if (v === null || v === undefined) return ns;
  if (!isObj(v)) throw new UsageError(`${file}: ${path}: must be a mapping (lookaside, lookaside-staging, use-sigstore-attachments)`);
  const str = (k: string): string | undefined => {
    const x = v[k];
    if (x === undefined || x === null) return undefined;
    if (typeof x !== 'string') throw new UsageError(`${file}: ${path}.${k}: must be a URL string, not ${JSON.stringify(x)}`);
    if (x === '') return undefined;
    try {
      new URL(x);
    } catch {
      throw new UsageError(`${file}: ${path}.${k}: invalid URL ${JSON.stringify(x)} (want file:///path, http:// or https://)`);
    }
    return x;
  };
  ns.lookaside = str('lookaside');
  ns.lookasideStaging = str('lookaside-staging');
  ns.sigstore = str('sigstore');
  ns.sigstoreStaging = str('sigstore-staging');
  const u = v['use-sigstore-attachments'];
  if (u !== undefined && u !== null) {
    if (typeof u !== 'boolean') throw new UsageError(`${file}: ${path}.use-sigstore-attachments: must be true or false, not ${JSON.stringify(u)}`);
    ns.useSigstoreAttachments = u;
  }
  return ns;
}

/** Parse one registries.d file's text into `into` (merging; duplicates are errors naming both files). */
export async function parseRegistriesDFile(text: string, file: string, into: RegistriesD): Promise<void> {
  // the YAML parser only when a registries.d file exists (~10-20 ms of start-up otherwise)
  const { default: YAML } = await import('yaml');
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (e) {
    throw new UsageError(`parsing ${file}: ${(e as Error).message}`);
  }
  if (doc === null || doc === undefined) return;
  if (!isObj(doc)) throw new UsageError(`parsing ${file}: want a mapping with default-docker and/or docker`);
  if (doc['default-docker'] !== undefined && doc['default-docker'] !== null) {
    if (into.defaultDocker)
      throw new UsageError(`Error parsing signature storage configuration: "default-docker" defined both in "${into.defaultDocker.file}" and "${file}"`);
    into.defaultDocker = parseNamespace(doc['default-docker'], file, 'default-docker');
  }
  const docker = doc.docker;
  if (docker !== undefined && docker !== null) {
    if (!isObj(docker)) throw new UsageError(`${file}: docker: must be a mapping of namespaces (host[/path]) to settings`);
    for (const [name, v] of Object.entries(docker)) {
      const prev = into.docker.get(name);
      if (prev) throw new UsageError(`Error parsing signature storage configuration: "docker" namespace "${name}" defined both in "${prev.file}" and "${file}"`);
      into.docker.set(name, parseNamespace(v, file, `docker[${JSON.stringify(name)}]`));
    }
  }
}

/** Which registries.d directory applies (containers/image registriesDirPath). */
export async function registriesDPath(explicit?: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  if (explicit) return explicit;
  const user = join(env.HOME ?? homedir(), USER_REGISTRIES_D);
  let p = userDirChoice.get(user);
  if (!p) {
    p = readdir(user).then(
      () => user,
      () => SYSTEM_REGISTRIES_D,
    );
    userDirChoice.set(user, p);
  }
  return p;
}
/** registriesDPath's choice per home directory, once per process (it is asked for every image of a sync). */
const userDirChoice = new Map<string, Promise<string>>();

/** Read and merge every `*.yaml` file of a registries.d directory (a missing directory is an empty configuration). */
export async function loadRegistriesD(dir: string): Promise<RegistriesD> {
  const out: RegistriesD = { dir, docker: new Map() };
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return out;
    throw new UsageError(`reading registries.d ${dir}: ${(e as Error).message}`);
  }
  for (const n of names.filter((x) => x.endsWith('.yaml')).sort()) {
    const file = join(dir, n);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EISDIR') continue;
      throw new UsageError(`reading ${file}: ${(e as Error).message}`);
    }
    await parseRegistriesDFile(text, file, out);
  }
  return out;
}

const cache = new Map<string, Promise<RegistriesD>>();

/** The configuration for `--registries.d` (or the default directory), read once per process. */
export async function registriesD(explicit?: string): Promise<RegistriesD> {
  const dir = await registriesDPath(explicit);
  let p = cache.get(dir);
  if (!p) {
    p = loadRegistriesD(dir);
    cache.set(dir, p);
    p.catch(() => cache.delete(dir));
  }
  return p;
}

function topLevel(ns: RegistryNamespace, write: boolean): string | undefined {
  if (write) {
    if (ns.lookasideStaging) return ns.lookasideStaging;
    if (ns.sigstoreStaging) return ns.sigstoreStaging;
  }
  return ns.lookaside ?? ns.sigstore;
}

/** containers/image's built-in default lookaside (no configuration matched). */
export function builtinLookaside(env: NodeJS.ProcessEnv = process.env): string {
  if (process.geteuid?.() === 0) return 'file:///var/lib/containers/sigstore';
  return `file://${join(env.HOME ?? homedir(), '.local/share/containers/sigstore')}`;
}

export interface LookasideLocation {
  /** The base URL (without the repository path). */
  url: string;
  /** Where it came from: `file: section` or `built-in default`. */
  from: string;
}

/** The lookaside base for an image (read: `lookaside`; write: `lookaside-staging`, then `lookaside`). */
export function lookasideFor(cfg: RegistriesD, scope: LookasideScope, write: boolean): LookasideLocation {
  const sections: [string, RegistryNamespace | undefined][] = [
    [scope.identity, cfg.docker.get(scope.identity)],
    ...scope.namespaces.map((n): [string, RegistryNamespace | undefined] => [n, cfg.docker.get(n)]),
  ];
  for (const [name, ns] of sections) {
    if (!ns) continue;
    const u = topLevel(ns, write);
    if (u) return { url: u, from: `${ns.file}: docker[${JSON.stringify(name)}]` };
  }
  if (cfg.defaultDocker) {
    const u = topLevel(cfg.defaultDocker, write);
    if (u) return { url: u, from: `${cfg.defaultDocker.file}: default-docker` };
  }
  return { url: builtinLookaside(), from: 'built-in default' };
}

/** containers/image useSigstoreAttachments: the most specific section that says, else default-docker, else false. */
export function useSigstoreAttachments(cfg: RegistriesD, scope: LookasideScope): boolean {
  return sigstoreAttachmentsSetting(cfg, scope) ?? false;
}

/** use-sigstore-attachments as configured for an image (the most specific section that says, else default-docker); undefined when no file sets it. */
export function sigstoreAttachmentsSetting(cfg: RegistriesD, scope: LookasideScope): boolean | undefined {
  for (const name of [scope.identity, ...scope.namespaces]) {
    const v = cfg.docker.get(name)?.useSigstoreAttachments;
    if (v !== undefined) return v;
  }
  return cfg.defaultDocker?.useSigstoreAttachments;
}
