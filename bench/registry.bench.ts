/**
 * tsregistry vs distribution (Debian docker-registry 2.8), in one run, same machine:
 *
 *  1. skopeo push of the 5-layer ~250 MB image (busybox base + gen-context.sh layers5 as
 *     gzip layers, so skopeo sends them as they are) into a fresh, empty registry (each run starts a new one);
 *  2. skopeo pull of that image into a dir: (the registry already has it);
 *  3. a bounded loopback load (autocannon, 32 connections, 5 s per case) of small requests:
 *     HEAD blob, GET small blob (the config), GET manifest by tag, HEAD manifest; req/s, p99.
 *
 * Both registries log at level warn without access logs (distribution.yml's settings).
 * RUNS (default 3) and WARMUP (default 1) as in bench/harness.ts; SMALL_SECONDS (5).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { connect, createServer, type AddressInfo } from 'node:net';
import { benchPair, peersDir, summary, type PairResult } from './harness.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const PEERS = peersDir();

export type Reg = { addr: string; url: string; stop(): void };

/** Every registry this process started, stopped on exit whatever happens. */
const live = new Set<Reg>();
process.on('exit', () => {
  for (const r of live) r.stop();
});

/** A loopback port that is free right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const p = (srv.address() as AddressInfo).port;
      srv.close(() => resolve(p));
    });
  });
}

/** A tsregistry restarted on an empty `root` before each bench run (benchPair's `before`); `addr()` of the running one. */
export function freshTs(root: string, extra: string[] = []): { before: () => Promise<void>; addr: () => string; stop: () => void } {
  let reg: Reg | undefined;
  return {
    before: async () => {
      reg?.stop();
      rmSync(root, { recursive: true, force: true });
      reg = await startTs(root, extra);
    },
    addr: () => reg!.addr,
    stop: () => {
      reg?.stop();
      reg = undefined;
    },
  };
}

export function startTs(root: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Reg> {
  mkdirSync(root, { recursive: true });
  const child: ChildProcess = spawn(process.execPath, [join(ROOT, 'bin', 'tsregistry.js'), 'serve', '--addr', '127.0.0.1:0', '--root', root, ...extra], {
    stdio: ['ignore', 'pipe', 'ignore'],
    env: { ...process.env, TSREGISTRY_LOG: '{access: false, level: warn}', ...env },
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /listening on (https?:\/\/(\S+))/.exec(out);
      if (m) {
        const reg: Reg = {
          url: m[1]!,
          addr: m[2]!,
          stop: () => {
            live.delete(reg);
            child.kill('SIGKILL');
          },
        };
        live.add(reg);
        resolve(reg);
      }
    });
    child.once('exit', (c) => reject(new Error(`tsregistry exited ${c}`)));
  });
}

export function startDist(port: number): Reg {
  const out = spawnSync('sh', [join(PEERS, 'start-distribution.sh'), `127.0.0.1:${port}`], { encoding: 'utf8' });
  if (out.status !== 0) throw new Error(`start-distribution.sh: ${out.stderr}`);
  const v = Object.fromEntries(out.stdout.trim().split('\n').map((l) => l.split('=', 2) as [string, string]));
  const reg: Reg = {
    addr: v.ADDR!,
    url: `http://${v.ADDR}`,
    stop: () => {
      live.delete(reg);
      spawnSync('sh', [join(PEERS, 'stop-distribution.sh'), v.PID!, v.STORE!]);
      rmSync(v.LOG!, { force: true });
    },
  };
  live.add(reg);
  return reg;
}


async function sha256File(f: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(f, { highWaterMark: 4 << 20 })) h.update(c as Buffer);
  return h.digest('hex');
}

/** The layers5 image as an OCI layout: busybox base (make-base.sh) + 4 gzip layers of 62.5 MB (incompressible data). */
export async function layers5Layout(work: string): Promise<string> {
  const ctx = join(work, 'ctx');
  spawnSync('sh', [join(PEERS, 'gen-context.sh'), 'layers5', ctx], { stdio: 'ignore' });
  const base = join(work, 'base');
  const mb = spawnSync('sh', [join(PEERS, 'make-base.sh'), base], { encoding: 'utf8' });
  if (mb.status !== 0) throw new Error(`make-base.sh: ${mb.stderr}`);
  const layout = join(base, 'oci');
  const blobs = join(layout, 'blobs', 'sha256');
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
  const baseManifest = JSON.parse(readFileSync(join(blobs, index.manifests[0].digest.slice(7)), 'utf8'));
  const baseConfig = JSON.parse(readFileSync(join(blobs, baseManifest.config.digest.slice(7)), 'utf8'));
  const layers = [...baseManifest.layers];
  const diffIds = [...baseConfig.rootfs.diff_ids];
  for (const n of [1, 2, 3, 4]) {
    const tar = join(work, `l${n}.tar`);
    const r = spawnSync('tar', ['-C', ctx, '--owner=0', '--group=0', '--mtime=@0', '-cf', tar, `l${n}.bin`]);
    if (r.status !== 0) throw new Error('tar failed');
    // gzip (fast level) here, once: a docker:// destination makes skopeo compress uncompressed
    // layers on every push, which would time gzip instead of the registry
    const diffHex = await sha256File(tar);
    const z = spawnSync('gzip', ['-1', '-n', tar]);
    if (z.status !== 0) throw new Error('gzip failed');
    const hex = await sha256File(`${tar}.gz`);
    copyFileSync(`${tar}.gz`, join(blobs, hex));
    rmSync(`${tar}.gz`);
    layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${hex}`, size: statSync(join(blobs, hex)).size });
    diffIds.push(`sha256:${diffHex}`);
  }
  rmSync(ctx, { recursive: true, force: true });
  const cfg = Buffer.from(JSON.stringify({ ...baseConfig, rootfs: { type: 'layers', diff_ids: diffIds } }));
  const cfgHex = createHash('sha256').update(cfg).digest('hex');
  writeFileSync(join(blobs, cfgHex), cfg);
  const man = Buffer.from(JSON.stringify({ ...baseManifest, config: { ...baseManifest.config, digest: `sha256:${cfgHex}`, size: cfg.length }, layers }));
  const manHex = createHash('sha256').update(man).digest('hex');
  writeFileSync(join(blobs, manHex), man);
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${manHex}`, size: man.length, annotations: { 'org.opencontainers.image.ref.name': 'layers5' } }],
    }),
  );
  return layout;
}

export function skopeo(args: string[], env?: NodeJS.ProcessEnv): void {
  const r = spawnSync('skopeo', args, { encoding: 'utf8', env: env ?? process.env });
  if (r.status !== 0) throw new Error(`skopeo ${args.join(' ')}: ${r.stderr}`);
}

/**
 * GETs through autocannon. HEADs through a minimal keep-alive HTTP/1.1 client on raw sockets
 * with the same shape (32 connections, closed loop): autocannon 8 waits for a body after a
 * HEAD response that carries Content-Length and stalls, and undici's HEAD path is itself the
 * bottleneck (a plain node:http server answering HEAD measures ~300-400 req/s through it on
 * this machine, against thousands for GET).
 */
export async function cannon(url: string, method: 'GET' | 'HEAD', headers: Record<string, string>, seconds: number): Promise<{ rps: number; p99: number; errors: number }> {
  if (method === 'GET') {
    const r = await autocannon({ url, method, headers, connections: 32, duration: seconds, pipelining: 1 });
    return { rps: r.requests.average, p99: r.latency.p99, errors: r.errors + r.non2xx };
  }
  const u = new URL(url);
  const text = `HEAD ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n`;
  const lat: number[] = [];
  let errors = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from(
      { length: 32 },
      () =>
        new Promise<void>((resolve) => {
          const s = connect(Number(u.port), u.hostname);
          s.setNoDelay(true);
          s.setEncoding('latin1');
          let buf = '';
          let t0 = 0;
          const next = (): void => {
            if (performance.now() >= end) {
              s.end();
              return;
            }
            t0 = performance.now();
            s.write(text);
          };
          s.on('connect', next);
          s.on('data', (d: string) => {
            buf += d;
            let i;
            while ((i = buf.indexOf('\r\n\r\n')) >= 0) {
              if (!buf.startsWith('HTTP/1.1 200')) errors++;
              buf = buf.slice(i + 4);
              lat.push(performance.now() - t0);
              next();
            }
          });
          s.on('error', () => {
            errors++;
            resolve();
          });
          s.on('close', () => resolve());
        }),
    ),
  );
  lat.sort((a, b) => a - b);
  return { rps: lat.length / seconds, p99: Math.round(lat[Math.floor(lat.length * 0.99)] ?? 0), errors };
}

async function main(): Promise<void> {
  for (const t of ['skopeo', 'docker-registry', 'tar', 'openssl']) if (spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0) throw new Error(`${t} is required`);
  const work = mkdtempSync(join(tmpdir(), 'tsimage-bench-reg-'));
  const regs: Reg[] = [];
  try {
    console.log('preparing the layers5 image (gen-context.sh layers5 + make-base.sh)...');
    const layout = await layers5Layout(work);
    const src = `oci:${layout}:layers5`;
    const results: PairResult[] = [];

    // 1. push into a fresh registry each run
    const tsPush = freshTs(join(work, 'tsroot'));
    let distPush: Reg | undefined;
    let n = 0;
    results.push(
      await benchPair({
        name: 'skopeo push layers5 (250 MB, 5 layers)',
        ours: {
          label: 'tsregistry',
          before: tsPush.before,
          fn: () => skopeo(['copy', '--quiet', '--dest-tls-verify=false', src, `docker://${tsPush.addr()}/bench/layers5:v${n++}`]),
        },
        peer: {
          label: 'distribution',
          before: async () => {
            distPush?.stop();
            distPush = startDist(await freePort());
          },
          fn: () => skopeo(['copy', '--quiet', '--dest-tls-verify=false', src, `docker://${distPush!.addr}/bench/layers5:v${n++}`]),
        },
      }),
    );
    tsPush.stop();
    distPush?.stop();
    rmSync(join(work, 'tsroot'), { recursive: true, force: true });

    // 2. pull
    const ts = await startTs(join(work, 'ts-pull'));
    regs.push(ts);
    const dist = startDist(await freePort());
    regs.push(dist);
    for (const r of [ts, dist]) skopeo(['copy', '--quiet', '--dest-tls-verify=false', src, `docker://${r.addr}/bench/layers5:v1`]);
    const out = join(work, 'pulled');
    const pullSide = (label: string, r: Reg) => ({
      label,
      before: () => rmSync(out, { recursive: true, force: true }),
      fn: () => skopeo(['copy', '--quiet', '--src-tls-verify=false', `docker://${r.addr}/bench/layers5:v1`, `dir:${out}`]),
    });
    results.push(await benchPair({ name: 'skopeo pull layers5 (250 MB, 5 layers)', ours: pullSide('tsregistry', ts), peer: pullSide('distribution', dist) }));
    rmSync(out, { recursive: true, force: true });

    // 3. small requests
    const seconds = Number(process.env.SMALL_SECONDS ?? 5);
    const man = JSON.parse(readFileSync(join(layout, 'blobs', 'sha256', JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')).manifests[0].digest.slice(7)), 'utf8'));
    const cfgD = man.config.digest;
    const layerD = man.layers[1].digest;
    const accept = { Accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' };
    const cases: [string, 'GET' | 'HEAD', string, Record<string, string>][] = [
      ['HEAD blob (62.5 MB layer)', 'HEAD', `/v2/bench/layers5/blobs/${layerD}`, {}],
      ['GET small blob (config)', 'GET', `/v2/bench/layers5/blobs/${cfgD}`, {}],
      ['GET manifest by tag', 'GET', '/v2/bench/layers5/manifests/v1', accept],
      ['HEAD manifest by tag', 'HEAD', '/v2/bench/layers5/manifests/v1', accept],
    ];
    console.log(`\nsmall requests: autocannon, 32 connections, ${seconds} s per case and registry (alternating)`);
    const small: string[] = [];
    for (const [name, method, path, headers] of cases) {
      // warm both, then measure alternately (tsregistry first, then distribution)
      await cannon(ts.url + path, method, headers, 1);
      await cannon(dist.url + path, method, headers, 1);
      const a = await cannon(ts.url + path, method, headers, seconds);
      const b = await cannon(dist.url + path, method, headers, seconds);
      if (a.errors || b.errors) throw new Error(`${name}: errors/non-2xx answers: tsregistry ${a.errors}, distribution ${b.errors}`);
      const line = `  ${name.padEnd(28)} tsregistry ${a.rps.toFixed(0).padStart(6)} req/s p99 ${String(a.p99).padStart(4)} ms | distribution ${b.rps.toFixed(0).padStart(6)} req/s p99 ${String(b.p99).padStart(4)} ms | req/s ratio ${(a.rps / b.rps).toFixed(2)}x`;
      console.log(line);
      small.push(line);
    }
    summary(results);
    console.log('  throughput ratio (distribution time / tsregistry time; >= 1 is at least as fast):');
    for (const r of results) console.log(`    ${r.name.padEnd(48)} ${(1 / r.ratio).toFixed(2)}x`);
    console.log('small requests (req/s ratio tsregistry/distribution; goal >= 1.5x):');
    for (const l of small) console.log(l);
  } finally {
    for (const r of regs) r.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
