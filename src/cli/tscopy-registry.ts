/**
 * tscopy's registry commands (login, logout, list-tags, delete), with skopeo's flag names.
 * Registration only: each action imports its implementation (and undici) lazily.
 */
import { InvalidArgumentError, type Command } from 'commander';
import { parseBool } from './common.js';

function registryFlags(c: Command, o: { creds?: boolean; retry?: boolean } = {}): Command {
  c.option('--tls-verify [bool]', 'require HTTPS and verify certificates (default: registries.conf decides; false allows plain HTTP)', parseBool)
    .option('--authfile <path>', 'auth.json with registry credentials (default: $REGISTRY_AUTH_FILE or $XDG_RUNTIME_DIR/containers/auth.json)')
    .option('--cert-dir <dir>', 'directory with certificates (*.crt, *.cert, *.key) for the registry');
  if (o.creds !== false) {
    c.option('--creds <user[:password]>', 'registry credentials')
      .option('--username <user>', 'registry user name')
      .option('--password <password>', 'registry password')
      .option('--no-creds', 'access the registry anonymously')
      .option('--registry-token <token>', 'bearer token for the registry');
  }
  if (o.retry !== false) c.option('--retry-times <n>', 'retries on temporary failures (5xx, 429, connection resets)', (v) => {
    const n = Number(v);
    if (!/^\d+$/.test(v)) throw Object.assign(new InvalidArgumentError(`not a count: ${v}`), { exitCode: 2 });
    return n;
  });
  return c;
}

export function registerRegistryCommands(p: Command): void {
  registryFlags(
    p
      .command('login')
      .description('Log in to a registry: verify the credentials against it, then store them in the auth file')
      .argument('<registry>', 'registry host[:port] (optionally with a /namespace)')
      .option('-u, --username <user>', 'user name')
      .option('-p, --password <password>', 'password (prefer --password-stdin)')
      .option('--password-stdin', 'read the password from stdin')
      .option('--get-login', 'print the user name stored for the registry and exit')
      .option('-v, --verbose', 'print the auth file used'),
    { creds: false, retry: false },
  ).action(async (registry: string, opts: import('./tscopy-registry-impl.js').LoginOpts) => {
    const m = await import('./tscopy-registry-impl.js');
    await m.loginCmd(registry, opts);
  });

  p.command('logout')
    .description('Remove the stored credentials of a registry (or all with --all)')
    .argument('[registry]', 'registry host[:port] (optionally with a /namespace)')
    .option('-a, --all', 'remove the credentials of every registry')
    .option('--authfile <path>', 'auth.json to edit (default: $REGISTRY_AUTH_FILE or $XDG_RUNTIME_DIR/containers/auth.json)')
    .action(async (registry: string | undefined, opts: import('./tscopy-registry-impl.js').LogoutOpts) => {
      const m = await import('./tscopy-registry-impl.js');
      await m.logoutCmd(registry, opts);
    });

  registryFlags(
    p
      .command('list-tags')
      .description('List the tags of a repository (JSON as skopeo prints it)')
      .argument('<repository>', 'docker://HOST/REPO'),
  ).action(async (repo: string, opts: import('./tscopy-registry-impl.js').RegistryOpts) => {
    const m = await import('./tscopy-registry-impl.js');
    await m.listTagsCmd(repo, opts);
  });

  registryFlags(
    p
      .command('delete')
      .description('Delete an image from a registry (a tag is resolved to its digest: every tag of that manifest goes)')
      .argument('<image>', 'docker://HOST/REPO:TAG or docker://HOST/REPO@DIGEST'),
  ).action(async (image: string, opts: import('./tscopy-registry-impl.js').RegistryOpts) => {
    const m = await import('./tscopy-registry-impl.js');
    await m.deleteCmd(image, opts);
  });
}
