/**
 * tscopy's copy engine commands (copy, inspect, sync), with skopeo's flag names.
 * Registration only: each action imports its implementation (tscopy-copy-impl.ts) lazily.
 */
import { Command, InvalidArgumentError, Option } from 'commander';

/** skopeo's boolean flags take `--flag`, `--flag=true|false`. */
export function boolArg(v: string | undefined): boolean {
  if (v === undefined || v === '' || v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw new InvalidArgumentError(`want true or false, not ${JSON.stringify(v)}`);
}

function intArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`want a non-negative integer, not ${JSON.stringify(v)}`);
  return n;
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

/** skopeo's --encrypt-layer (an int slice: repeatable, comma-separated, negative from the end). */
function collectInts(v: string, prev: number[] = []): number[] {
  const out = [...prev];
  for (const part of v.split(',')) {
    const n = Number(part.trim());
    if (part.trim() === '' || !Number.isInteger(n)) throw new InvalidArgumentError(`want layer indexes (0 = first, -1 = last), not ${JSON.stringify(v)}`);
    out.push(n);
  }
  return out;
}

function overrides(c: Command): Command {
  return c
    .option('--override-os <os>', 'use OS instead of the running OS for choosing images')
    .option('--override-arch <arch>', 'use ARCH instead of the architecture of the machine for choosing images')
    .option('--override-variant <variant>', 'use VARIANT instead of the running architecture variant for choosing images');
}

/** Per-side registry access flags shared by copy and sync (skopeo's names). */
function srcDestAccess(c: Command): Command {
  for (const side of ['src', 'dest'] as const) {
    const which = side === 'src' ? 'source' : 'destination';
    c.option(`--${side}-tls-verify [bool]`, `require HTTPS and verify certificates for the ${which} registry`, boolArg)
      .option(`--${side}-creds <user[:password]>`, `credentials for the ${which} registry`)
      .option(`--${side}-username <name>`, `user name for the ${which} registry (with --${side}-password)`)
      .option(`--${side}-password <password>`, `password for the ${which} registry (with --${side}-username)`)
      .option(`--${side}-no-creds`, `access the ${which} registry anonymously (no auth.json)`)
      .option(`--${side}-registry-token <token>`, `bearer token for the ${which} registry`)
      .option(`--${side}-cert-dir <dir>`, `client certificates / CA for the ${which} registry`)
      .option(`--${side}-authfile <file>`, `auth.json for the ${which}`);
  }
  return c.option('--authfile <file>', 'auth.json (default $REGISTRY_AUTH_FILE or $XDG_RUNTIME_DIR/containers/auth.json)');
}

/** Signatures and trust policy, shared by copy and sync (`what`: "the copied image" / "each copied image"). */
function signing(c: Command, what: string): Command {
  return c
    .option('--remove-signatures', 'do not copy signatures')
    .option('--policy <file>', 'trust policy (policy.json) to check each source image against')
    .option('--insecure-policy', 'accept any image (do not read policy.json)')
    .option('--sign-by <fingerprint>', `sign ${what} with this GPG key ("simple signing", stored as the destination keeps signatures: registries.d lookaside, dir: files)`)
    .option('--sign-by-key <file>', `sign ${what} with this cosign-format private key`)
    .option('--sign-by-sigstore-private-key <file>', "same as --sign-by-key (skopeo's name)")
    .option('--sign-passphrase-file <file>', 'passphrase of the signing key (--sign-by: first line, loopback pinentry)');
}

export function registerCopyCommands(p: Command): void {
  overrides(
    signing(
      srcDestAccess(
        p
          .command('copy')
          .description('Copy an image from one location to another (transports: docker://, oci:, oci-archive:, docker-archive:, docker-daemon:, dir:, tsbuild:)')
          .argument('<source-image>', 'transport:reference of the source')
          .argument('<destination-image>', 'transport:reference of the destination')
          .option('-a, --all', 'copy all images of a manifest list (children first, the list last)')
          .option('--platform <os/arch[/variant]>', 'the instance to copy from a manifest list (default: this machine)')
          .addOption(new Option('-f, --format <format>', 'manifest format of the destination').choices(['oci', 'v2s2']))
          .addOption(new Option('--dest-compress-format <format>', 'recompress layers with this algorithm').choices(['gzip', 'zstd']))
          .option('--dest-compress-level <n>', 'compression level', (v) => Number(v))
          .option('--dest-decompress', 'dir: destinations: store layers uncompressed (new digests, same diffIDs); elsewhere no effect, as skopeo')
          .addOption(new Option('--multi-arch <which>', 'for a manifest list: system (this platform\'s image), all (= --all), index-only (the list only)').choices(['system', 'all', 'index-only']))
          .option('--dest-compress', 'compress uncompressed layers at the destination (the default for registries and OCI layouts)')
          .option('-j, --jobs <n>', 'blobs copied in parallel', intArg, 6)
          .option('--retry-times <n>', 'retry the copy this many times on temporary failures', intArg, 0)
          .option('--src-shared-blob-dir <dir>', "oci: source: its blobs are in DIR/sha256 (shared across OCI layouts), not in the layout's blobs/")
          .option('--dest-shared-blob-dir <dir>', "oci: destination: write the blobs to DIR/sha256 (shared across OCI layouts), not to the layout's blobs/")
          .option('--src-daemon-host <host>', 'docker-daemon: source: the daemon at HOST (unix:///PATH, tcp://HOST:PORT = HTTPS, http://HOST:PORT; default $DOCKER_HOST, else unix:///var/run/docker.sock)')
          .option('--dest-daemon-host <host>', 'docker-daemon: destination: the daemon at HOST (as --src-daemon-host)'),
      ),
      'the copied image',
    )
      .option('-q, --quiet', 'suppress progress output')
      .option('--digestfile <file>', 'write the digest of the copied manifest to this file')
      .option('--preserve-digests', 'preserve digests of images and lists: copy manifests as they are, skipping --format/compression changes (a list that needs converting fails)')
      .option('--sign-identity <ref>', 'identity to sign for (default: the destination reference)')
      .option('--additional-tag <tag>', 'additional tags (docker-archive destinations)', collect)
      .option('--encryption-key <protocol:keyfile>', 'encrypt the layers for this recipient (ocicrypt format; protocol jwe: an RSA or EC public key in PEM); repeatable', collect)
      .option('--encrypt-layer <index>', 'with --encryption-key: encrypt only this layer (0 = first, -1 = last; repeatable or comma-separated; default all)', collectInts)
      .option('--decryption-key <keyfile[:passphrase]>', 'decrypt encrypted layers with this private key (PEM, DER or JWK; passphrase as pass=, file=, fd= or plain); repeatable', collect)
      .action(async (src: string, dest: string, opts: Record<string, unknown>) => {
        const m = await import('./tscopy-copy-impl.js');
        process.exitCode = await m.copyCmd(src, dest, opts);
      }),
  );

  overrides(
    p
      .command('inspect')
      .description("Inspect an image: skopeo's fields (Name, Digest, RepoTags, Created, DockerVersion, Labels, Architecture, Os, Layers, LayersData, Env)")
      .argument('<image>', 'transport:reference')
      .option('--raw', 'print the manifest (or with --config the config) bytes as stored')
      .option('--config', 'print the image config')
      .option('-f, --format <template>', 'json (default) or a Go template ({{.Digest}}, {{json .Labels}}, {{index .Labels "k"}}, {{range .RepoTags}}...{{end}})')
      .option('-n, --no-tags', 'do not list the repository tags (RepoTags)')
      .option('--tls-verify [bool]', 'require HTTPS and verify certificates', boolArg)
      .option('--creds <user[:password]>', 'registry credentials')
      .option('--username <name>', 'registry user name (with --password)')
      .option('--password <password>', 'registry password (with --username)')
      .option('--no-creds', 'access the registry anonymously (no auth.json)')
      .option('--registry-token <token>', 'registry bearer token')
      .option('--cert-dir <dir>', 'client certificates / CA')
      .option('--authfile <file>', 'auth.json')
      .option('--retry-times <n>', 'retries on temporary failures', intArg, 0)
      .option('--shared-blob-dir <dir>', 'oci: blobs in DIR/sha256 (shared across OCI layouts), not in the layout\'s blobs/')
      .option('--daemon-host <host>', 'docker-daemon: the daemon at HOST (unix:///PATH, tcp://HOST:PORT = HTTPS, http://HOST:PORT; default $DOCKER_HOST, else unix:///var/run/docker.sock)')
      .action(async (image: string, opts: Record<string, unknown>) => {
        const m = await import('./tscopy-copy-impl.js');
        process.exitCode = await m.inspectCmd(image, opts);
      }),
  );

  overrides(
    signing(
      srcDestAccess(
        p.command('sync')
          .description('Synchronize images between registries and directories (skopeo sync): a repository, repo:tag, or a YAML file')
          .argument('<source>', 'a repository or repo:tag (--src docker), a directory (--src dir), or a YAML file (--src yaml)')
          .argument('<destination>', 'a registry/namespace (--dest docker) or a directory (--dest dir)')
          .addOption(new Option('-s, --src <transport>', 'source transport').choices(['docker', 'dir', 'yaml']).makeOptionMandatory())
          .addOption(new Option('-d, --dest <transport>', 'destination transport').choices(['docker', 'dir']).makeOptionMandatory())
          .option('--scoped', 'prefix the destination with the full source location (registry/repository)')
          .option('-a, --all', 'copy all images of manifest lists')
          .option('--dry-run', 'print what would be copied, copy nothing')
          .option('--prune', 'delete destination tags the source no longer has (a true mirror)')
          .option('--keep-going', 'go on with the other images after a failure')
          .addOption(new Option('-f, --format <format>', 'manifest format of the destination').choices(['oci', 'v2s2']))
          .addOption(new Option('--dest-compress-format <format>', 'recompress layers with this algorithm').choices(['gzip', 'zstd']))
          .option('-j, --jobs <n>', 'blobs copied in parallel per image', intArg, 6)
          .option('--retry-times <n>', 'retries per image on temporary failures', intArg, 0),
      ),
      'each copied image',
    ),
  )
    .option('--preserve-digests', 'preserve digests of images and lists: copy manifests as they are, skipping --format/compression changes (a list that needs converting fails)')
    .option('-q, --quiet', 'suppress progress output')
    .action(async (src: string, dest: string, opts: Record<string, unknown>) => {
      const m = await import('./tscopy-sync-impl.js');
      process.exitCode = await m.syncCmd(src, dest, opts);
    });
}
