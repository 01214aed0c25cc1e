/**
 * What every command line shares: the root AbortController (SIGINT/SIGTERM abort it so
 * every temp dir, mount and child is released in `finally`), error printing and exit codes.
 * Only this layer maps error classes to exit codes.
 */
import { TsimageError, UsageError } from '../oci/errors.js';

export const VERSION = '0.1.0';

/** skopeo's `--tls-verify[=bool]` value: `false`, `0` or `no` is false, anything else (or no value) true. */
export const parseBool = (v: string | undefined): boolean => v === undefined || v === '' || !/^(false|0|no)$/i.test(v);

export const EXIT = { ok: 0, failure: 1, usage: 2, interrupted: 130 } as const;

/** Aborted on the first SIGINT/SIGTERM; a second signal exits at once. */
export const rootController = new AbortController();
let signalled = 0;
function onSignal(sig: NodeJS.Signals): void {
  signalled++;
  if (signalled > 1) process.exit(sig === 'SIGINT' ? 130 : 143);
  rootController.abort(new TsimageError(`interrupted by ${sig}`));
}

export function installSignalHandlers(): void {
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

function causeChain(err: unknown): string {
  const lines: string[] = [];
  let e: unknown = err;
  while (e) {
    lines.push(e instanceof Error ? (e.stack ?? e.message) : String(e));
    e = e instanceof Error ? e.cause : undefined;
    if (lines.length > 10) break;
  }
  return lines.join('\n  caused by: ');
}

/** Commander's parse errors (unknown/missing option or argument, bad value) are usage errors: exit 2 (commander says 1). */
function commanderExit(code: string, err: object): number {
  if (code === 'commander.help') return (err as { exitCode?: number }).exitCode ?? EXIT.usage;
  return EXIT.usage;
}

export function exitCodeFor(err: unknown): number {
  if (rootController.signal.aborted) return EXIT.interrupted;
  if (err instanceof UsageError) return EXIT.usage;
  if (err && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'string') {
    const code = (err as { code: string }).code;
    // commander's own usage errors
    if (code.startsWith('commander.')) return commanderExit(code, err);
  }
  return EXIT.failure;
}

/** Print `tool: message` (with the cause chain under --debug or TSIMAGE_DEBUG=1) and exit. */
export function fail(tool: string, err: unknown): never {
  // an interrupted command says so ("interrupted by SIGINT"), not what a stream's abort happened to throw
  if (rootController.signal.aborted) err = rootController.signal.reason;
  const debug = process.argv.includes('--debug') || process.env.TSIMAGE_DEBUG === '1';
  if (debug) process.stderr.write(`${tool}: ${causeChain(err)}\n`);
  else process.stderr.write(`${tool}: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(exitCodeFor(err));
}

/** Run a CLI's main with signal handling and error mapping. */
export async function runMain(tool: string, main: (argv: string[]) => Promise<number | void>): Promise<void> {
  installSignalHandlers();
  try {
    const code = await main(process.argv.slice(2));
    process.exitCode = code ?? 0;
  } catch (err) {
    if (err && typeof err === 'object' && 'code' in err) {
      const code = (err as { code: unknown }).code;
      if (code === 'commander.helpDisplayed' || code === 'commander.version') {
        process.exitCode = 0;
        return;
      }
      if (typeof code === 'string' && code.startsWith('commander.')) {
        process.exitCode = commanderExit(code, err);
        return;
      }
    }
    fail(tool, err);
  }
}
