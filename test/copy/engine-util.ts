/** Helpers for the copy engine tests: run the tscopy CLI. */
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { ROOT, sh } from '../helpers.js';
import type { BaseLayout } from '../fixtures/base.js';
import { OciLayout, parseManifest, MediaTypes, type Descriptor } from '../../src/oci/index.js';

export const BIN = join(ROOT, 'bin', 'tscopy.js');

/** Plain HTTP on both sides (loopback test registries). */
export const NOTLS = ['--src-tls-verify=false', '--dest-tls-verify=false'];

/** Run tscopy; stdout, or throws with stderr. */
export function tscopy(args: string[], env?: NodeJS.ProcessEnv): string {
  return sh(process.execPath, [BIN, ...args], env ? { env: { ...process.env, ...env } } : {});
}

/**
 * Run tscopy (expecting success) with TSIMAGE_DEBUG_HTTP=1: its output and the registry requests it made, one
 * `METHOD URL` string per request (the /v2/ pings as `ping URL`).
 */
export function tscopyTraced(args: string[], env?: NodeJS.ProcessEnv): { stdout: string; requests: string[] } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env, TSIMAGE_DEBUG_HTTP: '1' } });
  if (r.status !== 0) throw new Error(`tscopy ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  const requests = [...r.stderr.matchAll(/^http: @\d+ (\S+ \S+) ->/gm)].map((m) => m[1]!);
  return { stdout: r.stdout, requests };
}

/** Run tscopy expecting a failure: exit status and stderr. */
export function tscopyFail(args: string[], env?: NodeJS.ProcessEnv): { status: number | null; stderr: string; stdout: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout };
}

/** An OCI layout with an index (tag "multi") of two images: the base (amd64) and an arm64 variant of it. */
export async function multiArch(base: BaseLayout, dir: string): Promise<{ index: Descriptor; amd64: Descriptor; arm64: Descriptor }> {
  cpSync(base.dir, dir, { recursive: true });
  const layout = await OciLayout.open(dir);
  const amd64 = await layout.resolve('latest');
  const m = parseManifest(await layout.readBytes(amd64.digest), amd64.mediaType);
  if (m.kind !== 'manifest') throw new Error('manifest expected');
  const cfg = JSON.parse((await layout.readBytes(m.doc.config.digest)).toString('utf8'));
  cfg.architecture = 'arm64';
  cfg.variant = 'v8';
  const cfgDesc = await layout.putBytes(MediaTypes.ociConfig, JSON.stringify(cfg));
  const arm = await layout.putBytes(MediaTypes.ociManifest, JSON.stringify({ ...m.doc, config: cfgDesc }));
  const index = await layout.putBytes(
    MediaTypes.ociIndex,
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaTypes.ociIndex,
      manifests: [
        { ...amd64, annotations: undefined, platform: { architecture: 'amd64', os: 'linux' } },
        { ...arm, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } },
      ],
    }),
  );
  await layout.tag('multi', index);
  return { index, amd64: { ...amd64, annotations: undefined }, arm64: arm };
}
