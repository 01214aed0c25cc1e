/**
 * The transport table (containers/image transports.go + alltransports.ParseImageName): `transport:rest` names
 * split at the first ':' (`docker://x` is `docker` + `//x`). The docker transport (registry client, undici)
 * is loaded only when a docker: name is used, so local copies and `--help` stay lean.
 */
import { UsageError } from '../../oci/errors.js';
import type { ImageDestination, ImageName, ImageSource, OpenOptions, Transport } from '../types.js';

/**
 * Every transport is loaded on first use (the local ones pull in the layout store, tar and archive code, the docker
 * one the registry client): a docker:// copy loads no archive code and an oci: copy no undici. The key order is the
 * order names are listed in errors.
 */
const table = new Map<string, Transport | (() => Promise<Transport>)>([
  ['oci', async () => (await import('./oci.js')).ociTransport],
  ['oci-archive', async () => (await import('./oci-archive.js')).ociArchiveTransport],
  ['docker-archive', async () => (await import('./docker-archive.js')).dockerArchiveTransport],
  ['docker-daemon', async () => (await import('./docker-daemon.js')).dockerDaemonTransport],
  ['dir', async () => (await import('./dir.js')).dirTransport],
  ['tsbuild', async () => (await import('./tsbuild.js')).tsbuildTransport],
]);
let dockerLoaded = false;
table.set('docker', async () => {
  const t = (await import('./docker.js')).dockerTransport;
  dockerLoaded = true;
  return t;
});

/** End of a command: close pooled registry connections (keep-alive sockets would hold the process open). */
export async function closeTransports(): Promise<void> {
  if (!dockerLoaded) return;
  const { closeRegistryClients } = await import('../registry/index.js');
  await closeRegistryClients();
}
/** tsbuild's store under the name of the toolchain (paths.ts calls it `tsimage:`). */
table.set('tsimage', async () => (await import('./tsbuild.js')).tsbuildTransport);

export function transportNames(): string[] {
  return [...table.keys()];
}

/** The transport of a name (loading it when lazy). */
export async function getTransport(name: string): Promise<Transport> {
  const t = table.get(name);
  if (!t) throw new UsageError(`unknown transport ${JSON.stringify(name)} (known: ${[...table.keys()].join(', ')})`);
  if (typeof t === 'function') {
    const loaded = await t();
    if (loaded.name !== name && !(name === 'tsimage' && loaded.name === 'tsbuild')) throw new Error(`transport table: ${name} loaded ${loaded.name}`);
    table.set(name, loaded);
    return loaded;
  }
  return t;
}

/** Parse `transport:rest` (skopeo's image names); throws UsageError naming the problem. */
export async function parseImageName(s: string): Promise<ImageName> {
  const i = s.indexOf(':');
  if (i <= 0) throw new UsageError(`Invalid image name ${JSON.stringify(s)}, expected colon-separated transport:reference`);
  const tname = s.slice(0, i);
  if (!table.has(tname)) throw new UsageError(`Invalid image name ${JSON.stringify(s)}, unknown transport ${JSON.stringify(tname)}`);
  const t = await getTransport(tname);
  const name = t.parse(s.slice(i + 1));
  return name;
}

export async function openSource(name: ImageName, opts?: OpenOptions): Promise<ImageSource> {
  return (await getTransport(name.transport === 'tsimage' ? 'tsbuild' : name.transport)).source(name, opts);
}

export async function openDestination(name: ImageName, opts?: OpenOptions): Promise<ImageDestination> {
  return (await getTransport(name.transport === 'tsimage' ? 'tsbuild' : name.transport)).destination(name, opts);
}

