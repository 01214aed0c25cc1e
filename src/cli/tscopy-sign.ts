/**
 * tscopy's signing commands (generate-key-pair, sign, verify, attach, referrers).
 * Registration only: each action imports its implementation lazily.
 */
import type { Command } from 'commander';

export function registerSignCommands(p: Command): void {
  p.command('generate-key-pair')
    .description('Generate an ECDSA P-256 key pair in cosign\'s format (<prefix>.key encrypted with a password, <prefix>.pub)')
    .option('--output-key-prefix <prefix>', 'write <prefix>.key and <prefix>.pub', 'cosign')
    .option('--password-file <file>', 'read the password from a file (else $COSIGN_PASSWORD, a prompt, or stdin)')
    .option('-f, --force', 'overwrite existing key files')
    .action(async (opts: { outputKeyPrefix: string; passwordFile?: string; force?: boolean }) => {
      const m = await import('./sign-impl.js');
      await m.generateKeyPairCmd(opts);
    });
}
