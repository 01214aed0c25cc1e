/**
 * `tsbuild:NAME`: tsbuild's local image store, an OCI layout at imageStoreDir() whose index.json names images
 * by full reference (`localhost/app:latest`, `docker.io/library/busybox:latest`), as the builder writes them.
 * Short names resolve as buildah/podman do: `app` reads `localhost/app:latest`, then
 * `docker.io/library/app:latest`, and writes `localhost/app:latest`. `tsbuild:@sha256:...` (or a bare digest)
 * names a stored manifest by digest.
 */
import { familiarName, parseReference } from '../../oci/reference.js';
import { imageStoreDir } from '../../oci/paths.js';
import { OciLayout } from '../../oci/store.js';
import { UsageError } from '../../oci/errors.js';
import type { ImageName, Transport } from '../types.js';
import { digestRef, LocalName } from './common.js';
import { LayoutDestination, LayoutSource } from './oci.js';

export interface TsbuildName extends ImageName {
  readonly store: string;
  /** Names to try when reading, most likely first; the first is the one written. */
  readonly candidates: string[];
}

/** The store names a user-given image name stands for (first = the canonical one). */
export function storeNames(name: string): string[] {
  const d = digestRef(name);
  if (d) return [d];
  let r;
  try {
    r = parseReference(name, { normalize: false });
  } catch (e) {
    throw new UsageError(`invalid tsbuild: image name ${JSON.stringify(name)}: ${(e as Error).message}`);
  }
  if (r.digest && !r.tag) {
    // name@digest: the digest decides.
    return [r.digest];
  }
  const tag = r.tag ?? 'latest';
  if (r.registry) return [`${r.registry}/${r.repository}:${tag}`];
  const out = [`localhost/${r.repository}:${tag}`];
  out.push(r.repository.includes('/') ? `docker.io/${r.repository}:${tag}` : `docker.io/library/${r.repository}:${tag}`);
  return out;
}

export const tsbuildTransport: Transport = {
  name: 'tsbuild',
  parse(rest) {
    if (rest === '') throw new UsageError('invalid tsbuild: reference: empty image name');
    const candidates = storeNames(rest);
    const store = imageStoreDir();
    const first = candidates[0]!;
    let dockerReference: string | undefined;
    if (!digestRef(first)) dockerReference = first;
    const name = new LocalName('tsbuild', rest, `${store}:${first}`, [store], dockerReference);
    return Object.assign(name, { store, candidates });
  },
  async source(name) {
    const n = name as TsbuildName;
    const layout = await OciLayout.open(n.store).catch((e: unknown) => {
      throw new UsageError(`tsbuild image store ${n.store} has no images yet (${(e as Error).message})`);
    });
    return new LayoutSource(name, layout, n.candidates);
  },
  async destination(name) {
    const n = name as TsbuildName;
    const first = n.candidates[0]!;
    if (digestRef(first)) throw new UsageError(`${name}: cannot write to a digest reference (give a name)`);
    const layout = await OciLayout.open(n.store, { create: true });
    return new LayoutDestination(name, layout, first);
  },
};

/** `localhost/app:latest` -> `app:latest` style display names. */
export function displayName(storeName: string): string {
  try {
    return familiarName(parseReference(storeName, { normalize: false }));
  } catch {
    return storeName;
  }
}
