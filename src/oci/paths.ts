/** Where tsimage keeps local state (image store, build cache, registry data). */
import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * The root for tsbuild's local state: `$TSIMAGE_ROOT`, else `/var/lib/tsimage` for root
 * (as containers-storage uses /var/lib/containers), else `$XDG_DATA_HOME/tsimage`.
 * Layout: `<root>/images` (OCI image layout: the local image store, also tscopy's `tsimage:`
 * transport), `<root>/cache` (build cache), `<root>/layers` (unpacked layer cache),
 * `<root>/containers` (working containers).
 */
export function defaultRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TSIMAGE_ROOT) return env.TSIMAGE_ROOT;
  if (process.getuid?.() === 0) return '/var/lib/tsimage';
  return join(env.XDG_DATA_HOME || join(homedir(), '.local', 'share'), 'tsimage');
}

export function imageStoreDir(root = defaultRoot()): string {
  return join(root, 'images');
}

/** Default data dir of `tsregistry serve`: `$TSIMAGE_REGISTRY_ROOT`, else `<defaultRoot>/registry`. */
export function defaultRegistryRoot(env: NodeJS.ProcessEnv = process.env): string {
  return env.TSIMAGE_REGISTRY_ROOT || join(defaultRoot(env), 'registry');
}
