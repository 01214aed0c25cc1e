/**
 * tscopy vs skopeo on the same work in one run (bench/harness.ts: alternating runs, median ratio).
 * Data: ../shared/peers/gen-context.sh layers5 (4 x 62.5 MB incompressible files) as a 5-layer image (the busybox
 * base layer + one layer per file, gzip), assembled with src/oci (writeLayer) into an OCI layout.
 * Registries: two distribution 2.8 instances on loopback (A holds the source; B receives full copies, so the bytes
 * really move: a copy within one registry mounts).
 *
 * Cases: registry -> registry (new repository, other registry), cross-repository mount (same registry),
 * same-repository no-op, registry -> oci, oci -> registry, sync of 50 tags of which 45 are unchanged; and
 * `floor`: a bare `node -e 0` against skopeo's no-op, the bound of the start-up-bound cases (started as the
 * launcher starts node: without NODE_EXTRA_CA_CERTS, see bin/deferred-ca.js).
 * Both tools' blob-info caches are deleted before each run of the cases that must move bytes (else they mount
 * from the repositories earlier runs filled); tscopy's lives in the bench's temp dir (TSIMAGE_BLOB_INFO_CACHE).
 * tscopy runs as a program (bin/tscopy.js, as `tscopy` on $PATH), with a warm V8 code cache (bin/bundle-loader.js;
 * TSIMAGE_CODE_CACHE in the bench's temp dir, filled by the untimed WARMUP run of each case), which is what users get
 * from a command's second run on.
 * Each tool line also shows its CPU seconds, the two registries' CPU seconds during its runs, and the least wall
 * time that much CPU needs on this machine's cores (the case's floor for that tool).
 *
 *   npm run bench -- copy        RUNS=5 WARMUP=1 by default
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchPair, summary, type PairResult } from './harness.js';
import {
  buildBusyboxBase,
  MediaTypes,
  OciLayout,
  packEntries,
  parseConfig,
  parseManifest,
  toJsonBytes,
  writeLayer,
  type Descriptor,
} from '../src/oci/index.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const PEERS = ((): string => {
  for (let dir = join(ROOT, '..'); ; dir = join(dir, '..')) {
    if (existsSync(join(dir, 'shared', 'peers'))) return join(dir, 'shared', 'peers');
    if (dir === '/' || join(dir, '..') === dir) return join(ROOT, '..', 'shared', 'peers');
  }
})();
/** tscopy as `tscopy` on $PATH runs it: the launcher as a program (its /bin/sh line: see bin/deferred-ca.js). */
const TSCOPY = [join(ROOT, 'bin', 'tscopy.js')];
const BLOB_CACHE = '/var/lib/containers/cache/blob-info-cache-v1.boltdb';
const NOTLS = ['--src-tls-verify=false', '--dest-tls-verify=false'];

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 });
}

/** The 5-layer image as an OCI layout (tag v1), built once and kept in the temp dir across bench runs. */
async function layers5Layout(dir: string): Promise<string> {
  if (existsSync(join(dir, 'done'))) return dir;
  rmSync(dir, { recursive: true, force: true });
  const ctx = sh('sh', [join(PEERS, 'gen-context.sh'), 'layers5']).trim();
  try {
    const layout = await OciLayout.open(dir, { create: true, sync: false });
    const baseDesc = await buildBusyboxBase(layout, { tag: 'base', epoch: 0 });
    const bm = parseManifest(await layout.readBytes(baseDesc.digest), baseDesc.mediaType);
    if (bm.kind !== 'manifest') throw new Error('base manifest expected');
    const cfg = parseConfig(await layout.readBytes(bm.doc.config.digest));
    const layers: Descriptor[] = [...bm.doc.layers];
    for (let i = 1; i <= 4; i++) {
      const file = join(ctx, `l${i}.bin`);
      const tar = packEntries([
        { header: { name: 'layers/', type: 'directory', mode: 0o755, mtime: 1700000000 } },
        { header: { name: `layers/l${i}.bin`, type: 'file', mode: 0o644, mtime: 1700000000, size: 62_500_000 }, path: file },
      ]);
      let stored: Descriptor | undefined;
      const r = await writeLayer(tar, 'gzip', async (body) => {
        stored = await layout.ingest({ mediaType: MediaTypes.ociLayerGzip }, body);
      });
      layers.push({ mediaType: MediaTypes.ociLayerGzip, digest: stored!.digest, size: stored!.size });
      cfg.rootfs.diff_ids.push(r.diffID);
      (cfg.history ??= []).push({ created: '1970-01-01T00:00:00Z', created_by: `COPY l${i}.bin /layers/l${i}.bin` });
    }
    cfg.config = { ...(cfg.config ?? {}), Cmd: ['ls', '-l', '/layers'] };
    const config = await layout.putBytes(MediaTypes.ociConfig, toJsonBytes(cfg));
    const m = await layout.putBytes(MediaTypes.ociManifest, toJsonBytes({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config, layers }));
    await layout.untag('base');
    await layout.tag('v1', m);
    // Five small variants (a label changes: new config, same layers) for the sync case's changed tags.
    for (let v = 0; v < 5; v++) {
      const c2 = await layout.putBytes(MediaTypes.ociConfig, toJsonBytes({ ...cfg, config: { ...cfg.config, Labels: { variant: String(v) } } }));
      const m2 = await layout.putBytes(MediaTypes.ociManifest, toJsonBytes({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: c2, layers }));
      await layout.tag(`variant${v}`, m2);
    }
    execFileSync('touch', [join(dir, 'done')]);
    return dir;
  } finally {
    rmSync(ctx, { recursive: true, force: true });
  }
}

function startDistribution(): { addr: string; pid: number; stop: () => void } {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const out = sh('sh', [join(PEERS, 'start-distribution.sh'), `127.0.0.1:${port}`]);
  const vars = Object.fromEntries(out.trim().split('\n').map((l) => l.split('=', 2) as [string, string]));
  return {
    addr: vars.ADDR!,
    pid: Number(vars.PID),
    stop: () => {
      spawnSync('sh', [join(PEERS, 'stop-distribution.sh'), vars.PID!, vars.STORE!]);
      rmSync(vars.LOG!, { force: true });
    },
  };
}

const dropSkopeoCache = () => rmSync(BLOB_CACHE, { force: true });
const dropOurCache = () => rmSync(process.env.TSIMAGE_BLOB_INFO_CACHE!, { force: true });

async function main(): Promise<void> {
  const only = process.env.CASES?.split(',');
  const want = (c: string) => !only || only.includes(c);
  const layoutDir = await layers5Layout(join(tmpdir(), 'tsimage-bench-layers5'));
  const work = mkdtempSync(join(tmpdir(), 'tsimage-bench-copy-'));
  process.env.TSIMAGE_BLOB_INFO_CACHE = join(work, 'blob-info-cache.jsonl');
  process.env.TSIMAGE_CODE_CACHE = join(work, 'code-cache');
  const A = startDistribution();
  const B = startDistribution();
  const results: PairResult[] = [];
  let n = 0;
  // both registries' CPU is counted in each run (harness: the CPU floor of a case on this machine's cores)
  const servers = [A.pid, B.pid];
  const uniq = () => `${process.pid}-${++n}`;
  try {
    const src = `${A.addr}/bench/src:v1`;
    sh('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${layoutDir}:v1`, `docker://${src}`]);

    /** A copy into a new repository of B each run, both tools' blob-info caches dropped first: the bytes move. */
    const freshRepoPair = (name: string, from: string, dir: string) => {
      let dst = '';
      const run = (label: string, drop: () => void, tag: string, cmd: string[]) => ({
        label,
        before: () => {
          drop();
          dst = `${B.addr}/${dir}/${tag}${uniq()}:v1`;
        },
        cmd: () => [...cmd, 'copy', '-q', ...NOTLS, from, `docker://${dst}`],
      });
      return benchPair({ name, servers, ours: run('tscopy', dropOurCache, 't', TSCOPY), peer: run('skopeo', dropSkopeoCache, 's', ['skopeo']) });
    };
    if (want('full')) results.push(await freshRepoPair('registry -> registry, new repository (bytes move: other registry)', `docker://${src}`, 'full'));
    if (want('mount')) {
      let dst = '';
      results.push(
        await benchPair({
          servers,
          name: 'cross-repository mount (same registry, new repository)',
          ours: { label: 'tscopy', before: () => void (dst = `${A.addr}/mount/t${uniq()}:v1`), cmd: () => [...TSCOPY, 'copy', '-q', ...NOTLS, `docker://${src}`, `docker://${dst}`] },
          // skopeo mounts only through its blob-info cache: kept (filled by the copy that pushed src)
          peer: { label: 'skopeo', before: () => void (dst = `${A.addr}/mount/s${uniq()}:v1`), cmd: () => ['skopeo', 'copy', '-q', ...NOTLS, `docker://${src}`, `docker://${dst}`] },
        }),
      );
    }
    if (want('noop')) {
      results.push(
        await benchPair({
          servers,
          name: 'same repository again (no-op)',
          ours: { label: 'tscopy', cmd: [...TSCOPY, 'copy', '-q', ...NOTLS, `docker://${src}`, `docker://${src}`] },
          peer: { label: 'skopeo', cmd: ['skopeo', 'copy', '-q', ...NOTLS, `docker://${src}`, `docker://${src}`] },
        }),
      );
    }
    if (want('floor')) {
      // Not a copy: what Node costs before any of tscopy runs, against skopeo's whole no-op. Its ratio is the
      // lowest the start-up-bound cases (no-op, mount) can reach with a Node process per command.
      results.push(
        await benchPair({
          servers,
          name: 'floor: bare `node -e 0` vs skopeo no-op',
          // as the launcher starts node: without NODE_EXTRA_CA_CERTS (which costs every Node start ~36 ms here)
          ours: { label: 'node -e 0', cmd: ['env', '-u', 'NODE_EXTRA_CA_CERTS', process.execPath, '-e', '0'] },
          peer: { label: 'skopeo', cmd: ['skopeo', 'copy', '-q', ...NOTLS, `docker://${src}`, `docker://${src}`] },
        }),
      );
    }
    if (want('pull')) {
      const out = join(work, 'pulled');
      const clean = () => rmSync(out, { recursive: true, force: true });
      results.push(
        await benchPair({
          servers,
          name: 'registry -> oci: layout (fresh directory)',
          ours: { label: 'tscopy', before: clean, cmd: [...TSCOPY, 'copy', '-q', ...NOTLS, `docker://${src}`, `oci:${out}:v1`] },
          peer: { label: 'skopeo', before: clean, cmd: ['skopeo', 'copy', '-q', ...NOTLS, `docker://${src}`, `oci:${out}:v1`] },
        }),
      );
      clean();
    }
    if (want('push')) results.push(await freshRepoPair('oci: layout -> registry, new repository', `oci:${layoutDir}:v1`, 'push'));
    if (want('sync')) {
      // Source: 50 tags, t00..t44 = the image, t45..t49 = variants (new configs). Mirror: all 50 present, with
      // t45..t49 reset to the old image before each run, so 5 tags changed and 45 are up to date.
      const tags = Array.from({ length: 50 }, (_, i) => `t${String(i).padStart(2, '0')}`);
      const baseBytes = Buffer.from(sh('skopeo', ['inspect', '--raw', `oci:${layoutDir}:v1`]));
      for (const [i, t] of tags.entries()) {
        const from = i < 45 ? `docker://${src}` : `oci:${layoutDir}:variant${i - 45}`;
        sh(TSCOPY[0]!, ['copy', '-q', ...NOTLS, from, `docker://${A.addr}/bench/sync:${t}`]);
      }
      const mirrorOurs = `${B.addr}/ours`;
      const mirrorPeer = `${B.addr}/peer`;
      for (const m of [mirrorOurs, mirrorPeer]) sh(TSCOPY[0]!, ['sync', '-q', '--src', 'docker', '--dest', 'docker', ...NOTLS, `${A.addr}/bench/sync`, m]);
      const reset = async (mirror: string) => {
        for (const t of tags.slice(45)) {
          const r = await fetch(`http://${mirror.replace(/\/.*/, '')}/v2/${mirror.slice(mirror.indexOf('/') + 1)}/sync/manifests/${t}`, {
            method: 'PUT',
            headers: { 'content-type': MediaTypes.ociManifest },
            body: baseBytes,
          });
          if (r.status !== 201) throw new Error(`reset ${mirror}:${t}: ${r.status} ${await r.text()}`);
        }
      };
      results.push(
        await benchPair({
          servers,
          name: 'sync 50 tags, 45 unchanged',
          // SYNC_FLAGS=--remove-signatures measures without the signature carry for up-to-date tags
          ours: { label: 'tscopy', before: () => reset(mirrorOurs), cmd: [...TSCOPY, 'sync', '-q', ...(process.env.SYNC_FLAGS?.split(' ').filter(Boolean) ?? []), '--src', 'docker', '--dest', 'docker', ...NOTLS, `${A.addr}/bench/sync`, mirrorOurs] },
          peer: { label: 'skopeo', before: () => reset(mirrorPeer), cmd: ['skopeo', 'sync', '--src', 'docker', '--dest', 'docker', ...NOTLS, `${A.addr}/bench/sync`, mirrorPeer] },
        }),
      );
    }
  } finally {
    A.stop();
    B.stop();
    rmSync(work, { recursive: true, force: true });
  }
  summary(results);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
