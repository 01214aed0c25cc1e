/**
 * tsregistry production features, measured:
 *
 *  1. skopeo push and pull of the 5-layer ~250 MB image with token auth (built-in issuer,
 *     htpasswd users, access rules) vs without auth, same tsregistry build. Goal: auth costs
 *     at most 10% (ratio <= 1.10).
 *  2. garbage collection of a store of 10,000 blobs (100 tagged images of 50 blobs each (48 layers, config, manifest) =
 *     5,000 referenced, plus 5,000 unreferenced blobs older than the grace period):
 *     `tsregistry gc` vs distribution's `docker-registry garbage-collect` on the same content
 *     in its own layout (each run on a fresh copy; wall time including process start).
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { benchPair, summary, type PairResult } from './harness.js';
import { freshTs, layers5Layout, skopeo, startTs, type Reg } from './registry.bench.js';

const ROOT = new URL('../../', import.meta.url).pathname;

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** Write the same 10,000-blob content as a tsregistry store and as a distribution store. */
function makeStores(dir: string): { ts: string; dist: string } {
  const ts = join(dir, 'ts-template');
  const dist = join(dir, 'dist-template');
  const distV2 = join(dist, 'docker', 'registry', 'v2');
  const old = new Date(Date.now() - 3 * 3600_000);
  const writeBlob = (data: Buffer): string => {
    const hex = createHash('sha256').update(data).digest('hex');
    const tsFile = join(ts, 'blobs', 'sha256', hex.slice(0, 2), hex);
    mkdirSync(join(ts, 'blobs', 'sha256', hex.slice(0, 2)), { recursive: true });
    writeFileSync(tsFile, data);
    utimesSync(tsFile, old, old);
    const dd = join(distV2, 'blobs', 'sha256', hex.slice(0, 2), hex);
    mkdirSync(dd, { recursive: true });
    writeFileSync(join(dd, 'data'), data);
    utimesSync(join(dd, 'data'), old, old);
    return hex;
  };
  const link = (repo: string, rel: string, hex: string, tsRel: string, content: string) => {
    const d = join(distV2, 'repositories', repo, rel);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'link'), `sha256:${hex}`);
    const f = join(ts, 'repositories', repo, tsRel);
    mkdirSync(join(f, '..'), { recursive: true });
    writeFileSync(f, content);
    utimesSync(f, old, old);
  };
  for (let img = 0; img < 100; img++) {
    const repo = `bench/r${img % 50}`;
    const layers = [];
    for (let i = 0; i < 48; i++) {
      const data = randomBytes(512 + ((img * 48 + i) % 1500));
      const hex = writeBlob(data);
      link(repo, `_layers/sha256/${hex}`, hex, `_layers/sha256/${hex}`, `sha256:${hex}`);
      layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${hex}`, size: data.length });
    }
    const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) }, img }));
    const cfgHex = writeBlob(cfg);
    link(repo, `_layers/sha256/${cfgHex}`, cfgHex, `_layers/sha256/${cfgHex}`, `sha256:${cfgHex}`);
    const man = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${cfgHex}`, size: cfg.length }, layers }),
    );
    const mHex = writeBlob(man); // the manifest is the 50th blob of the image
    const tag = `t${img}`;
    link(repo, `_manifests/revisions/sha256/${mHex}`, mHex, `_manifests/revisions/sha256/${mHex}`, JSON.stringify({ mediaType: 'application/vnd.oci.image.manifest.v1+json', size: man.length }));
    link(repo, `_manifests/tags/${tag}/current`, mHex, `_manifests/tags/${tag}`, `sha256:${mHex}`);
    const idx = join(distV2, 'repositories', repo, '_manifests', 'tags', tag, 'index', 'sha256', mHex);
    mkdirSync(idx, { recursive: true });
    writeFileSync(join(idx, 'link'), `sha256:${mHex}`);
  }
  // 5,000 unreferenced blobs (uploaded, never used, or left by deleted images)
  for (let i = 0; i < 5000; i++) writeBlob(randomBytes(512 + (i % 1500)));
  return { ts, dist };
}

async function main(): Promise<void> {
  for (const t of ['skopeo', 'docker-registry', 'htpasswd']) if (spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0) throw new Error(`${t} is required`);
  const work = mkdtempSync(join(tmpdir(), 'tsimage-bench-regprod-'));
  const results: PairResult[] = [];
  const running: Reg[] = [];
  try {
    // ---- 1. token auth on vs off ----
    console.log('preparing the layers5 image...');
    const layout = await layers5Layout(work);
    const src = `oci:${layout}:layers5`;
    sh('htpasswd', ['-cbB', join(work, 'htpasswd'), 'bench', 'bench-secret']);
    const authCfg = join(work, 'auth.yml');
    writeFileSync(
      authCfg,
      stringify({
        auth: { htpasswd: join(work, 'htpasswd'), token: { service: 'bench' }, access: { rules: [{ repos: ['**'], users: ['bench'], actions: ['pull', 'push', 'delete'] }] } },
        log: { access: false, level: 'warn' },
      }),
    );
    const plainCfg = join(work, 'plain.yml');
    writeFileSync(plainCfg, stringify({ log: { access: false, level: 'warn' } }));
    const authOn = freshTs(join(work, 'on'), ['--config', authCfg]);
    const authOff = freshTs(join(work, 'off'), ['--config', plainCfg]);
    let n = 0;
    results.push(
      await benchPair({
        name: 'skopeo push layers5: token auth on / off',
        ours: {
          label: 'token auth',
          before: authOn.before,
          fn: () => skopeo(['copy', '--quiet', '--dest-tls-verify=false', '--dest-creds', 'bench:bench-secret', src, `docker://${authOn.addr()}/bench/l5:v${n++}`]),
        },
        peer: {
          label: 'no auth',
          before: authOff.before,
          fn: () => skopeo(['copy', '--quiet', '--dest-tls-verify=false', src, `docker://${authOff.addr()}/bench/l5:v${n++}`]),
        },
      }),
    );
    authOn.stop();
    authOff.stop();
    const on = await startTs(join(work, 'on2'), ['--config', authCfg]);
    const off = await startTs(join(work, 'off2'), ['--config', plainCfg]);
    running.push(on, off);
    skopeo(['copy', '--quiet', '--dest-tls-verify=false', '--dest-creds', 'bench:bench-secret', src, `docker://${on.addr}/bench/l5:v1`]);
    skopeo(['copy', '--quiet', '--dest-tls-verify=false', src, `docker://${off.addr}/bench/l5:v1`]);
    const out = join(work, 'pulled');
    results.push(
      await benchPair({
        name: 'skopeo pull layers5: token auth on / off',
        ours: { label: 'token auth', before: () => rmSync(out, { recursive: true, force: true }), fn: () => skopeo(['copy', '--quiet', '--src-tls-verify=false', '--src-creds', 'bench:bench-secret', `docker://${on.addr}/bench/l5:v1`, `dir:${out}`]) },
        peer: { label: 'no auth', before: () => rmSync(out, { recursive: true, force: true }), fn: () => skopeo(['copy', '--quiet', '--src-tls-verify=false', `docker://${off.addr}/bench/l5:v1`, `dir:${out}`]) },
      }),
    );
    for (const r of running.splice(0)) r.stop();
    rmSync(join(work, 'on2'), { recursive: true, force: true });
    rmSync(join(work, 'off2'), { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
    rmSync(join(work, 'base'), { recursive: true, force: true });

    // ---- 2. GC of 10,000 blobs ----
    console.log('\npreparing two stores of 10,000 blobs (5,000 referenced by 100 tagged images, 5,000 garbage)...');
    const tpl = makeStores(work);
    const distCfg = join(work, 'dist-gc.yml');
    const runTs = join(work, 'ts-run');
    const runDist = join(work, 'dist-run');
    writeFileSync(distCfg, stringify({ version: 0.1, log: { level: 'warn' }, storage: { filesystem: { rootdirectory: runDist }, delete: { enabled: true } }, http: { addr: '127.0.0.1:0' } }));
    let check = { ts: '', dist: '' };
    results.push(
      await benchPair({
        name: 'GC of 10,000 blobs (5,000 garbage)',
        runs: Number(process.env.RUNS ?? 3),
        ours: {
          label: 'tsregistry gc',
          before: () => {
            rmSync(runTs, { recursive: true, force: true });
            sh('cp', ['-a', tpl.ts, runTs]);
          },
          cmd: [process.execPath, join(ROOT, 'bin', 'tsregistry.js'), 'gc', '--root', runTs, '--quiet'],
          after: () => {
            check.ts = sh('sh', ['-c', `find ${runTs}/blobs -type f | wc -l`]).trim();
          },
        },
        peer: {
          label: 'distribution gc',
          before: () => {
            rmSync(runDist, { recursive: true, force: true });
            sh('cp', ['-a', tpl.dist, runDist]);
          },
          cmd: ['docker-registry', 'garbage-collect', distCfg],
          after: () => {
            check.dist = sh('sh', ['-c', `find ${runDist}/docker/registry/v2/blobs -name data -type f | wc -l`]).trim();
          },
        },
      }),
    );
    console.log(`  blobs left after GC: tsregistry ${check.ts}, distribution ${check.dist} (expected 5000 each)`);
    summary(results);
  } finally {
    for (const r of running) r.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
