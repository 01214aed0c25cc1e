/** `tsbuild bud`: option parsing for src/builder/build.ts. */
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { UsageError } from '../oci/errors.js';
import { rootController } from './common.js';

export function boolOpt(v: unknown, name: string): boolean {
  if (v === undefined || v === true) return true;
  if (v === false) return false;
  const s = String(v).toLowerCase();
  if (s === 'true' || s === '1' || s === '') return true;
  if (s === 'false' || s === '0') return false;
  throw new UsageError(`--${name}: expected true or false, not ${JSON.stringify(v)}`);
}

function kvList(list: string[], what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of list) {
    const i = s.indexOf('=');
    if (i <= 0) throw new UsageError(`--${what} ${JSON.stringify(s)}: want KEY=VALUE`);
    out[s.slice(0, i)] = s.slice(i + 1);
  }
  return out;
}

export async function budCommand(context: string | undefined, opts: Record<string, unknown>, g: Record<string, unknown>): Promise<void> {
  const { build } = await import('../builder/build.js');
  const { parseOutput } = await import('../builder/commit.js');
  if (g.root) process.env.TSIMAGE_ROOT = String(g.root);
  if (g.storageDriver) process.env.TSIMAGE_STORAGE_DRIVER = String(g.storageDriver);
  const buildArgs = new Map<string, string>();
  for (const f of (opts.buildArgFile as string[]) ?? []) {
    for (const line of (await readFile(f, 'utf8')).split('\n')) {
      const l = line.trim();
      if (!l || l.startsWith('#')) continue;
      const i = l.indexOf('=');
      if (i < 0) buildArgs.set(l, process.env[l] ?? '');
      else buildArgs.set(l.slice(0, i), l.slice(i + 1));
    }
  }
  for (const a of (opts.buildArg as string[]) ?? []) {
    const i = a.indexOf('=');
    if (i < 0) {
      if (process.env[a] !== undefined) buildArgs.set(a, process.env[a]!);
    } else buildArgs.set(a.slice(0, i), a.slice(i + 1));
  }
  const secrets = new Map<string, string>();
  for (const s of (opts.secret as string[]) ?? []) {
    const kv = kvList(s.split(','), 'secret');
    if (!kv.id) throw new UsageError(`--secret ${s}: id= is required`);
    const src = kv.src ?? kv.source ?? (kv.env ? undefined : kv.id);
    if (kv.env) {
      const { writeFileSync, mkdtempSync, rmSync } = await import('node:fs');
      const { tmpdir } = await import('node:os');
      const d = mkdtempSync(`${tmpdir()}/tsimage-secret-`);
      writeFileSync(`${d}/s`, process.env[kv.env] ?? '', { mode: 0o600 });
      process.on('exit', () => {
        try {
          rmSync(d, { recursive: true, force: true });
        } catch {}
      });
      secrets.set(kv.id, `${d}/s`);
    } else secrets.set(kv.id, src!);
  }
  let pull = String(opts.pull ?? 'missing');
  if (pull === 'true') pull = 'always';
  if (pull === 'false') pull = 'missing';
  if (opts.pullAlways) pull = 'always';
  if (opts.pullNever) pull = 'never';
  let platform = opts.platform as string | undefined;
  if (!platform && (opts.arch || opts.os)) platform = `${opts.os ?? process.platform}/${opts.arch ?? ''}`;
  const network = opts.network as string | undefined;
  if (network !== undefined && !['none', 'host', 'private'].includes(network)) throw new UsageError(`--network ${network}: want host or none`);
  let timestamp: number | undefined;
  if (opts.timestamp !== undefined) {
    if (!/^\d+$/.test(String(opts.timestamp))) throw new UsageError(`--timestamp ${opts.timestamp}: want seconds since the epoch`);
    timestamp = Number(opts.timestamp);
  }
  const quiet = !!opts.quiet;
  let logStream: NodeJS.WritableStream | undefined;
  if (opts.logfile) logStream = createWriteStream(String(opts.logfile), { flags: 'a' });
  const log = (l: string) => {
    if (logStream) logStream.write(l + '\n');
    else if (!quiet) process.stderr.write(l + '\n');
  };
  const transfer = { tlsVerify: boolOpt(opts.tlsVerify, 'tls-verify'), authfile: opts.authfile as string | undefined, creds: opts.creds as string | undefined, certDir: opts.certDir as string | undefined };
  const res = await build({
    contextDir: context ?? '.',
    file: opts.file as string | undefined,
    tags: (opts.tag as string[]) ?? [],
    target: opts.target as string | undefined,
    buildArgs,
    layers: boolOpt(opts.layers, 'layers'),
    noCache: opts.cache === false,
    pull: pull as 'always',
    format: opts.format as 'oci' | 'docker',
    compression: (opts.compressionFormat as 'gzip' | 'zstd' | undefined) ?? (boolOpt(opts.disableCompression, 'disable-compression') ? 'none' : 'gzip'),
    squash: !!opts.squash,
    timestamp,
    isolation: opts.isolation as string | undefined,
    network: network === 'private' ? 'none' : (network as 'none' | 'host' | undefined),
    jobs: opts.jobs as number | undefined,
    secrets,
    labels: kvList((opts.label as string[]) ?? [], 'label'),
    annotations: kvList((opts.annotation as string[]) ?? [], 'annotation'),
    iidfile: opts.iidfile as string | undefined,
    manifest: opts.manifest as string | undefined,
    outputs: ((opts.output as string[]) ?? []).map(parseOutput),
    platform,
    quiet,
    log,
    runOutput: quiet ? 'ignore' : logStream ?? process.stderr,
    signal: rootController.signal,
    explainCache: !!opts.explainCache,
    cacheFrom: opts.cacheFrom as string[] | undefined,
    cacheTo: opts.cacheTo as string | undefined,
    registry: transfer,
    puller: async (name, store, signal) => {
      const { pullImage } = await import('../builder/transfer.js');
      return pullImage(name, store, { ...transfer, signaturePolicy: opts.signaturePolicy as string | undefined, quiet, signal, log });
    },
    ignoreFile: opts.ignorefile as string | undefined,
  });
  if (opts.push) {
    const { pushImage } = await import('../builder/transfer.js');
    const { ImageStore } = await import('../builder/store.js');
    const name = res.names[0];
    if (!name) throw new UsageError('--push needs a name (-t)');
    await pushImage(await ImageStore.open(), name, undefined, { ...transfer, quiet, signal: rootController.signal });
    log(`Pushed ${name}`);
  }
  process.stdout.write(res.imageId + '\n');
  if (logStream) await new Promise<void>((r) => logStream!.end(() => r()));
}
