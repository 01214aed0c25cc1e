/** Picking a backend, and turning a failed run into a RunError. */
import { RunError, UsageError } from '../oci/errors.js';
import { BuiltinRunner } from './builtin.js';
import type { Isolation, RunResult, Runner } from './types.js';

/** `--isolation builtin|chroot|oci` (default builtin; `TSIMAGE_ISOLATION` / `BUILDAH_ISOLATION` as buildah reads it). */
export async function createRunner(isolation?: string): Promise<Runner> {
  const iso = (isolation || process.env.TSIMAGE_ISOLATION || 'builtin') as Isolation;
  switch (iso) {
    case 'builtin':
    case 'chroot':
      return new BuiltinRunner({ isolation: iso });
    case 'oci': {
      const { OciRunner } = await import('./oci.js');
      return new OciRunner();
    }
    default:
      throw new UsageError(`unknown isolation ${JSON.stringify(isolation)} (expected builtin, chroot or oci)`);
  }
}

/** Throw a RunError (exit code or signal in words; OOM and timeout noted) unless the run succeeded. */
export function checkResult(argv: string[], r: RunResult): void {
  if (r.exitCode === 0) return;
  const e = new RunError(argv, r.exitCode, r.signal);
  if (r.oomKilled) e.message += ' (out of memory: the memory limit was hit)';
  else if (r.timedOut) e.message += ' (timed out)';
  else if (r.aborted) e.message += ' (aborted)';
  throw e;
}
