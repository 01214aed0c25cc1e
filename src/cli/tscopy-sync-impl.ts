/** tscopy sync (loaded lazily by tscopy-copy.ts). */
import { setMaxListeners } from 'node:events';
import { TsimageError, UsageError } from '../oci/errors.js';
import { sync } from '../copy/sync.js';
import { cliReporter } from '../copy/progress.js';
import type { CopyOptions } from '../copy/engine.js';
import { commonCopyOptions, openOptions, runCopy, signingHooks, summaryLine, warmUp } from './tscopy-copy-impl.js';
import { rootController } from './common.js';
import { closeTransports, openDestination, openSource, parseImageName } from '../copy/transports/index.js';

type Opts = Record<string, unknown>;
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

export async function syncCmd(srcArg: string, destArg: string, opts: Opts): Promise<number> {
  try {
    return await syncCmdInner(srcArg, destArg, opts);
  } finally {
    await closeTransports();
  }
}

async function syncCmdInner(srcArg: string, destArg: string, opts: Opts): Promise<number> {
  const srcTransport = str(opts.src) as 'docker' | 'dir' | 'yaml';
  const destTransport = str(opts.dest) as 'docker' | 'dir';
  if (srcTransport === 'dir' && destTransport === 'dir') throw new UsageError('sync from dir to dir is not supported');
  const quiet = opts.quiet === true;
  const log = (s: string) => void (quiet ? undefined : process.stdout.write(`${s}\n`));
  const srcOpen = openOptions(opts, 'src');
  const destOpen = openOptions(opts, 'dest');
  // ping the registries while the rest starts up
  if (srcTransport === 'docker') void parseImageName(`docker://${srcArg.replace(/^docker:\/\//, '')}`).then((n) => warmUp(n, srcOpen, false), () => undefined);
  if (destTransport === 'docker') void parseImageName(`docker://${destArg.replace(/^docker:\/\//, '').replace(/\/+$/, '')}/x`).then((n) => warmUp(n, destOpen, true), () => undefined);
  const { carryOnly, ...hooks } = await signingHooks(opts, destOpen, (s) => process.stderr.write(`${s}\n`));
  const retryTimes = typeof opts.retryTimes === 'number' ? opts.retryTimes : 0;
  const base: CopyOptions = {
    ...commonCopyOptions(opts),
    all: opts.all === true,
    destCompress: str(opts.destCompressFormat) as CopyOptions['destCompress'],
    ...hooks,
    inflight: new Map(),
  };
  setMaxListeners(0, rootController.signal);
  const summary = await sync(srcArg, destArg, {
    signal: rootController.signal,
    srcTransport,
    destTransport,
    scoped: opts.scoped === true,
    all: opts.all === true,
    dryRun: opts.dryRun === true,
    prune: opts.prune === true,
    keepGoing: opts.keepGoing === true,
    converting: base.format !== undefined || base.destCompress !== undefined,
    platform: base.platform,
    srcOpen,
    destOpen,
    log,
    // signatures/referrers added at the source since the last sync still travel (the signing engineer's hook)
    // (only registries: dir: cannot hold signatures, and opening a dir: destination would reset it)
    upToDate:
      opts.removeSignatures === true || destTransport !== 'docker'
        ? undefined
        : async (src, dest, so, read) => {
            const s = await openSource(src, { ...srcOpen, ...so });
            try {
              const d = await openDestination(dest, destOpen);
              try {
                // the manifest sync's up-to-date check just read (not fetched a second time)
                const sourceManifest = read ?? (await s.manifest(undefined, { signal: rootController.signal }));
                await carryOnly({ source: s, sourceManifest, destination: d, destManifest: sourceManifest, io: { signal: rootController.signal } });
              } finally {
                await d.close();
              }
            } finally {
              await s.close();
            }
          },
    copy: async (src, dest, so, known) => {
      const reporter = cliReporter({ quiet: quiet || !process.stdout.isTTY ? true : false });
      try {
        const r = await runCopy({ src, dest, options: { ...base, reporter, known }, srcOpen: { ...srcOpen, ...so }, destOpen, retryTimes }, log);
        log(`  ${summaryLine(r)}`);
        return r;
      } finally {
        reporter.stop();
      }
    },
  });
  const s = summary;
  process.stdout.write(
    `${opts.dryRun ? 'Dry run: would sync' : 'Synced'} ${s.copied + s.skipped + s.failed} image(s): ${s.copied} ${opts.dryRun ? 'to copy' : 'copied'}, ${s.skipped} skipped (up to date), ${s.failed} failed${opts.prune ? `, ${s.pruned} ${opts.dryRun ? 'to delete' : 'deleted'}` : ''}\n`,
  );
  // runMain sets the exit code from what the program returns (nothing): failures are reported by throwing.
  if (s.failed > 0) throw new TsimageError(`sync: ${s.failed} image(s) failed: ${s.failures.map((f) => f.image).join(', ')}`);
  return 0;
}
