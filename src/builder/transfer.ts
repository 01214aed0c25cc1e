/**
 * Pull and push for tsbuild: through src/copy's engine (one registry client in the project).
 * Until the engine lands, pulls come only from the local store / the embedded base.
 */
import { TsimageError } from '../oci/index.js';
import type { ImageStore, LoadedImage } from './store.js';

export interface TransferOptions {
  tlsVerify?: boolean | undefined;
  authfile?: string | undefined;
  creds?: string | undefined;
  quiet?: boolean | undefined;
  format?: string | undefined;
  signal?: AbortSignal | undefined;
}

type EngineModule = Record<string, unknown>;

async function engine(): Promise<EngineModule | undefined> {
  try {
    const m = (await import('../copy/index.js')) as EngineModule;
    return typeof m.copyImage === 'function' ? m : undefined;
  } catch {
    return undefined;
  }
}

/** Whether pulling/pushing is available (the copy engine has landed). */
export async function transferAvailable(): Promise<boolean> {
  return (await engine()) !== undefined;
}

export async function pullImage(name: string, store: ImageStore, _o: TransferOptions = {}): Promise<LoadedImage | undefined> {
  const e = await engine();
  if (!e) return undefined;
  throw new TsimageError(`pulling ${name}: the copy engine integration is not wired yet`);
}

export async function pushImage(name: string, dest: string | undefined, _o: TransferOptions = {}): Promise<void> {
  const e = await engine();
  if (!e) throw new TsimageError(`cannot push ${name}${dest ? ` to ${dest}` : ''}: the copy engine (src/copy) is not available in this build`);
  throw new TsimageError(`pushing ${name}: the copy engine integration is not wired yet`);
}
