/**
 * `tsregistry gc` and `tsregistry scrub`: maintenance of a registry's storage from the
 * command line (the same code the server's schedule runs). They work on the storage root of
 * the config (or --root) and are safe while a server uses it: GC keeps everything younger
 * than the grace period and re-scans manifests written while it ran; scrub only renames
 * corrupt blobs away. Imports only the storage side (no hono, no auth).
 */
import { formatBytes as human, loadConfig, parseDuration } from '../registry/config.js';
import { FilesystemDriver } from '../registry/driver-fs.js';
import { RegistryStore } from '../registry/store.js';
import { collectGarbage, type GcReport } from '../registry/gc.js';
import { applyRetention, TagImmutability, validateImmutable, validateRetention, type RetentionReport } from '../registry/retention.js';
import { scrub } from '../registry/scrub.js';
import { UsageError } from '../oci/index.js';
import { access } from 'node:fs/promises';

export type AdminOpts = { config?: string; root?: string; dryRun?: boolean; format?: string; quiet?: boolean };

async function openStore(opts: AdminOpts): Promise<{ store: RegistryStore; config: Awaited<ReturnType<typeof loadConfig>> }> {
  if (opts.format !== undefined && opts.format !== 'json' && opts.format !== 'text') throw new UsageError(`--format: expected json or text, got ${JSON.stringify(opts.format)}`);
  const config = await loadConfig({ file: opts.config, overrides: { root: opts.root } });
  try {
    await access(config.storage.root);
  } catch {
    throw new UsageError(`registry storage ${config.storage.root} does not exist (use --root or --config)`);
  }
  const driver = new FilesystemDriver(config.storage.root, { fsync: config.storage.fsync });
  // no lookup caches: another process (the server) may change the store while we run
  return { store: new RegistryStore(driver, { cacheTtlMs: 0, deleteEnabled: true }), config };
}

export async function gc(
  opts: AdminOpts & { gracePeriod?: string; deleteUntagged?: boolean; retention?: boolean },
  signal: AbortSignal,
): Promise<number> {
  const { store, config } = await openStore(opts);
  const gcCfg = config.gc as { gracePeriod: number; deleteUntagged: boolean };
  let grace = gcCfg.gracePeriod;
  if (opts.gracePeriod !== undefined) {
    try {
      grace = parseDuration(opts.gracePeriod);
    } catch {
      throw new UsageError(`--grace-period: expected a duration like 30m, 1h or 0s, got ${JSON.stringify(opts.gracePeriod)}`);
    }
  }
  const dryRun = opts.dryRun === true;
  const json = opts.format === 'json';
  const say = (s: string): void => {
    if (!json && !opts.quiet) process.stdout.write(`${s}\n`);
  };
  let retention: RetentionReport = { dryRun, deleted: [], kept: 0 };
  if (opts.retention !== false) {
    const policies = validateRetention(config.retention, parseDuration, 'config retention');
    const immutability = new TagImmutability(validateImmutable(config.immutable, 'config immutable'));
    retention = await applyRetention(store, policies, { dryRun, immutability });
    for (const d of retention.deleted) say(`${dryRun ? 'would delete' : 'deleted'} tag ${d.repo}:${d.tag} (${d.digest})`);
  }
  const report: GcReport = await collectGarbage(store, {
    dryRun,
    gracePeriodMs: grace,
    deleteUntagged: opts.deleteUntagged ?? gcCfg.deleteUntagged,
    signal,
    onDelete: (w) =>
      say(`${dryRun ? 'would delete' : 'deleted'} ${w.kind} ${w.repo ? `${w.repo}@` : ''}${w.digest}${w.size !== undefined ? ` (${human(w.size)})` : ''}`),
  });
  if (json) {
    process.stdout.write(JSON.stringify({ retention, gc: { ...report, deleted: undefined } }, null, 2) + '\n');
  } else if (!opts.quiet) {
    process.stdout.write(
      `gc${dryRun ? ' (dry run)' : ''}: ${report.repositories} repositories, ${report.blobsTotal} blobs; ` +
        `${dryRun ? 'would delete' : 'deleted'} ${report.blobsDeleted} blobs (${human(report.bytesFreed)}), ${report.manifestsDeleted} manifests, ` +
        `${retention.deleted.length} tags; kept ${human(report.bytesKept)} in ${report.durationMs} ms\n`,
    );
  }
  return 0;
}

export async function scrubCmd(opts: AdminOpts & { concurrency?: string }, signal: AbortSignal): Promise<number> {
  const { store } = await openStore(opts);
  const json = opts.format === 'json';
  const concurrency = opts.concurrency === undefined ? 4 : Number(opts.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new UsageError(`--jobs: expected a whole number >= 1, got ${JSON.stringify(opts.concurrency)}`);
  const dryRun = opts.dryRun === true;
  const tty = process.stderr.isTTY && !opts.quiet && !json;
  let lastShown = 0;
  const report = await scrub(store, {
    dryRun,
    concurrency,
    signal,
    onProblem: (p) => {
      if (json) return;
      const where = p.repo ? `${p.repo}@${p.digest}` : p.digest;
      process.stderr.write(`${tty ? '\r\x1b[K' : ''}corrupt ${p.kind} ${where}: ${p.problem}${p.quarantined ? ` (quarantined to ${p.quarantined})` : ''}\n`);
    },
    onProgress: (n, bytes) => {
      if (!tty) return;
      const now = Date.now();
      if (now - lastShown < 200) return;
      lastShown = now;
      process.stderr.write(`\r\x1b[Kscrub: ${n} blobs, ${human(bytes)} checked`);
    },
  });
  if (tty) process.stderr.write('\r\x1b[K');
  if (json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  else if (!opts.quiet || report.corrupt.length)
    process.stdout.write(
      `scrub${dryRun ? ' (dry run)' : ''}: ${report.blobsChecked} blobs (${human(report.bytesChecked)}) and ${report.manifestsChecked} manifests checked, ` +
        `${report.corrupt.length} problem${report.corrupt.length === 1 ? '' : 's'} in ${report.durationMs} ms\n`,
    );
  return report.corrupt.length ? 1 : 0;
}
