/** tsbuild: a Buildah-style image builder. Subcommands load their modules lazily. */
import { Command, Option } from 'commander';
import { parseBool, runMain, VERSION } from './common.js';

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function program(): Command {
  const p = new Command('tsbuild')
    .description('Build OCI container images from Dockerfiles/Containerfiles (buildah-compatible)')
    .version(VERSION, '-v, --version')
    .option('--debug', 'print error causes and stack traces')
    .option('--root <dir>', 'storage root (default $TSIMAGE_ROOT, /var/lib/tsimage for root)')
    .option('--storage-driver <driver>', 'overlay or vfs (default: overlay when it works here)')
    // commander's usage errors (unknown option, missing argument) exit 2, as buildah's do
    .exitOverride((err) => {
      if (err.code !== 'commander.helpDisplayed' && err.code !== 'commander.version' && err.exitCode === 1) (err as { exitCode: number }).exitCode = 2;
      throw err;
    });

  for (const name of ['bud', 'build']) {
    p.command(`${name} [context]`)
      .description(name === 'bud' ? 'build an image from a Containerfile/Dockerfile' : 'alias of bud')
      .option('-f, --file <file>', 'Containerfile/Dockerfile (default: Containerfile or Dockerfile in the context)')
      .option('-t, --tag <name>', 'name the image (repeatable)', collect, [])
      .option('--target <stage>', 'build this stage (and only what it needs)')
      .option('--build-arg <k=v>', 'set a build argument (repeatable; K alone takes it from the environment)', collect, [])
      .option('--build-arg-file <file>', 'build arguments from a file (K=V lines)', collect, [])
      .option('--layers [bool]', 'cache every step as a layer (default true)', 'true')
      .option('--no-cache', 'do not use cached steps')
      .option('--explain-cache', 'print, for each step that missed the cache, which input changed')
      .option('--cache-from <repo>', 'registry repository to look cached steps up in (repeatable)', collect, [])
      .option('--cache-to <repo>', 'registry repository to push this build\'s cache entries to (OCI artifacts)')
      .option('--ignorefile <file>', 'ignore file instead of .containerignore/.dockerignore')
      .addOption(new Option('--pull [policy]', 'pull policy').choices(['always', 'missing', 'never', 'ifnewer', 'true', 'false']).default('missing'))
      .option('--pull-always', 'same as --pull=always')
      .option('--pull-never', 'same as --pull=never')
      .addOption(new Option('--format <fmt>', 'manifest format').choices(['oci', 'docker']).default(process.env.BUILDAH_FORMAT ?? 'oci'))
      .addOption(new Option('--compression-format <c>', 'compress the layers in the local store too (default: only where they are pushed/written)').choices(['gzip', 'zstd']))
      .option('-D, --disable-compression [bool]', 'keep layers uncompressed in the local store (default true, as buildah); push and --output compress', 'true')
      .option('--squash', 'squash all layers into one')
      .option('--timestamp <seconds>', 'set created times and file mtimes to this epoch time (reproducible)')
      .option('--iidfile <file>', 'write the image ID to this file')
      .option('--manifest <list>', 'add the image to this manifest list (created if needed)')
      .option('-o, --output <spec>', 'also write the result: type=local|tar|oci|docker-archive,dest=PATH (repeatable)', collect, [])
      .option('--label <k=v>', 'set an image label (repeatable)', collect, [])
      .option('--annotation <k=v>', 'set a manifest annotation (repeatable)', collect, [])
      .option('--isolation <kind>', 'builtin (namespaces, default), chroot or oci (runc)')
      .option('--network <mode>', 'RUN network: host (default) or none')
      .option('--jobs <n>', 'stages built in parallel', (v) => parseInt(v, 10))
      .option('--secret <spec>', 'id=ID,src=FILE (repeatable)', collect, [])
      .option('--platform <os/arch>', 'target platform (the host platform only)')
      .option('--arch <arch>', 'target architecture (the host architecture only)')
      .option('--os <os>', 'target OS (the host OS only)')
      .option('--tls-verify [bool]', 'verify TLS when pulling/pushing', 'true')
      .option('--authfile <file>', 'auth.json for pulls and pushes')
      .option('--creds <user:pass>', 'registry credentials')
      .option('--cert-dir <dir>', 'certificates for registries')
      .option('--signature-policy <file>', 'policy.json to check pulled images against (default: $HOME/.config/containers/policy.json, /etc/containers/policy.json)')
      .option('--push', 'push the image after the build (to its first name)')
      .option('-q, --quiet', 'print only the image ID')
      .option('--logfile <file>', 'write progress to this file')
      .action(async (context: string | undefined, opts: Record<string, unknown>, cmd: Command) => {
        const { budCommand } = await import('./tsbuild-bud.js');
        return budCommand(context, opts, cmd.optsWithGlobals());
      });
  }

  p.command('images [names...]')
    .description('list images in the local store')
    .option('--format <fmt>', 'json or table')
    .option('--json', 'JSON output')
    .option('-q, --quiet', 'print only image IDs')
    .option('--no-trunc', 'print full image IDs')
    .option('-a, --all', 'include unnamed images')
    .action(async (names: string[], opts: Record<string, unknown>, cmd: Command) => (await import('./tsbuild-images.js')).imagesCommand(names, opts, cmd.optsWithGlobals()));

  p.command('tag <image> <names...>')
    .description('add names to an image')
    .action(async (image: string, names: string[], _o: unknown, cmd: Command) => (await import('./tsbuild-images.js')).tagCommand(image, names, cmd.optsWithGlobals()));

  p.command('rmi [images...]')
    .description('remove images (names; the image goes when its last name does)')
    .option('-f, --force', 'remove the image with all its names')
    .option('-a, --all', 'remove all images')
    .option('-p, --prune', 'remove unnamed images')
    .action(async (images: string[], opts: Record<string, unknown>, cmd: Command) => (await import('./tsbuild-images.js')).rmiCommand(images, opts, cmd.optsWithGlobals()));

  p.command('inspect <name>')
    .description('show an image (or working container) as JSON')
    .addOption(new Option('-t, --type <type>', 'image or container').choices(['image', 'container']))
    .option('-f, --format <tmpl>', 'Go-template-like field path, e.g. {{.Config.Env}}')
    .action(async (name: string, opts: Record<string, unknown>, cmd: Command) => (await import('./tsbuild-images.js')).inspectCommand(name, opts, cmd.optsWithGlobals()));

  p.command('prune')
    .description('remove unnamed images, unreferenced blobs, unused layers and the build cache')
    .option('-a, --all', 'remove the whole build cache and the RUN cache mounts')
    .option('--keep-storage <size>', 'keep at most this much build cache (least recently used go first), e.g. 2GB')
    .action(async (opts: Record<string, unknown>, cmd: Command) => (await import('./tsbuild-images.js')).pruneCommand(opts, cmd.optsWithGlobals()));

  p.command('info')
    .description('show the storage root, drivers and the runtime')
    .option('--format <fmt>', 'json (default)')
    .action(async (_o: unknown, cmd: Command) => (await import('./tsbuild-images.js')).infoCommand(cmd.optsWithGlobals()));

  p.command('version')
    .description('print version information')
    .action(() => {
      process.stdout.write(`Version:     ${VERSION}\nNode:        ${process.version}\nOS/Arch:     ${process.platform}/${process.arch}\n`);
    });

  // working containers: from, run, copy, add, config, commit, containers, rm, mount, umount
  p.command('from <image>')
    .description('create a working container from an image (or scratch)')
    .option('--name <name>', 'container name')
    .addOption(new Option('--pull [policy]', 'pull policy').choices(['always', 'missing', 'never', 'true', 'false']).default('missing'))
    .option('-q, --quiet', 'print only the container name')
    .action(async (image: string, opts: Record<string, unknown>, cmd: Command) => (await import('./tsbuild-containers.js')).fromCommand(image, opts, cmd.optsWithGlobals()));

  p.command('containers')
    .description('list working containers')
    .option('--json', 'JSON output')
    .option('-q, --quiet', 'print only container IDs')
    .option('-n, --noheading', 'no heading')
    .action(async (opts: Record<string, unknown>, cmd: Command) => (await import('./tsbuild-containers.js')).containersCommand(opts, cmd.optsWithGlobals()));

  p.command('run <container> <command...>')
    .description('run a command in a working container')
    .option('--isolation <kind>', 'builtin (default), chroot or oci')
    .option('--network <mode>', 'host (default) or none')
    .option('--workingdir <dir>', 'working directory')
    .option('--user <user>', 'user[:group]')
    .option('-e, --env <k=v>', 'environment (repeatable)', collect, [])
    .option('-v, --volume <src:dst[:ro]>', 'bind mount (repeatable)', collect, [])
    .action(async (c: string, command: string[], opts: Record<string, unknown>, cmd: Command) => (await import('./tsbuild-containers.js')).runCommand(c, command, opts, cmd.optsWithGlobals()));

  for (const kind of ['copy', 'add']) {
    p.command(`${kind} <container> <paths...>`)
      .description(`${kind === 'copy' ? 'copy' : 'add (copy, extracting local archives)'} files into a working container: SRC... DEST`)
      .option('--chown <user:group>', 'owner of the copied files')
      .option('--chmod <mode>', 'mode of the copied files')
      .option('--from <image-or-container>', 'copy from an image or another container')
      .action(async (c: string, paths: string[], opts: Record<string, unknown>, cmd: Command) =>
        (await import('./tsbuild-containers.js')).copyCommand(kind.toUpperCase() as 'COPY' | 'ADD', c, paths, opts, cmd.optsWithGlobals()));
  }

  p.command('config <container>')
    .description('change the configuration of a working container')
    .option('--cmd <cmd>', 'CMD (JSON array or shell command)')
    .option('--entrypoint <ep>', 'ENTRYPOINT (JSON array or shell command)')
    .option('-e, --env <k=v>', 'environment (repeatable; K- removes)', collect, [])
    .option('-l, --label <k=v>', 'label (repeatable; K- removes)', collect, [])
    .option('-p, --port <port>', 'exposed port (repeatable)', collect, [])
    .option('-v, --volume <path>', 'volume (repeatable)', collect, [])
    .option('--workingdir <dir>', 'working directory')
    .option('-u, --user <user>', 'user')
    .option('--stop-signal <sig>', 'stop signal')
    .option('--author <a>', 'author')
    .option('--created-by <s>', 'history created_by of the next commit')
    .option('--shell <shell>', 'shell (JSON array)')
    .option('--onbuild <trigger>', 'ONBUILD trigger (repeatable)', collect, [])
    .option('--healthcheck <cmd>', 'healthcheck command')
    .option('--arch <arch>', 'architecture')
    .option('--os <os>', 'os')
    .action(async (c: string, opts: Record<string, unknown>, cmd: Command) => (await import('./tsbuild-containers.js')).configCommand(c, opts, cmd.optsWithGlobals()));

  p.command('commit <container> [image]')
    .description('commit a working container to an image')
    .addOption(new Option('--format <fmt>', 'manifest format').choices(['oci', 'docker']).default('oci'))
    .option('--squash', 'squash into one layer')
    .option('--rm', 'remove the container after committing')
    .option('--iidfile <file>', 'write the image ID here')
    .option('--timestamp <seconds>', 'created time (epoch seconds)')
    .option('-q, --quiet', 'print only the image ID')
    .action(async (c: string, image: string | undefined, opts: Record<string, unknown>, cmd: Command) => (await import('./tsbuild-containers.js')).commitCommand(c, image, opts, cmd.optsWithGlobals()));

  p.command('rm [containers...]')
    .description('remove working containers')
    .option('-a, --all', 'all working containers')
    .action(async (cs: string[], opts: Record<string, unknown>, cmd: Command) => (await import('./tsbuild-containers.js')).rmCommand(cs, opts, cmd.optsWithGlobals()));

  p.command('mount [container]')
    .description('mount a working container\'s rootfs and print the path')
    .action(async (c: string | undefined, _o: unknown, cmd: Command) => (await import('./tsbuild-containers.js')).mountCommand(c, cmd.optsWithGlobals()));

  p.command('umount [containers...]')
    .alias('unmount')
    .description('unmount working containers')
    .option('-a, --all', 'all')
    .action(async (cs: string[], opts: Record<string, unknown>, cmd: Command) => (await import('./tsbuild-containers.js')).umountCommand(cs, opts, cmd.optsWithGlobals()));

  p.command('pull <image>')
    .description('pull an image into the local store (through the copy engine)')
    .option('--tls-verify [bool]', 'verify TLS', 'true')
    .option('--authfile <file>', 'auth.json')
    .option('--creds <user:pass>', 'credentials')
    .option('--cert-dir <dir>', 'certificates for the registry')
    .option('--signature-policy <file>', 'policy.json to check the image against (default: $HOME/.config/containers/policy.json, /etc/containers/policy.json)')
    .option('-q, --quiet', 'no progress')
    .action(async (image: string, opts: Record<string, unknown>, cmd: Command) => (await import('./tsbuild-images.js')).pullCommand(image, opts, cmd.optsWithGlobals()));

  p.command('push <image> [destination]')
    .description('push an image from the local store (through the copy engine)')
    .option('--tls-verify [bool]', 'verify TLS', 'true')
    .option('--authfile <file>', 'auth.json')
    .option('--creds <user:pass>', 'credentials')
    .addOption(new Option('-f, --format <fmt>', 'manifest format').choices(['oci', 'docker', 'v2s2']))
    .option('--cert-dir <dir>', 'certificates for the registry')
    .option('--digestfile <file>', 'write the pushed manifest digest here')
    .option('-q, --quiet', 'no progress')
    .action(async (image: string, dest: string | undefined, opts: Record<string, unknown>, cmd: Command) => (await import('./tsbuild-images.js')).pushCommand(image, dest, opts, cmd.optsWithGlobals()));

  // login/logout: tscopy's implementation (same auth.json)
  p.command('login <registry>')
    .description('log in to a registry: verify the credentials, then store them in the auth file')
    .option('-u, --username <user>', 'user name')
    .option('-p, --password <password>', 'password (prefer --password-stdin)')
    .option('--password-stdin', 'read the password from stdin')
    .option('--get-login', 'print the user name stored for the registry and exit')
    .option('--tls-verify [bool]', 'require HTTPS and verify certificates', parseBool)
    .option('--authfile <path>', 'auth.json (default: $REGISTRY_AUTH_FILE or $XDG_RUNTIME_DIR/containers/auth.json)')
    .option('--cert-dir <dir>', 'certificates for the registry')
    .option('-v, --verbose', 'print the auth file used')
    .action(async (registry: string, opts: import('./tscopy-registry-impl.js').LoginOpts) => (await import('./tscopy-registry-impl.js')).loginCmd(registry, opts));
  p.command('logout [registry]')
    .description('remove the stored credentials of a registry (or all with --all)')
    .option('-a, --all', 'remove the credentials of every registry')
    .option('--authfile <path>', 'auth.json to edit')
    .action(async (registry: string | undefined, opts: import('./tscopy-registry-impl.js').LogoutOpts) => (await import('./tscopy-registry-impl.js')).logoutCmd(registry, opts));

  return p;
}

export function run(): Promise<void> {
  return runMain('tsbuild', async (argv) => {
    await program().parseAsync(argv, { from: 'user' });
  });
}
