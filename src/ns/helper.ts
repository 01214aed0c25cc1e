/**
 * The native helper (native/tsimage-run.c): Node cannot call clone/unshare/pivot_root/mount/capset,
 * so one small C program does the whole container setup in a single exec (a few ms, versus a chain
 * of util-linux `unshare`/`mount`/`setpriv` execs). It is compiled with the system C compiler
 * (`cc`/`gcc`) by `npm run build` (scripts/build-native.mjs) or, when missing or stale, on first
 * use; the binary name carries a hash of the source, so a rebuilt tree never runs an old helper.
 * `TSIMAGE_RUN_HELPER=/path/to/tsimage-run` overrides the lookup (prebuilt binaries).
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TsimageError } from '../oci/errors.js';

const here = dirname(fileURLToPath(import.meta.url));
/** dist/src/ns -> <repo>/src/ns/native/tsimage-run.c; also beside this file (src/ns when run from source). */
const SOURCES = [join(here, '..', '..', '..', 'src', 'ns', 'native', 'tsimage-run.c'), join(here, 'native', 'tsimage-run.c')];
const OUT_DIR = join(here, 'native');

let cached: string | undefined;

/** The helper's source file, or undefined when this install has none (prebuilt only). */
export function helperSource(): string | undefined {
  return SOURCES.find((p) => existsSync(p));
}

/** Path of a built helper, compiling it first when needed. */
export function helperPath(): string {
  if (cached) return cached;
  const env = process.env.TSIMAGE_RUN_HELPER;
  if (env) return (cached = env);
  const src = helperSource();
  if (!src) {
    const prebuilt = existsSync(OUT_DIR) ? readdirSync(OUT_DIR).filter((n) => n.startsWith('tsimage-run-')) : [];
    if (prebuilt[0]) return (cached = join(OUT_DIR, prebuilt[0]));
    throw new TsimageError(`the native helper tsimage-run is not built and its source is missing (looked in ${SOURCES.join(', ')})`);
  }
  const text = readFileSync(src);
  const hash = createHash('sha256').update(text).digest('hex').slice(0, 12);
  const bin = join(OUT_DIR, `tsimage-run-${hash}`);
  if (!existsSync(bin)) buildHelper(src, bin);
  return (cached = bin);
}

function buildHelper(src: string, bin: string): void {
  mkdirSync(dirname(bin), { recursive: true });
  const tmp = `${bin}.tmp-${process.pid}`;
  const cc = process.env.CC || 'cc';
  try {
    execFileSync(cc, ['-O2', '-Wall', '-o', tmp, src], { stdio: ['ignore', 'pipe', 'pipe'] });
    renameSync(tmp, bin); // atomic: concurrent builders race harmlessly
  } catch (e) {
    rmSync(tmp, { force: true });
    const err = e as { stderr?: Buffer; message: string };
    throw new TsimageError(
      `cannot build the native helper tsimage-run with ${cc} (install a C compiler, or set TSIMAGE_RUN_HELPER): ${err.stderr?.toString() || err.message}`,
      { cause: e },
    );
  }
  // drop helpers built from older sources
  for (const n of readdirSync(dirname(bin))) {
    if (n.startsWith('tsimage-run-') && join(dirname(bin), n) !== bin && !n.includes('.tmp-')) rmSync(join(dirname(bin), n), { force: true });
  }
}
