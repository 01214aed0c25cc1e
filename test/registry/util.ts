/** Helpers for the registry tests: an in-process tsregistry on 127.0.0.1:0 and a tiny HTTP client. */
import { createHash, randomBytes } from 'node:crypto';
import { makeConfig, startServer, type RunningRegistry, type StartOptions } from '../../src/registry/index.js';
import { tempDir } from '../helpers.js';

export type T = { after(fn: () => void | Promise<void>): void };

export async function startRegistry(t: T, doc: Record<string, unknown> = {}, o: StartOptions & { root?: string } = {}): Promise<RunningRegistry> {
  const root = o.root ?? tempDir(t, 'reg');
  const storage = { ...(doc.storage as object | undefined), root };
  const config = await makeConfig({ ...doc, http: { addr: '127.0.0.1:0', ...(doc.http as object | undefined) }, storage });
  const reg = await startServer(config, o);
  t.after(() => reg.close());
  return reg;
}

export type Res = { status: number; headers: Headers; body: Buffer; json: () => any; text: string };

export async function req(base: string, method: string, path: string, o: { headers?: Record<string, string>; body?: Buffer | string } = {}): Promise<Res> {
  const init: RequestInit & { duplex?: string } = { method, headers: o.headers ?? {}, redirect: 'manual' };
  if (o.body !== undefined) init.body = o.body;
  const r = await fetch(base + path, init);
  const body = Buffer.from(await r.arrayBuffer());
  return { status: r.status, headers: r.headers, body, text: body.toString('utf8'), json: () => JSON.parse(body.toString('utf8')) };
}

export function sha256(b: Buffer | string): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

export function blob(n: number, seed?: string): { data: Buffer; digest: string } {
  const data = seed ? Buffer.alloc(n, seed) : randomBytes(n);
  return { data, digest: sha256(data) };
}

/** Upload a blob monolithically (POST then PUT, the flow every client supports). */
export async function pushBlob(base: string, repo: string, data: Buffer): Promise<string> {
  const d = sha256(data);
  const s = await req(base, 'POST', `/v2/${repo}/blobs/uploads/`);
  if (s.status !== 202) throw new Error(`POST upload: ${s.status} ${s.text}`);
  const loc = s.headers.get('location')!;
  const sep = loc.includes('?') ? '&' : '?';
  const p = await req(base, 'PUT', `${loc.startsWith('http') ? new URL(loc).pathname + new URL(loc).search : loc}${sep}digest=${d}`, {
    body: data,
    headers: { 'Content-Type': 'application/octet-stream' },
  });
  if (p.status !== 201) throw new Error(`PUT upload: ${p.status} ${p.text}`);
  return d;
}

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const ACCEPT_ALL = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(', ');

/** Push a small image (config + n layers) and its manifest; returns the manifest bytes and digest. */
export async function pushImage(
  base: string,
  repo: string,
  tag: string,
  o: { layers?: number; docker?: boolean; subject?: { mediaType: string; digest: string; size: number }; artifactType?: string; annotations?: Record<string, string>; seed?: string } = {},
): Promise<{ bytes: Buffer; digest: string; mediaType: string }> {
  const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, seed: o.seed ?? randomBytes(8).toString('hex') }));
  const cfgD = await pushBlob(base, repo, cfg);
  const layers = [];
  for (let i = 0; i < (o.layers ?? 1); i++) {
    const l = randomBytes(1000 + i);
    layers.push({ mediaType: o.docker ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : 'application/vnd.oci.image.layer.v1.tar+gzip', digest: await pushBlob(base, repo, l), size: l.length });
  }
  const mediaType = o.docker ? DOCKER_MANIFEST : OCI_MANIFEST;
  const doc: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType,
    config: { mediaType: o.docker ? 'application/vnd.docker.container.image.v1+json' : 'application/vnd.oci.image.config.v1+json', digest: cfgD, size: cfg.length },
    layers,
  };
  if (o.artifactType) doc.artifactType = o.artifactType;
  if (o.subject) doc.subject = o.subject;
  if (o.annotations) doc.annotations = o.annotations;
  const bytes = Buffer.from(JSON.stringify(doc, null, 2));
  const r = await req(base, 'PUT', `/v2/${repo}/manifests/${tag}`, { body: bytes, headers: { 'Content-Type': mediaType } });
  if (r.status !== 201) throw new Error(`PUT manifest: ${r.status} ${r.text}`);
  return { bytes, digest: sha256(bytes), mediaType };
}

export function errCode(r: Res): string | undefined {
  try {
    return r.json().errors?.[0]?.code;
  } catch {
    return undefined;
  }
}

import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, PEERS, sh, requireTool, startDistribution as startDistributionProcess } from '../helpers.js';

/** distribution (docker-registry) on a free loopback port (helpers.startDistribution), with its base URL. */
export async function startDistribution(t: T): Promise<{ addr: string; url: string; pid: number; store: string }> {
  const r = await startDistributionProcess(t);
  return { ...r, url: `http://${r.addr}` };
}

export type RegistryProcess = { addr: string; url: string; pid: number; child: ChildProcess; stop(signal?: NodeJS.Signals): Promise<number | null> };

/** Run `tsregistry serve` as a real process on a free port; stopped (by PID) when the test ends. */
export async function spawnRegistry(t: T, root: string, extraArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<RegistryProcess> {
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'tsregistry.js'), 'serve', '--addr', '127.0.0.1:0', '--root', root, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`tsregistry did not start in 10s: ${stderr}`)), 10_000);
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`tsregistry exited with ${code} before listening: ${stderr}`));
    });
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code, sig) => resolve(code ?? (sig ? -1 : null))));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    return exited;
  };
  t.after(() => stop('SIGKILL').then(() => undefined));
  return { url, addr: url.replace(/^https?:\/\//, ''), pid: child.pid!, child, stop };
}

let baseBuilt: Promise<string> | undefined;
/** The busybox base image as an OCI layout (../shared/peers/make-base.sh, built once per process). */
export function baseOciDir(): Promise<string> {
  baseBuilt ??= (async () => {
    requireTool('buildah');
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(join(tmpdir(), 'tsimage-regbase-'));
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
    sh('sh', [join(PEERS, 'make-base.sh'), dir]);
    return join(dir, 'oci');
  })();
  return baseBuilt;
}
