/**
 * tscopy's signing commands (generate-key-pair, sign, verify, attach, referrers).
 * Registration only: each action imports its implementation lazily.
 */
import { Command, Option } from 'commander';

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

/** skopeo's registry flags for the image argument. */
function registryFlags(c: Command): Command {
  return c
    .option('--tls-verify [bool]', 'require HTTPS and verify certificates (default: registries.conf, else true)', (v: string) => v !== 'false')
    .option('--creds <user:password>', 'registry credentials')
    .option('--registry-token <token>', 'bearer token for the registry')
    .option('--authfile <path>', 'auth.json with registry credentials')
    .option('--cert-dir <dir>', 'directory with certificates (*.crt, *.cert, *.key) for the registry');
}

export function registerSignCommands(p: Command): void {
  // skopeo's global trust-policy flags (`skopeo --insecure-policy copy ...`): handed to the command being run
  p.option('--policy <file>', 'trust policy file for copy/sync (default $HOME/.config/containers/policy.json, then /etc/containers/policy.json)')
    .option('--insecure-policy', 'run copy/sync without any policy check')
    .option('--registries.d <dir>', 'registries.d directory: where simple (GPG) signatures are stored (default $HOME/.config/containers/registries.d, then /etc/containers/registries.d)')
    .hook('preAction', (root, action) => {
      const g = root.opts() as { policy?: string; insecurePolicy?: boolean; 'registries.d'?: string };
      if (action === root) return;
      if (g['registries.d'] !== undefined) action.setOptionValue('registriesD', g['registries.d']);
      if (g.policy !== undefined && action.getOptionValue('policy') === undefined) action.setOptionValue('policy', g.policy);
      if (g.insecurePolicy && action.getOptionValue('insecurePolicy') === undefined) action.setOptionValue('insecurePolicy', true);
    });
  p.command('generate-key-pair')
    .description('Generate an ECDSA P-256 key pair in cosign\'s format (<prefix>.key encrypted with a password, <prefix>.pub)')
    .option('--output-key-prefix <prefix>', 'write <prefix>.key and <prefix>.pub', 'cosign')
    .option('--password-file <file>', 'read the password from a file (else $COSIGN_PASSWORD, a prompt, or stdin)')
    .option('-f, --force', 'overwrite existing key files')
    .action(async (opts: { outputKeyPrefix: string; passwordFile?: string; force?: boolean }) => {
      const m = await import('./sign-impl.js');
      await m.generateKeyPairCmd(opts);
    });

  registryFlags(
    p
      .command('sign')
      .description('Sign an image (cosign format): a signature layer in the sha256-<digest>.sig tag, optionally an OCI 1.1 referrer')
      .argument('<image>', 'docker://HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]')
      .requiredOption('--key <file>', 'private key (cosign encrypted, or PKCS#8/SEC1 PEM as openssl writes)')
      .option('--password-file <file>', 'key password from a file (else $COSIGN_PASSWORD, a prompt, or stdin)')
      .option('--referrer', 'also store the signature as an OCI 1.1 referrer (subject = the image)')
      .option('--no-tag-storage', 'do not write the .sig tag (with --referrer: referrer only)')
      .option('-a, --annotation <key=value>', 'extra payload annotation (repeatable)', collect)
      .option('--identity <ref>', 'docker reference to sign for (default: the image\'s reference)')
      .option('-r, --recursive', 'for a manifest list, also sign every instance')
      .option('-q, --quiet', 'no report on stderr'),
  ).action(async (image: string, opts: import('./sign-impl.js').SignCmdOpts) => {
    const m = await import('./sign-impl.js');
    if (opts.referrer === undefined && opts.tagStorage === false) throw new (await import('../oci/errors.js')).UsageError('--no-tag-storage needs --referrer');
    await m.signCmd(image, opts);
  });

  registryFlags(
    p
      .command('verify')
      .description('Verify an image\'s cosign signatures (.sig tag and referrers): signature, manifest digest and identity; exit 0 when one is valid')
      .argument('<image>', 'docker://HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]')
      .requiredOption('--key <file>', 'public key PEM (repeatable: any may verify)', collect)
      .option('--identity <ref>', 'the signed identity to expect (repository[:tag]) instead of the image\'s own reference (mirrors)')
      .addOption(new Option('--format <format>', 'report format').choices(['text', 'json']).default('text')),
  ).action(async (image: string, opts: import('./sign-impl.js').VerifyCmdOpts) => {
    const m = await import('./sign-impl.js');
    const code = await m.verifyCmd(image, opts);
    if (code !== 0) throw new (await import('../oci/errors.js')).TsimageError(`${image}: no valid signature`);
  });

  registryFlags(
    p
      .command('attach')
      .description('Attach a file (SBOM, attestation, ...) to an image as an OCI 1.1 artifact with subject (tag fallback on registries without the referrers API)')
      .argument('<file>', 'the file to attach')
      .argument('<image>', 'docker://HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]')
      .requiredOption('--artifact-type <type>', 'artifactType of the manifest (e.g. application/spdx+json)')
      .option('--media-type <type>', 'media type of the file\'s layer', 'application/octet-stream')
      .option('--annotation <key=value>', 'manifest annotation (repeatable)', collect)
      .option('-q, --quiet', 'print only the artifact\'s digest'),
  ).action(async (file: string, image: string, opts: import('./sign-impl.js').AttachCmdOpts) => {
    const m = await import('./sign-impl.js');
    await m.attachCmd(file, image, opts);
  });

  registryFlags(
    p
      .command('referrers')
      .description('List the referrers of an image (referrers API, or the sha256-<hex> tag fallback)')
      .argument('<image>', 'docker://HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]')
      .option('--artifact-type <type>', 'only referrers of this artifactType')
      .addOption(new Option('--format <format>', 'output format').choices(['text', 'json']).default('text')),
  ).action(async (image: string, opts: import('./sign-impl.js').ReferrersCmdOpts) => {
    const m = await import('./sign-impl.js');
    await m.referrersCmd(image, opts);
  });

  // skopeo's "simple signing" debugging commands (GPG, local files)
  p.command('standalone-sign')
    .description('Create a simple signing (GPG) signature of a manifest file for DOCKER-REFERENCE with KEY-FINGERPRINT (skopeo standalone-sign)')
    .usage('[options] MANIFEST DOCKER-REFERENCE KEY-FINGERPRINT --output|-o SIGNATURE')
    .argument('[manifest]', 'the image manifest file')
    .argument('[docker-reference]', 'the docker reference to identify the image with (used as given)')
    .argument('[key-fingerprint]', 'the GPG key to sign with (in $GNUPGHOME or ~/.gnupg)')
    .allowExcessArguments(true)
    .option('-o, --output <signature>', 'write the signature to this file')
    .option('--passphrase-file <file>', 'the key\'s passphrase (first line; loopback pinentry)')
    .action(async (_m: string, _r: string, _f: string, opts: { output?: string; passphraseFile?: string }, cmd: Command) => {
      const m = await import('./standalone-impl.js');
      await m.standaloneSignCmd(cmd.args, opts);
    });
  p.command('standalone-verify')
    .description('Verify a simple signing (GPG) signature of a manifest file and print the signed digest (skopeo standalone-verify)')
    .usage('[options] MANIFEST DOCKER-REFERENCE KEY-FINGERPRINTS SIGNATURE')
    .argument('[manifest]', 'the image manifest file')
    .argument('[docker-reference]', 'the docker reference the signature must be for')
    .argument('[key-fingerprints]', 'the trusted signing key(s), comma separated, or "any" with --public-key-file')
    .argument('[signature]', 'the signature file')
    .allowExcessArguments(true)
    .option('--public-key-file <file>', 'verify with the keys in this file only (default: the keys in $GNUPGHOME or ~/.gnupg)')
    .action(async (_m: string, _r: string, _f: string, _s: string, opts: { publicKeyFile?: string }, cmd: Command) => {
      const m = await import('./standalone-impl.js');
      await m.standaloneVerifyCmd(cmd.args, opts);
    });
  p.command('manifest-digest')
    .description('Compute the digest of a manifest file (skopeo manifest-digest; a signed schema 1 manifest without its signatures)')
    .usage('MANIFEST-FILE')
    .argument('[manifest]', 'the manifest file')
    .allowExcessArguments(true)
    .action(async (_m: string, _opts: unknown, cmd: Command) => {
      const m = await import('./standalone-impl.js');
      await m.manifestDigestCmd(cmd.args);
    });
}
