/**
 * Pull and push for tsbuild, through src/copy's engine (one registry client in the project):
 * `docker://NAME` (or any transport:name) <-> the local store (the engine's `tsbuild:` transport,
 * pointed at this store's directory). Loaded lazily: a build that pulls nothing never loads it.
 */
import { formatReference, parseReference, TsimageError, UsageError } from '../oci/index.js';
import type { ImageStore, LoadedImage } from './store.js';

export interface TransferOptions {
  tlsVerify?: boolean | undefined;
  authfile?: string | undefined;
  creds?: string | undefined;
  certDir?: string | undefined;
  quiet?: boolean | undefined;
  /** policy.json to check pulled images against (buildah's --signature-policy; default: the containers lookup order) */
  signaturePolicy?: string | undefined;
  /** pull without any policy check (skopeo's --insecure-policy) */
  insecurePolicy?: boolean | undefined;
  /** manifest format at the destination (push) */
  format?: string | undefined;
  signal?: AbortSignal | undefined;
  log?: ((line: string) => void) | undefined;
}

/** A transport:name as given, or docker://NAME for a plain image name. */
export function remoteName(name: string): string {
  if (/^[a-z-]+:/.test(name) && !/^[^/]+:\d+\//.test(name) && !/^[\w.-]+:[\w.-]+$/.test(name)) {
    const t = name.slice(0, name.indexOf(':'));
    if (['docker', 'oci', 'oci-archive', 'docker-archive', 'dir', 'tsbuild', 'tsimage'].includes(t)) return name;
  }
  return `docker://${name}`;
}

async function storeName(store: ImageStore, rest: string) {
  const t = await import('../copy/transports/index.js');
  const n = await t.parseImageName(`tsbuild:${rest}`);
  // the engine's tsbuild: transport reads $TSIMAGE_ROOT; this store may live elsewhere (--root)
  Object.assign(n, { store: store.layout.dir });
  return n;
}

/** Pull `name` (docker://... by default) into the store. */
export async function pullImage(name: string, store: ImageStore, o: TransferOptions = {}): Promise<LoadedImage | undefined> {
  const [{ copyImage }, t, pol] = await Promise.all([import('../copy/engine.js'), import('../copy/transports/index.js'), import('../copy/policy.js')]);
  const src = remoteName(name);
  // as buildah: a pull is checked against policy.json before anything is written to the store
  const policy = o.insecurePolicy ? pol.insecurePolicy() : await pol.loadPolicy(o.signaturePolicy);
  const local = src.startsWith('docker://') ? formatReference(parseReference(src.slice('docker://'.length))) : `localhost/${name.replace(/^[a-z-]+:/, '').replace(/[^a-z0-9._/-]+/gi, '-').replace(/^[-/.]+/, '').toLowerCase() || 'image'}:latest`;
  const open = { tlsVerify: o.tlsVerify, authfile: o.authfile, creds: o.creds, certDir: o.certDir, signal: o.signal };
  o.log?.(`Trying to pull ${src}...`);
  const srcName = await t.parseImageName(src);
  const dstName = await storeName(store, local);
  const source = await t.openSource(srcName, open);
  try {
    const dest = await t.openDestination(dstName, open);
    try {
      await copyImage(source, dest, {
        signal: o.signal,
        beforeWrite: async (ctx) => {
          await pol.enforcePolicy(policy, ctx.source, ctx.sourceManifest, { signal: o.signal });
        },
      });
    } finally {
      await (dest as { close?: () => Promise<void> }).close?.();
    }
  } catch (e) {
    throw new TsimageError(`pulling ${src}: ${(e as Error).message}`, { cause: e });
  } finally {
    await (source as { close?: () => Promise<void> }).close?.();
    await t.closeTransports();
  }
  return store.find(local);
}

/** Push a stored image to `dest` (default: docker://<its name>). */
export async function pushImage(store: ImageStore, name: string, dest: string | undefined, o: TransferOptions = {}): Promise<string> {
  const [{ copyImage }, t, { blobInfoCache }] = await Promise.all([import('../copy/engine.js'), import('../copy/transports/index.js'), import('../copy/blobinfo.js')]);
  const img = await store.find(name);
  if (!img) throw new UsageError(`image ${JSON.stringify(name)} is not in the local store`);
  const target = remoteName(dest ?? name);
  const open = { tlsVerify: o.tlsVerify, authfile: o.authfile, creds: o.creds, certDir: o.certDir, signal: o.signal };
  const srcName = await storeName(store, img.desc.digest.startsWith('sha256:') ? `@${img.desc.digest}` : name);
  const source = await t.openSource(srcName, open);
  let digest = '';
  try {
    const destination = await t.openDestination(await t.parseImageName(target), open);
    try {
      const format = o.format === 'docker' || o.format === 'v2s2' ? 'v2s2' : o.format === 'oci' ? 'oci' : undefined;
      const r = await copyImage(source, destination, { signal: o.signal, blobInfoCache: blobInfoCache(), ...(format ? { format } : {}) });
      digest = r.manifest.digest;
    } finally {
      await (destination as { close?: () => Promise<void> }).close?.();
    }
  } catch (e) {
    throw new TsimageError(`pushing ${name} to ${target}: ${(e as Error).message}`, { cause: e });
  } finally {
    await (source as { close?: () => Promise<void> }).close?.();
    await t.closeTransports();
  }
  return digest;
}
