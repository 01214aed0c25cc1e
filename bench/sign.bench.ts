/**
 * Carrying signatures: tscopy copy vs skopeo copy (registries.d `use-sigstore-attachments: true`) of a
 * cosign-signed image (busybox base + its `sha256-<hex>.sig` tag) from one distribution 2.8 registry to
 * another, each run into a fresh repository (so blobs and the signature really move).
 * Also: tscopy sign and tscopy verify on their own (no peer here: Debian's skopeo has sigstore compiled out).
 *
 *   npm run bench -- sign        RUNS=5 by default
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchPair, summary, type PairResult } from './harness.js';
import { buildBusyboxBase, OciLayout } from '../src/oci/index.js';
import { generateKeyPair, SCRYPT_PARAMS } from '../src/copy/sign/index.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const PEERS = '/work/shared/peers';
/** tscopy as `tscopy` on $PATH runs it: the launcher as a program (see bin/deferred-ca.js). */
const TSCOPY = [join(ROOT, 'bin', 'tscopy.js')];
const NOTLS = ['--src-tls-verify=false', '--dest-tls-verify=false'];
const RUNS = Number(process.env.RUNS ?? 5);

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function startDistribution(): { addr: string; pid: number; store: string; log: string } {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const out = sh('sh', [join(PEERS, 'start-distribution.sh'), `127.0.0.1:${port}`]);
  const v = Object.fromEntries(out.trim().split('\n').map((l) => l.split('=', 2) as [string, string]));
  return { addr: v.ADDR!, pid: Number(v.PID), store: v.STORE!, log: v.LOG! };
}

async function main(): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), 'tsimage-bench-sign-'));
  const regs = [startDistribution(), startDistribution()];
  const [a, b] = regs as [ReturnType<typeof startDistribution>, ReturnType<typeof startDistribution>];
  try {
    const layout = await OciLayout.open(join(tmp, 'base'), { create: true, sync: false });
    await buildBusyboxBase(layout, { tag: 'latest', epoch: 0 });
    sh('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${join(tmp, 'base')}:latest`, `docker://${a.addr}/app:v1`]);
    const pair = generateKeyPair('pw', { params: SCRYPT_PARAMS.legacy });
    writeFileSync(join(tmp, 'k.key'), pair.privateKey);
    writeFileSync(join(tmp, 'k.pub'), pair.publicKey);
    writeFileSync(join(tmp, 'pw'), 'pw\n');
    const signArgs = ['sign', '--tls-verify=false', '--key', join(tmp, 'k.key'), '--password-file', join(tmp, 'pw'), '-q', `docker://${a.addr}/app:v1`];
    execFileSync(TSCOPY[0]!, [...TSCOPY.slice(1), ...signArgs]);
    mkdirSync(join(tmp, 'regd'));
    writeFileSync(join(tmp, 'regd', 'b.yaml'), `docker:\n  ${a.addr}:\n    use-sigstore-attachments: true\n  ${b.addr}:\n    use-sigstore-attachments: true\n`);

    const results: PairResult[] = [];
    let n = 0;
    results.push(
      await benchPair({
        name: 'copy a signed image + .sig tag, registry -> registry',
        runs: RUNS,
        ours: { label: 'tscopy copy', cmd: () => [...TSCOPY, 'copy', '-q', ...NOTLS, '--insecure-policy', `docker://${a.addr}/app:v1`, `docker://${b.addr}/t${n++}/app:v1`] },
        peer: {
          label: 'skopeo copy (use-sigstore-attachments)',
          cmd: () => ['skopeo', '--registries.d', join(tmp, 'regd'), '--insecure-policy', 'copy', '-q', ...NOTLS, `docker://${a.addr}/app:v1`, `docker://${b.addr}/s${n++}/app:v1`],
        },
      }),
    );
    results.push(
      await benchPair({
        name: 'cost of carrying: tscopy copy vs tscopy copy --remove-signatures (same work otherwise)',
        runs: RUNS,
        ours: { label: 'tscopy copy (carrying)', cmd: () => [...TSCOPY, 'copy', '-q', ...NOTLS, '--insecure-policy', `docker://${a.addr}/app:v1`, `docker://${b.addr}/c${n++}/app:v1`] },
        peer: { label: 'tscopy copy --remove-signatures', cmd: () => [...TSCOPY, 'copy', '-q', ...NOTLS, '--insecure-policy', '--remove-signatures', `docker://${a.addr}/app:v1`, `docker://${b.addr}/r${n++}/app:v1`] },
      }),
    );
    // sanity: both carried the signature
    const v = spawnSync(TSCOPY[0]!, [...TSCOPY.slice(1), 'verify', '--tls-verify=false', '--key', join(tmp, 'k.pub'), '--identity', `${a.addr}/app:v1`, `docker://${b.addr}/s1/app:v1`], { encoding: 'utf8' });
    console.log(`verify at skopeo's copy: exit ${v.status}`);
    results.push(
      await benchPair({
        name: 'verify a signed image (tscopy) vs inspect (skopeo, the cheapest peer read of the same manifest)',
        runs: RUNS,
        ours: { label: 'tscopy verify', cmd: [...TSCOPY, 'verify', '--tls-verify=false', '--key', join(tmp, 'k.pub'), `docker://${a.addr}/app:v1`] },
        peer: { label: 'skopeo inspect --raw', cmd: ['skopeo', 'inspect', '--raw', '--tls-verify=false', `docker://${a.addr}/app:v1`] },
      }),
    );
    summary(results);
  } finally {
    for (const r of regs) {
      spawnSync('kill', [String(r.pid)]);
      rmSync(r.store, { recursive: true, force: true });
      rmSync(r.log, { force: true });
    }
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
