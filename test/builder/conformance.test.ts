/**
 * Conformance corpus: every case in test/builder/corpus (and the peers' sample contexts) is built
 * with tsbuild and with buildah 1.28 (`--layers`, chroot isolation) from the same base image bytes
 * (our busybox base: the embedded base for tsbuild, an oci: layout for buildah), then the image
 * configs and the filesystems (paths, types, modes, owners, sizes, contents, link targets, link
 * counts) are compared, and the images run under `podman run` with the expected output.
 * Malformed Dockerfiles must fail with file:line before anything runs.
 * buildah and podman use their own storage root in a temp dir, removed at the end.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PEERS, ROOT, requireTool } from '../helpers.js';
import { baseLayout } from '../fixtures/base.js';
import { build } from '../../src/builder/build.js';
import { ImageStore } from '../../src/builder/store.js';
import { StringSink } from '../../src/builder/executor.js';

const exec = promisify(execFile);
const CORPUS = join(ROOT, 'test', 'builder', 'corpus');
const SECRET = 'hello-world';

interface CaseMeta {
  format?: 'docker';
  buildArgs?: Record<string, string>;
  target?: string;
  secret?: boolean;
  tsbuildOnly?: boolean;
  error?: string;
  /** podman run: stdout must contain `expect` (or equal it with `exact`) */
  run?: { cmd: string[]; expect: string; exact?: boolean };
  /** accepted differences: path -> why */
  known?: Record<string, string>;
  /** files whose content depends on build time (a tar of fresh dirs): type/mode/owner compared, not content */
  volatile?: string[];
}

interface Case {
  name: string;
  dir: string;
  file: string;
  meta: CaseMeta;
}

function loadCases(): Case[] {
  const out: Case[] = [];
  for (const name of readdirSync(CORPUS).sort()) {
    const dir = join(CORPUS, name);
    const metaFile = join(dir, 'case.json');
    const meta = existsSync(metaFile) ? (JSON.parse(readFileSync(metaFile, 'utf8')) as CaseMeta) : {};
    out.push({ name, dir, file: join(dir, 'Containerfile'), meta });
  }
  // the peers' sample contexts (ARG BASE)
  for (const name of ['hello', 'multistage']) {
    const dir = join(PEERS, 'contexts', name);
    out.push({
      name: `peers-${name}`,
      dir,
      file: join(dir, 'Containerfile'),
      meta: name === 'hello' ? { run: { cmd: [], expect: 'hello from RUN' } } : { run: { cmd: [], expect: 'part' }, volatile: ['opt/result/src.tgz'] },
    });
  }
  return out;
}

type Tree = Map<string, string>;

/** Path -> "type mode uid:gid size nlink content-hash|link-target" (mtimes left out). */
function walk(root: string): Tree {
  const t: Tree = new Map();
  const visit = (rel: string): void => {
    const abs = join(root, rel);
    const st = lstatSync(abs);
    const mode = (st.mode & 0o7777).toString(8);
    const own = `${st.uid}:${st.gid}`;
    let desc: string;
    if (st.isSymbolicLink()) desc = `link ${own} -> ${readlinkSync(abs)}`;
    else if (st.isDirectory()) desc = `dir ${mode} ${own}`;
    else if (st.isFile()) desc = `file ${mode} ${own} ${st.size} n${st.nlink} ${createHash('sha256').update(readFileSync(abs)).digest('hex').slice(0, 16)}`;
    else if (st.isFIFO()) desc = `fifo ${mode} ${own}`;
    else if (st.isCharacterDevice()) desc = `char ${mode} ${own} ${st.rdev}`;
    else desc = `other ${mode} ${own}`;
    if (rel) t.set(rel, desc);
    if (st.isDirectory()) for (const n of readdirSync(abs).sort()) visit(rel ? `${rel}/${n}` : n);
  };
  visit('');
  return t;
}

/** What buildah leaves in layers and we don't: empty stubs of its RUN mounts (/etc/hosts...). */
function stubPaths(c: Case): Set<string> {
  const s = new Set(['etc/hosts', 'etc/hostname', 'etc/resolv.conf', 'run', 'run/secrets', 'dev', 'proc', 'sys']);
  for (const m of readFileSync(c.file, 'utf8').matchAll(/target=([^\s,]+)/g)) s.add(m[1]!.replace(/^\//, ''));
  for (const m of readFileSync(c.file, 'utf8').matchAll(/type=secret,id=([^\s,]+)/g)) s.add(`run/secrets/${m[1]}`);
  // and the parent dirs buildah made for them
  for (const p of [...s]) for (let d = p; d.includes('/'); ) s.add((d = d.slice(0, d.lastIndexOf('/'))));
  return s;
}

function compareTrees(c: Case, ours: Tree, theirs: Tree): string[] {
  const stubs = stubPaths(c);
  const diffs: string[] = [];
  for (const [p, d] of theirs) {
    const o = ours.get(p);
    if (c.meta.known?.['/' + p]) continue;
    if (o !== undefined && c.meta.volatile?.includes(p) && o.split(' ').slice(0, 3).join(' ') === d.split(' ').slice(0, 3).join(' ')) continue;
    if (o === undefined) {
      // an empty stub, or a dir holding only stubs
      const empty = /^dir /.test(d) ? [...theirs.keys()].every((k) => !k.startsWith(p + '/') || (stubs.has(k) && !ours.has(k))) : / 0 n1 /.test(d);
      if (stubs.has(p) && empty) continue;
      diffs.push(`only in buildah: /${p} (${d})`);
    } else if (o !== d) {
      // a stub parent dir buildah created for a mount target may differ only in being there
      diffs.push(`/${p}: tsbuild ${o} | buildah ${d}`);
    }
  }
  for (const [p, d] of ours) if (!theirs.has(p) && !c.meta.known?.['/' + p]) diffs.push(`only in tsbuild: /${p} (${d})`);
  return diffs;
}

const CONFIG_FIELDS = ['Env', 'Cmd', 'Entrypoint', 'WorkingDir', 'User', 'Labels', 'ExposedPorts', 'Volumes', 'StopSignal'] as const;
const DOCKER_FIELDS = ['Healthcheck', 'OnBuild', 'Shell'] as const;

function norm(v: unknown): unknown {
  if (v === null || v === undefined) return undefined;
  if (Array.isArray(v) && v.length === 0) return undefined;
  if (typeof v === 'object' && !Array.isArray(v)) {
    const o = { ...(v as Record<string, unknown>) };
    delete o['io.buildah.version'];
    if (Object.keys(o).length === 0) return undefined;
    return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1)));
  }
  if (v === '') return undefined;
  return v;
}

describe('conformance: tsbuild vs buildah --layers on the corpus', () => {
  const cases = loadCases();
  let work: string;
  let peerRoot: string;
  let base: Awaited<ReturnType<typeof baseLayout>>;
  let baseDir: string;
  let secretFile: string;
  const podmanImages: string[] = [];
  const g = (): string[] => ['--root', join(peerRoot, 'storage'), '--runroot', join(peerRoot, 'run'), '--storage-driver', 'overlay'];
  const env = { ...process.env, CONTAINERS_CONF: join(PEERS, 'containers.conf') };

  before(async () => {
    requireTool('buildah');
    requireTool('podman');
    requireTool('runc');
    work = mkdtempSync(join(tmpdir(), 'tsimage-conf-'));
    // buildah names an oci: base after its (lower-case only) path, podman wants a runroot under 50 chars
    peerRoot = `/tmp/tsconf-${randomBytes(5).toString('hex')}`;
    mkdirSync(peerRoot);
    base = await baseLayout();
    baseDir = join(peerRoot, 'base');
    execFileSync('cp', ['-a', base.dir, baseDir]);
    secretFile = join(work, 'secret');
    writeFileSync(secretFile, SECRET);
  });

  after(async () => {
    if (!peerRoot) return;
    spawnSync('buildah', [...g(), 'rm', '-a'], { env });
    spawnSync('podman', [...g(), 'rm', '-a', '-f'], { env });
    spawnSync('podman', [...g(), 'rmi', '-a', '-f'], { env });
    spawnSync('buildah', [...g(), 'rmi', '-a', '-f'], { env });
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(peerRoot)).sort().reverse();
    for (const m of mounts) spawnSync('umount', ['-l', m]);
    rmSync(peerRoot, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
    // buildah's RUN --mount=type=cache dir
    rmSync(join(tmpdir(), 'buildah-cache'), { recursive: true, force: true });
  });

  async function ours(c: Case, root: string): Promise<{ id: string; tree?: Tree; config?: Record<string, unknown>; archive?: string; output: string }> {
    const out = join(work, `${c.name}-rootfs`);
    const archive = join(work, `${c.name}.oci.tar`);
    const sink = new StringSink();
    const res = await build({
      contextDir: c.dir,
      file: c.file,
      root,
      tags: [`tsconf-${c.name}`],
      buildArgs: new Map([['BASE', 'busybox'], ...Object.entries(c.meta.buildArgs ?? {})]),
      format: c.meta.format ?? 'oci',
      target: c.meta.target,
      secrets: new Map([['mysecret', secretFile]]),
      outputs: [
        { type: 'local', dest: out },
        { type: 'oci', dest: archive },
      ],
      log: () => {},
      runOutput: sink,
      network: 'none',
      isolation: 'chroot',
    });
    const img = await (await ImageStore.open(root)).resolve(`tsconf-${c.name}`);
    const tree = walk(out);
    rmSync(out, { recursive: true, force: true });
    return { id: res.imageId, tree, config: { ...(img.config.config ?? {}), author: img.config.author } as Record<string, unknown>, archive, output: sink.text };
  }

  async function buildah(c: Case): Promise<{ tree: Tree; config: Record<string, unknown>; docker: Record<string, unknown> }> {
    const tag = `localhost/tsconf-${c.name}`;
    const args = [...g(), 'bud', '--isolation', 'chroot', '--layers', '-q', '-f', c.file, '-t', tag, '--build-arg', `BASE=oci:${baseDir}:latest`];
    for (const [k, v] of Object.entries(c.meta.buildArgs ?? {})) args.push('--build-arg', `${k}=${v}`);
    if (c.meta.format) args.push('--format', c.meta.format);
    if (c.meta.target) args.push('--target', c.meta.target);
    if (c.meta.secret) args.push('--secret', `id=mysecret,src=${secretFile}`);
    args.push(c.dir);
    await exec('buildah', args, { env, maxBuffer: 64 << 20 });
    const insp = JSON.parse((await exec('buildah', [...g(), 'inspect', '--type', 'image', tag], { env, maxBuffer: 64 << 20 })).stdout) as {
      OCIv1: { config?: Record<string, unknown>; author?: string };
      Docker: { config?: Record<string, unknown>; author?: string };
    };
    // the image's own rootfs (buildah from would run its ONBUILD triggers)
    const mnt = (await exec('podman', [...g(), 'image', 'mount', tag], { env })).stdout.trim();
    try {
      return { tree: walk(mnt), config: { ...(insp.OCIv1.config ?? {}), author: insp.OCIv1.author }, docker: insp.Docker.config ?? {} };
    } finally {
      await exec('podman', [...g(), 'image', 'unmount', tag], { env });
    }
  }

  async function podmanRun(image: string, cmd: string[]): Promise<string> {
    const r = await exec('podman', [...g(), 'run', '--rm', '--pull=never', '--network', 'none', image, ...cmd], { env }).catch((e: { stdout?: string; stderr?: string }) => {
      throw new Error(`podman run ${image} ${cmd.join(' ')} failed: ${e.stderr ?? ''}`);
    });
    return r.stdout;
  }

  it(`builds ${cases.length} cases like buildah (config, filesystem, podman run)`, { timeout: 20 * 60e3 }, async () => {
    const root = mkdtempSync(join(tmpdir(), 'tsimage-confroot-'));
    const failures: string[] = [];
    let compared = 0;
    try {
      // the embedded base and the oci: layout buildah reads hold the same bytes
      const store = await ImageStore.open(root);
      assert.equal((await store.ensureEmbeddedBase()).desc.digest, base.manifestDigest, 'embedded base = fixture base');
      const queue = [...cases];
      const worker = async (): Promise<void> => {
        for (let c = queue.shift(); c; c = queue.shift()) {
          try {
            await runCase(c, root);
          } catch (e) {
            failures.push(`${c.name}: ${(e as Error).message}`);
          }
        }
      };
      const runCase = async (c: Case, r: string): Promise<void> => {
        if (c.meta.error) {
          await assert.rejects(ours(c, r), (e: Error) => {
            assert.match(e.message, new RegExp(c.meta.error!), `${c.name}: error message`);
            return true;
          });
          return;
        }
        const mine = await ours(c, r);
        let podmanId: string | undefined;
        if (c.meta.run) {
          podmanId = (await exec('podman', [...g(), 'pull', '-q', `oci-archive:${mine.archive}`], { env })).stdout.trim();
          podmanImages.push(podmanId);
        }
        if (!c.meta.tsbuildOnly) {
          const theirs = await buildah(c);
          const diffs = compareTrees(c, mine.tree!, theirs.tree);
          for (const f of CONFIG_FIELDS) {
            const a = norm(mine.config![f]);
            const b = norm(theirs.config[f]);
            if (JSON.stringify(a) !== JSON.stringify(b)) diffs.push(`config.${f}: tsbuild ${JSON.stringify(a)} | buildah ${JSON.stringify(b)}`);
          }
          if (norm(mine.config!.author) !== norm(theirs.config.author)) diffs.push(`author: ${mine.config!.author} | ${theirs.config.author}`);
          if (c.meta.format === 'docker')
            for (const f of DOCKER_FIELDS) {
              const a = norm(mine.config![f]);
              const b = norm(theirs.docker[f]);
              if (JSON.stringify(a) !== JSON.stringify(b)) diffs.push(`docker config.${f}: tsbuild ${JSON.stringify(a)} | buildah ${JSON.stringify(b)}`);
            }
          if (diffs.length) throw new Error(`differs from buildah:\n    ${diffs.slice(0, 12).join('\n    ')}`);
          compared++;
        }
        if (c.meta.run && podmanId) {
          const got = await podmanRun(podmanId, c.meta.run.cmd);
          if (c.meta.run.exact) assert.equal(got, c.meta.run.expect, `${c.name}: podman run of the tsbuild image`);
          else assert.ok(got.includes(c.meta.run.expect), `${c.name}: podman run of the tsbuild image: ${JSON.stringify(got)} lacks ${JSON.stringify(c.meta.run.expect)}`);
          if (!c.meta.tsbuildOnly) {
            const peer = await podmanRun(`localhost/tsconf-${c.name}`, c.meta.run.cmd);
            assert.equal(got, peer, `${c.name}: podman run output, tsbuild vs buildah image`);
          }
        }
      };
      await Promise.all([worker(), worker()]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
    assert.deepEqual(failures, [], `${failures.length} of ${cases.length} cases failed:\n  ${failures.join('\n  ')}`);
    assert.ok(compared >= 40, `at least 40 cases compared with buildah (got ${compared})`);
  });
});
