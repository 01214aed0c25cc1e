/**
 * The docker transport's simple-signature storage: the registries.d lookaside (loaded with the first signature
 * read or write, so a copy without signatures never loads the YAML parser unless a registries.d file exists).
 */
import type { Digest, ImageReference, Io } from '../registry/oci.js';
import { repositoryName } from '../registry/oci.js';
import type { RegistryClient } from '../registry/client.js';
import { lookasideFor, registriesD, sigstoreAttachmentsSetting, type LookasideScope } from '../registries-d.js';
import { checkWritableLookaside, deleteLookaside, LookasideError, readLimited, readLookaside, writeLookaside, type LookasideGet } from '../lookaside.js';
import { DockerImageName } from './docker.js';

/** The registries.d lookup scope of an image: `host/repo:tag` (or `@digest`) and its parent namespaces. */
export function lookasideScope(at: ImageReference): LookasideScope {
  const name = repositoryName(at);
  const identity = at.digest ? `${name}@${at.digest}` : `${name}:${at.tag ?? 'latest'}`;
  return { identity, namespaces: new DockerImageName(at, '').policyNamespaces() };
}

/** GET through the registry's client (its TLS settings and pools; no credentials are sent to another host). */
function clientGet(client: RegistryClient): LookasideGet {
  return async (url, io) => {
    let u = url;
    for (let hop = 0; ; hop++) {
      const res = await client.send({ method: 'GET', path: u.href, scopes: [], signal: io.signal });
      const loc = res.headers.location;
      if (res.statusCode >= 300 && res.statusCode < 400 && loc && hop < 10) {
        await res.body.dump();
        u = new URL(Array.isArray(loc) ? loc[0]! : loc, u);
        continue;
      }
      if (res.statusCode !== 200) {
        await res.body.dump();
        return { status: res.statusCode };
      }
      const ct = res.headers['content-type'];
      return { status: 200, body: await readLimited(res.body, io.limit, `signature ${u.href}`), contentType: Array.isArray(ct) ? ct[0] : ct };
    }
  };
}

export async function readLookasideOf(client: RegistryClient, at: ImageReference, dir: string | undefined, digest: Digest, io: Io): Promise<Buffer[]> {
  const cfg = await registriesD(dir);
  const loc = lookasideFor(cfg, lookasideScope(at), false);
  try {
    return await readLookaside(loc.url, at.repository, digest, clientGet(client), io);
  } catch (e) {
    if (e instanceof LookasideError) throw new LookasideError(`${e.message} (lookaside from ${loc.from})`, { cause: e });
    throw e;
  }
}

export async function checkLookasideOf(at: ImageReference, dir: string | undefined): Promise<void> {
  const cfg = await registriesD(dir);
  const loc = lookasideFor(cfg, lookasideScope(at), true);
  checkWritableLookaside(loc.url, loc.from);
}

export async function writeLookasideOf(at: ImageReference, dir: string | undefined, digest: Digest, sigs: readonly Buffer[]): Promise<string[]> {
  const cfg = await registriesD(dir);
  const loc = lookasideFor(cfg, lookasideScope(at), true);
  return writeLookaside(loc.url, loc.from, at.repository, digest, sigs);
}

/** Remove the signatures of `digest` from the lookaside signatures of `at` are written to (tscopy delete, as skopeo's). */
export async function deleteLookasideOf(at: ImageReference, dir: string | undefined, digest: Digest): Promise<string[]> {
  const cfg = await registriesD(dir);
  const loc = lookasideFor(cfg, lookasideScope(at), true);
  return deleteLookaside(loc.url, at.repository, digest);
}

/** registries.d `use-sigstore-attachments` for `at` (where the image is read from or written to); undefined when not set. */
export async function sigstoreAttachmentsOf(at: ImageReference, dir: string | undefined): Promise<boolean | undefined> {
  return sigstoreAttachmentsSetting(await registriesD(dir), lookasideScope(at));
}
