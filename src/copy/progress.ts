/**
 * Copy progress: per-blob bars on a TTY (cli-progress, loaded only then), plain lines otherwise (CI logs),
 * nothing with --quiet. Lines follow skopeo's wording ("Copying blob sha256:... done", "skipped: already
 * exists", "Writing manifest to image destination").
 */
import type { Writable } from 'node:stream';
import { createRequire } from 'node:module';
import type { Descriptor } from '../oci/manifest.js';

export type BlobOutcome = 'copied' | 'skipped' | 'mounted';

export interface BlobProgress {
  /** Bytes read from the source so far (increment). */
  tick(n: number): void;
  done(outcome: BlobOutcome, detail?: string): void;
  fail(err: unknown): void;
}

export interface CopyReporter {
  blob(kind: 'blob' | 'config', d: Descriptor): BlobProgress;
  message(line: string): void;
  /** Stop bars (before the summary is printed). */
  stop(): void;
}

const NOOP_BLOB: BlobProgress = { tick() {}, done() {}, fail() {} };

export const quietReporter: CopyReporter = {
  blob: () => NOOP_BLOB,
  message() {},
  stop() {},
};

export function humanBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

function outcomeText(outcome: BlobOutcome, detail?: string): string {
  if (outcome === 'skipped') return 'skipped: already exists';
  if (outcome === 'mounted') return `mounted${detail ? ` from ${detail}` : ''}`;
  return `done${detail ? ` ${detail}` : ''}`;
}

/** One line per finished blob (no timers, nothing redrawn): for logs. */
export function plainReporter(out: Writable = process.stdout): CopyReporter {
  return {
    blob(kind, d) {
      let bytes = 0;
      return {
        tick: (n) => void (bytes += n),
        done: (outcome, detail) => out.write(`Copying ${kind} ${d.digest} ${outcomeText(outcome, detail ?? (outcome === 'copied' ? `(${humanBytes(bytes)})` : undefined))}\n`),
        fail: (err) => out.write(`Copying ${kind} ${d.digest} failed: ${(err as Error)?.message ?? String(err)}\n`),
      };
    },
    message: (line) => void out.write(`${line}\n`),
    stop() {},
  };
}

/** cli-progress bars, one per blob in flight. */
export function ttyReporter(out: NodeJS.WriteStream = process.stdout): CopyReporter {
  const req = createRequire(import.meta.url);
  const cp = req('cli-progress') as typeof import('cli-progress');
  const multi = new cp.MultiBar(
    {
      stream: out,
      clearOnComplete: false,
      hideCursor: true,
      // fits 80 columns (cli-progress cuts longer lines): sizes while running, the outcome when done
      format: 'Copying {kind} {short} [{bar}] {sizes} {status}',
      barsize: 16,
      autopadding: true,
    },
    cp.Presets.shades_grey,
  );
  return {
    blob(kind, d) {
      const short = d.digest.slice(7, 19);
      const total = humanBytes(d.size);
      const bar = multi.create(d.size || 1, 0, { kind, short, sizes: `${humanBytes(0)} / ${total}`, status: '' });
      let v = 0;
      return {
        tick(n) {
          v += n;
          bar.update(v, { sizes: `${humanBytes(v)} / ${total}` });
        },
        done(outcome, detail) {
          bar.update(d.size || 1, { sizes: total, status: outcomeText(outcome, detail) });
          bar.stop();
        },
        fail(err) {
          bar.update(v, { sizes: `${humanBytes(v)} / ${total}`, status: `failed: ${(err as Error)?.message ?? String(err)}` });
          bar.stop();
        },
      };
    },
    message(line) {
      multi.log(`${line}\n`);
    },
    stop() {
      multi.stop();
    },
  };
}

/** The reporter for a CLI run: quiet, bars on a TTY, else plain lines. */
export function cliReporter(opts: { quiet?: boolean | undefined; out?: NodeJS.WriteStream }): CopyReporter {
  if (opts.quiet) return quietReporter;
  const out = opts.out ?? process.stdout;
  return out.isTTY ? ttyReporter(out) : plainReporter(out);
}
