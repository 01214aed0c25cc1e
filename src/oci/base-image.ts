/**
 * The project's own busybox base image, built offline and reproducibly with our own tar
 * writer (no buildah): the image ../shared/peers/make-base.sh makes. busybox-static plus
 * every applet as a symlink in /bin, /etc/passwd, /etc/group, /etc/nsswitch.conf, the
 * usual directories with their modes, one gzip layer, a config with PATH, `Cmd ["/bin/sh"]`,
 * the same labels and a history entry, for the host's platform. Same busybox binary and
 * epoch give the same digests on every run (tar entries sorted, owner 0:0, mtime = epoch,
 * gzip without name or timestamp).
 *
 * `tsbuild bud` uses it as the offline base on a fresh machine; every test uses it through
 * test/fixtures/base.ts.
 */
import { execFile } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { TsimageError } from './errors.js';
import { MediaTypes } from './mediatypes.js';
import { toJsonBytes, type Descriptor, type ImageConfig, type ImageManifest } from './manifest.js';
import { hostPlatform } from './platform.js';
import { packEntries, type TarEntry } from './tar.js';
import { writeLayer } from './layer.js';
import type { OciLayout } from './store.js';

export interface BusyboxBaseOptions {
  /** A static busybox binary for the host's architecture (default /bin/busybox, Debian's busybox-static). */
  busybox?: string | undefined;
  /** Name in the layout's index.json (default 'latest'); null: do not tag. */
  tag?: string | null | undefined;
  /** Timestamp of files, config and history, epoch seconds (default $SOURCE_DATE_EPOCH or 0). */
  epoch?: number | undefined;
  signal?: AbortSignal | undefined;
}

export const BASE_IMAGE_TITLE = 'peers-busybox-base';
export const BASE_IMAGE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
export const BASE_IMAGE_CREATED_BY = 'make-base.sh: ADD busybox-static rootfs';

const PASSWD = 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n';
const GROUP = 'root:x:0:\nnogroup:x:65534:\n';
const NSSWITCH = 'hosts: files dns\n';

const run = promisify(execFile);

function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** RFC 3339 as Go formats it (no fractional seconds when there are none). */
export function rfc3339(epochSeconds: number): string {
  return new Date(epochSeconds * 1000).toISOString().replace(/\.000Z$/, 'Z');
}

function defaultEpoch(): number {
  const s = process.env.SOURCE_DATE_EPOCH;
  if (s === undefined || s === '') return 0;
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < 0) throw new TsimageError(`SOURCE_DATE_EPOCH=${JSON.stringify(s)} is not a non-negative integer`);
  return n;
}

/** The applets a busybox binary provides (`busybox --list`) and its version (`v1.35.0`). */
async function probeBusybox(busybox: string, signal?: AbortSignal): Promise<{ applets: string[]; version: string }> {
  let list: string;
  let banner: string;
  try {
    list = (await run(busybox, ['--list'], { signal, maxBuffer: 1 << 20 })).stdout;
    banner = (await run(busybox, [], { signal, maxBuffer: 1 << 20 })).stdout;
  } catch (e) {
    throw new TsimageError(`cannot run ${busybox} to list its applets (a static busybox for this machine is needed; Debian: apt-get install busybox-static): ${(e as Error).message}`, { cause: e });
  }
  const applets = [...new Set(list.split('\n').map((l) => l.trim()).filter((a) => a !== '' && a !== 'busybox'))];
  for (const a of applets) if (a.includes('/') || a === '.' || a === '..') throw new TsimageError(`${busybox} --list printed an invalid applet name ${JSON.stringify(a)}`);
  const version = banner.split('\n')[0]?.trim().split(/\s+/)[1];
  if (!version) throw new TsimageError(`cannot read the busybox version from the output of ${busybox}`);
  return { applets, version };
}

/** The layer's entries in archive order (depth-first, names in byte order), as `tar --sort=name`. */
function rootfsEntries(busybox: string, busyboxSize: number, applets: string[], mtime: number): TarEntry[] {
  const dir = (name: string, mode = 0o755): TarEntry => ({ header: { name, type: 'directory', mode, mtime } });
  const file = (name: string, body: string): TarEntry => ({ header: { name, type: 'file', mode: 0o644, size: Buffer.byteLength(body), mtime }, body });
  const bin: TarEntry[] = [
    { header: { name: 'bin/busybox', type: 'file', mode: 0o755, size: busyboxSize, mtime }, path: busybox } as TarEntry,
    ...applets.map((a): TarEntry => ({ header: { name: `bin/${a}`, type: 'symlink', mode: 0o777, linkname: 'busybox', mtime } })),
  ].sort((a, b) => byteCompare(a.header.name, b.header.name));
  return [
    dir('bin'),
    ...bin,
    dir('dev'),
    dir('etc'),
    file('etc/group', GROUP),
    file('etc/nsswitch.conf', NSSWITCH),
    file('etc/passwd', PASSWD),
    dir('home'),
    dir('proc'),
    dir('root', 0o700),
    dir('sbin'),
    dir('sys'),
    dir('tmp', 0o1777),
    dir('usr'),
    dir('usr/bin'),
    dir('usr/sbin'),
    dir('var'),
    dir('var/tmp', 0o1777),
  ];
}

/**
 * Build the busybox base image into `layout` and name it (default 'latest'). Returns the
 * manifest descriptor.
 */
export async function buildBusyboxBase(layout: OciLayout, opts: BusyboxBaseOptions = {}): Promise<Descriptor> {
  const busybox = opts.busybox ?? '/bin/busybox';
  const epoch = opts.epoch ?? defaultEpoch();
  if (!Number.isSafeInteger(epoch) || epoch < 0) throw new TsimageError(`invalid epoch ${epoch}: want non-negative integer seconds`);
  const st = await stat(busybox).catch((e: unknown) => {
    throw new TsimageError(`busybox binary ${busybox} not found (Debian: apt-get install busybox-static)`, { cause: e });
  });
  if (!st.isFile()) throw new TsimageError(`${busybox} is not a regular file`);
  const { applets, version } = await probeBusybox(busybox, opts.signal);

  let stored: Descriptor | undefined;
  const tar = packEntries(rootfsEntries(busybox, st.size, applets, epoch), { signal: opts.signal });
  const layerResult = await writeLayer(
    tar,
    'gzip',
    async (body) => {
      stored = await layout.ingest({ mediaType: MediaTypes.ociLayerGzip }, body, { signal: opts.signal });
    },
    { signal: opts.signal },
  );
  if (!stored || stored.digest !== layerResult.digest || stored.size !== layerResult.size)
    throw new TsimageError(`internal error: stored layer ${stored?.digest} differs from the written ${layerResult.digest}`);
  const layer: Descriptor = { mediaType: MediaTypes.ociLayerGzip, digest: layerResult.digest, size: layerResult.size };

  const created = rfc3339(epoch);
  const platform = hostPlatform();
  const config: ImageConfig = {
    created,
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: {
      Env: [`PATH=${BASE_IMAGE_PATH}`],
      Cmd: ['/bin/sh'],
      Labels: {
        'org.opencontainers.image.description': `static busybox ${version} from Debian busybox-static`,
        'org.opencontainers.image.title': BASE_IMAGE_TITLE,
      },
    },
    rootfs: { type: 'layers', diff_ids: [layerResult.diffID] },
    history: [{ created, created_by: BASE_IMAGE_CREATED_BY }],
  };
  const configDesc = await layout.putBytes(MediaTypes.ociConfig, toJsonBytes(config));
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    config: { mediaType: configDesc.mediaType, digest: configDesc.digest, size: configDesc.size },
    layers: [layer],
  };
  const m = await layout.putBytes(MediaTypes.ociManifest, toJsonBytes(manifest));
  const tag = opts.tag === undefined ? 'latest' : opts.tag;
  if (tag !== null) await layout.tag(tag, m);
  return { mediaType: m.mediaType, digest: m.digest, size: m.size };
}
