/** tsbuild from, containers, run, copy, add, config, commit, rm, mount, umount. */
import { UsageError } from '../oci/errors.js';
import { rootController } from './common.js';

function applyGlobals(g: Record<string, unknown>): void {
  if (g.root) process.env.TSIMAGE_ROOT = String(g.root);
  if (g.storageDriver) process.env.TSIMAGE_STORAGE_DRIVER = String(g.storageDriver);
}

async function ctx(g: Record<string, unknown>) {
  applyGlobals(g);
  const { ImageStore } = await import('../builder/store.js');
  return ImageStore.open();
}

async function withSnap<T>(root: string, fn: (snap: import('../overlay/index.js').Snapshotter) => Promise<T>): Promise<T> {
  const { openSnapshotter } = await import('../overlay/index.js');
  const snap = await openSnapshotter({ root });
  try {
    return await fn(snap);
  } finally {
    await snap.close();
  }
}

export async function fromCommand(image: string, opts: Record<string, unknown>, g: Record<string, unknown>): Promise<void> {
  const store = await ctx(g);
  const { scratchRecord, newContainerId } = await import('../builder/working.js');
  const { isEmbeddedBaseName } = await import('../builder/store.js');
  const existing = await store.containers();
  const base = image === 'scratch' ? 'working-container' : `${image.split('/').pop()!.split(':')[0]!.split('@')[0]}-working-container`;
  let name = (opts.name as string | undefined) ?? base;
  if (!opts.name) for (let i = 1; existing.some((c) => c.name === name); i++) name = `${base}-${i}`;
  else if (existing.some((c) => c.name === name)) throw new UsageError(`the container name "${name}" is already in use`);
  let rec = scratchRecord(name);
  if (image !== 'scratch') {
    let img = await store.find(image);
    if (!img && isEmbeddedBaseName(image)) img = await store.ensureEmbeddedBase(rootController.signal);
    if (!img) {
      const { pullImage } = await import('../builder/transfer.js');
      img = await pullImage(image, store, { signal: rootController.signal });
    }
    if (!img) throw new UsageError(`image ${image} is not in the local store`);
    rec = {
      id: newContainerId(),
      name,
      image: img.names[0] ?? img.id,
      imageId: img.id.slice(7),
      snapshot: '',
      config: structuredClone(img.config),
      layers: structuredClone(img.manifest.layers),
      created: new Date().toISOString(),
    };
    rec.config.history ??= [];
  }
  await store.updateContainers((list) => {
    list.push(rec);
  });
  process.stdout.write(name + '\n');
}

export async function containersCommand(opts: Record<string, unknown>, g: Record<string, unknown>): Promise<void> {
  const store = await ctx(g);
  const list = await store.containers();
  if (opts.json) {
    process.stdout.write(JSON.stringify(list.map((c) => ({ id: c.id, containername: c.name, imagename: c.image, imageid: c.imageId, builder: true })), null, 4) + '\n');
    return;
  }
  if (opts.quiet) {
    for (const c of list) process.stdout.write(c.id.slice(0, 12) + '\n');
    return;
  }
  if (!opts.noheading) process.stdout.write(`${'CONTAINER ID'.padEnd(14)}BUILDER  ${'IMAGE ID'.padEnd(14)}${'IMAGE NAME'.padEnd(34)}CONTAINER NAME\n`);
  for (const c of list) process.stdout.write(`${c.id.slice(0, 12).padEnd(14)}${'*'.padEnd(9)}${c.imageId.slice(0, 12).padEnd(14)}${(c.image || 'scratch').padEnd(34)}${c.name}\n`);
}

export async function runCommand(name: string, command: string[], opts: Record<string, unknown>, g: Record<string, unknown>): Promise<void> {
  const store = await ctx(g);
  const c = await store.container(name);
  const { applyChange } = await import('../builder/working.js');
  const { createRunner, checkResult } = await import('../ns/index.js');
  const runner = await createRunner(opts.isolation as string | undefined);
  const env = [...(c.config.config?.Env ?? [])];
  for (const e of (opts.env as string[]) ?? []) env.push(e.includes('=') ? e : `${e}=${process.env[e] ?? ''}`);
  const mounts = ((opts.volume as string[]) ?? []).map((v) => {
    const [src, dst, mode] = v.split(':');
    if (!src || !dst) throw new UsageError(`--volume ${v}: want SRC:DST[:ro]`);
    return { type: 'bind' as const, source: src, destination: dst, readonly: mode === 'ro' };
  });
  let code = 0;
  await withSnap(store.root, (snap) =>
    applyChange(store, snap, c, `/bin/sh -c ${command.join(' ')}`, async (rootfs) => {
      const r = await runner.run(command, {
        rootfs,
        env,
        cwd: (opts.workingdir as string | undefined) ?? c.config.config?.WorkingDir ?? '/',
        user: (opts.user as string | undefined) ?? c.config.config?.User,
        network: (opts.network as 'none' | 'host' | undefined) ?? 'host',
        mounts,
        stdio: { stdin: 'inherit', stdout: 'inherit', stderr: 'inherit' },
        signal: rootController.signal,
      });
      code = r.exitCode ?? 1;
      checkResult(command, r);
    }, { signal: rootController.signal }),
  );
  await store.updateContainers((list) => {
    const i = list.findIndex((x) => x.id === c.id);
    if (i >= 0) list[i] = c;
  });
  process.exitCode = code;
}

export async function copyCommand(kind: 'COPY' | 'ADD', name: string, paths: string[], opts: Record<string, unknown>, g: Record<string, unknown>): Promise<void> {
  if (paths.length < 1) throw new UsageError(`${kind.toLowerCase()}: want SRC... [DEST]`);
  const store = await ctx(g);
  const c = await store.container(name);
  const { applyChange } = await import('../builder/working.js');
  const { copyFiles } = await import('../builder/copyfiles.js');
  const { openContext } = await import('../builder/context.js');
  const dest = paths.length > 1 ? paths[paths.length - 1]! : '/';
  const srcs = paths.length > 1 ? paths.slice(0, -1) : paths;
  const { resolve, dirname, basename } = await import('node:path');
  await withSnap(store.root, (snap) =>
    applyChange(store, snap, c, `/bin/sh -c #(nop) ${kind} ${srcs.join(' ')} in ${dest}`, async (rootfs) => {
      for (const s of srcs) {
        const abs = resolve(s);
        const ctx = await openContext(dirname(abs), { cacheDir: false, ignoreFile: opts.ignorefile as string | undefined });
        await copyFiles(
          { kind, srcs: [basename(abs)], dest, chown: opts.chown as string | undefined, chmod: opts.chmod as string | undefined, loc: { file: 'command line', line: 0 } },
          { context: ctx },
          { rootfs, workdir: c.config.config?.WorkingDir || '/' },
          { signal: rootController.signal },
        );
      }
    }, { signal: rootController.signal }),
  );
  await store.updateContainers((list) => {
    const i = list.findIndex((x) => x.id === c.id);
    if (i >= 0) list[i] = c;
  });
}

function cmdValue(v: string): string[] {
  const t = v.trim();
  if (t.startsWith('[')) {
    try {
      const a = JSON.parse(t) as unknown;
      if (Array.isArray(a) && a.every((x) => typeof x === 'string')) return a as string[];
    } catch {}
  }
  return ['/bin/sh', '-c', v];
}

export async function configCommand(name: string, opts: Record<string, unknown>, g: Record<string, unknown>): Promise<void> {
  const store = await ctx(g);
  await store.updateContainers(async (list) => {
    const c = list.find((x) => x.name === name || x.id === name || x.id.startsWith(name));
    if (!c) throw new UsageError(`no working container ${JSON.stringify(name)}`);
    const cfg = (c.config.config ??= {});
    if (opts.cmd !== undefined) cfg.Cmd = cmdValue(String(opts.cmd));
    if (opts.entrypoint !== undefined) cfg.Entrypoint = cmdValue(String(opts.entrypoint));
    for (const e of (opts.env as string[]) ?? []) {
      if (e.endsWith('-') && !e.includes('=')) {
        const k = e.slice(0, -1);
        cfg.Env = (cfg.Env ?? []).filter((x) => !x.startsWith(`${k}=`));
        continue;
      }
      const i = e.indexOf('=');
      const k = i < 0 ? e : e.slice(0, i);
      const v = i < 0 ? process.env[e] ?? '' : e.slice(i + 1);
      const env = (cfg.Env ?? []).filter((x) => !x.startsWith(`${k}=`));
      env.push(`${k}=${v}`);
      cfg.Env = env;
    }
    for (const l of (opts.label as string[]) ?? []) {
      cfg.Labels ??= {};
      if (l.endsWith('-') && !l.includes('=')) delete cfg.Labels[l.slice(0, -1)];
      else {
        const i = l.indexOf('=');
        cfg.Labels[i < 0 ? l : l.slice(0, i)] = i < 0 ? '' : l.slice(i + 1);
      }
    }
    for (const p of (opts.port as string[]) ?? []) (cfg.ExposedPorts ??= {})[p.includes('/') ? p : `${p}/tcp`] = {};
    for (const v of (opts.volume as string[]) ?? []) (cfg.Volumes ??= {})[v] = {};
    if (opts.workingdir !== undefined) cfg.WorkingDir = String(opts.workingdir);
    if (opts.user !== undefined) cfg.User = String(opts.user);
    if (opts.stopSignal !== undefined) cfg.StopSignal = String(opts.stopSignal);
    if (opts.author !== undefined) c.config.author = String(opts.author);
    if (opts.shell !== undefined) cfg.Shell = cmdValue(String(opts.shell));
    for (const t of (opts.onbuild as string[]) ?? []) (cfg.OnBuild ??= []).push(t);
    if (opts.healthcheck !== undefined) cfg.Healthcheck = { Test: String(opts.healthcheck) === 'NONE' ? ['NONE'] : ['CMD-SHELL', String(opts.healthcheck)] };
    if (opts.arch !== undefined) c.config.architecture = String(opts.arch);
    if (opts.os !== undefined) c.config.os = String(opts.os);
  });
}

export async function commitCommand(name: string, image: string | undefined, opts: Record<string, unknown>, g: Record<string, unknown>): Promise<void> {
  const store = await ctx(g);
  const c = await store.container(name);
  const { commitImage } = await import('../builder/commit.js');
  const { stateOf } = await import('../builder/working.js');
  let timestamp: number | undefined;
  if (opts.timestamp !== undefined) timestamp = Number(opts.timestamp);
  else if (process.env.SOURCE_DATE_EPOCH) timestamp = Number(process.env.SOURCE_DATE_EPOCH);
  const res = await withSnap(store.root, (snap) =>
    commitImage(store, snap, stateOf(c), {
      tags: image ? [image] : [],
      format: (opts.format as 'oci' | 'docker') ?? 'oci',
      compression: 'gzip',
      squash: !!opts.squash,
      timestamp,
      outputs: [],
      log: opts.quiet ? () => {} : (l) => process.stderr.write(l + '\n'),
      signal: rootController.signal,
    }),
  );
  if (opts.iidfile) await (await import('node:fs/promises')).writeFile(String(opts.iidfile), res.imageId);
  if (opts.rm) await store.updateContainers((list) => void list.splice(list.findIndex((x) => x.id === c.id), 1));
  process.stdout.write(res.imageId + '\n');
}

export async function rmCommand(names: string[], opts: Record<string, unknown>, g: Record<string, unknown>): Promise<void> {
  const store = await ctx(g);
  if (!names.length && !opts.all) throw new UsageError('rm: name a container (or --all)');
  const removed = await store.updateContainers((list) => {
    const out: string[] = [];
    for (let i = list.length - 1; i >= 0; i--) {
      const c = list[i]!;
      if (opts.all || names.includes(c.name) || names.includes(c.id) || names.some((n) => n.length >= 6 && c.id.startsWith(n))) {
        out.push(c.id);
        list.splice(i, 1);
      }
    }
    return out;
  });
  const missing = names.filter((n) => !removed.length);
  if (missing.length && !opts.all) throw new UsageError(`no working container ${missing.join(', ')}`);
  for (const id of removed) process.stdout.write(id + '\n');
}

export async function mountCommand(name: string | undefined, g: Record<string, unknown>): Promise<void> {
  const store = await ctx(g);
  const { mountContainer } = await import('../builder/mounts.js');
  if (!name) {
    for (const c of await store.containers()) if (c.mounted) process.stdout.write(`${c.name} ${c.mounted}\n`);
    return;
  }
  const c = await store.container(name);
  const path = await mountContainer(store, c, rootController.signal);
  process.stdout.write(path + '\n');
}

export async function umountCommand(names: string[], opts: Record<string, unknown>, g: Record<string, unknown>): Promise<void> {
  const store = await ctx(g);
  const { umountContainer } = await import('../builder/mounts.js');
  const list = opts.all ? (await store.containers()).filter((c) => c.mounted) : await Promise.all(names.map((n) => store.container(n)));
  if (!list.length && !opts.all) throw new UsageError('umount: name a container (or --all)');
  for (const c of list) {
    await umountContainer(store, c, rootController.signal);
    process.stdout.write(c.id + '\n');
  }
}
