/** tscopy sync (loaded lazily by tscopy-copy.ts). */
import { UsageError } from '../oci/index.js';

export async function syncCmd(_src: string, _dest: string, _opts: Record<string, unknown>): Promise<number> {
  throw new UsageError('sync: not implemented yet');
}
