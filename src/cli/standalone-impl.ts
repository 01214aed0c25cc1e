/**
 * `tscopy standalone-sign` / `standalone-verify` / `manifest-digest`: skopeo's debugging commands for "simple
 * signing" signatures made from local files (loaded lazily by tscopy-sign.ts). Same arguments, output and error
 * texts as skopeo 1.9.3; standalone-verify also takes newer skopeo's comma-separated fingerprints, "any" and
 * --public-key-file. Manifest digests are containers/image's (manifestDigest: a signed schema 1 manifest's digest
 * leaves its signatures out).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { manifestDigest } from '../oci/manifest.js';
import { TsimageError, UsageError } from '../oci/errors.js';
import { gpgSign, gpgVerify, withEphemeralKeyring, type GpgVerified } from '../copy/sign/gpg.js';
import { makeSimplePayload, verifySimpleSignature } from '../copy/sign/simple.js';
import { normalizedNamed } from '../copy/sign/verify.js';
import { rootController, VERSION } from './common.js';

function refString(s: string): string {
  const r = normalizedNamed(s);
  return `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
}

/** A file's bytes, or a TsimageError starting with skopeo's words for that file (`what`). */
async function readOrSay(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    throw new TsimageError(`${what}: ${(e as Error).message}`);
  }
}

export async function standaloneSignCmd(args: string[], o: { output?: string | undefined; passphraseFile?: string | undefined }): Promise<void> {
  if (args.length !== 3 || !o.output) throw new UsageError('Usage: tscopy standalone-sign manifest docker-reference key-fingerprint -o signature');
  const [manifestPath, dockerReference, fingerprint] = args as [string, string, string];
  const manifest = await readOrSay(manifestPath, `Error reading ${manifestPath}`);
  let sig: Buffer;
  try {
    // the reference as given (skopeo does not normalize it here)
    const payload = makeSimplePayload(dockerReference, manifestDigest(manifest), { creator: `tscopy ${VERSION}`, timestamp: Math.floor(Date.now() / 1000) });
    sig = await gpgSign(payload, fingerprint, { passphraseFile: o.passphraseFile, signal: rootController.signal });
  } catch (e) {
    throw new TsimageError(`Error creating signature: ${(e as Error).message.replace(/^creating signature: /, '')}`, { cause: e });
  }
  try {
    await writeFile(o.output, sig, { mode: 0o644 });
  } catch (e) {
    throw new TsimageError(`Error writing signature to ${o.output}: ${(e as Error).message}`);
  }
}

export async function standaloneVerifyCmd(args: string[], o: { publicKeyFile?: string | undefined }): Promise<void> {
  if (args.length !== 4) throw new UsageError('Usage: tscopy standalone-verify manifest docker-reference key-fingerprint signature');
  const [manifestPath, expectedReference, fingerprints, signaturePath] = args as [string, string, string, string];
  const list = fingerprints.split(',').map((f) => f.trim());
  const any = fingerprints === 'any';
  if (any && !o.publicKeyFile) throw new UsageError('Cannot use any fingerprint without a public key file');
  if (list.some((f) => f === '')) throw new UsageError(`invalid key fingerprints ${JSON.stringify(fingerprints)}`);
  const manifest = await readOrSay(manifestPath, `Error reading manifest from ${manifestPath}`);
  const signature = await readOrSay(signaturePath, `Error reading signature from ${signaturePath}`);
  let expected: string;
  try {
    expected = refString(expectedReference);
  } catch (e) {
    throw new UsageError(`Error verifying signature: ${(e as Error).message}`);
  }
  const signedDigest = manifestDigest(manifest);
  const verify = async (check: (sig: Buffer) => Promise<GpgVerified>, trusted: string[] | undefined) => {
    const norm = (f: string) => f.toUpperCase();
    return verifySimpleSignature(signature, {
      verify: check,
      key: (v) => {
        const ok = (f: string) => (trusted ? trusted.includes(norm(f)) : list.map(norm).includes(norm(f)));
        if (ok(v.fingerprint) || ok(v.primaryFingerprint)) return undefined;
        if (trusted) return `Signature by ${v.fingerprint} is not among the keys in ${o.publicKeyFile}`;
        return list.length === 1
          ? `Signature by ${v.fingerprint} does not match expected fingerprint ${fingerprints}`
          : `Signature by ${v.fingerprint} does not match expected fingerprints [${list.join(' ')}]`;
      },
      digest: (d) => (d === signedDigest ? undefined : `Signature for docker digest ${JSON.stringify(d)} does not match`),
      identity: (ref) => {
        let signed: string;
        try {
          signed = refString(ref);
        } catch {
          return `Invalid docker reference ${ref} in signature`;
        }
        return signed === expected ? undefined : `Docker reference ${ref} does not match ${expectedReference}`;
      },
    });
  };
  let fpr: string;
  let digest: string;
  try {
    if (o.publicKeyFile) {
      let key: Buffer;
      try {
        key = await readFile(o.publicKeyFile);
      } catch (e) {
        throw new TsimageError(`reading public key file ${o.publicKeyFile}: ${(e as Error).message}`);
      }
      const r = await withEphemeralKeyring([key], [`public key file ${o.publicKeyFile}`], async (kr) => {
        if (kr.fingerprints.length === 0) throw new TsimageError(`No public keys imported from ${o.publicKeyFile}`);
        if (!any) {
          const missing = list.filter((f) => !kr.fingerprints.some((k) => k.toUpperCase() === f.toUpperCase()));
          if (missing.length) throw new TsimageError(`Key(s) ${missing.join(', ')} not found in ${o.publicKeyFile}`);
        }
        return verify((s) => kr.verify(s, rootController.signal), any ? kr.fingerprints.map((f) => f.toUpperCase()) : undefined);
      }, rootController.signal);
      fpr = r.fingerprint;
      digest = r.payload.digest;
    } else {
      const r = await verify((s) => gpgVerify(s, { signal: rootController.signal }), undefined);
      fpr = r.fingerprint;
      digest = r.payload.digest;
    }
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new TsimageError(`Error verifying signature: ${(e as Error).message}`, { cause: e });
  }
  // skopeo 1.9.3's line for one fingerprint; newer skopeo's for a list / any
  if (list.length === 1 && !any && !o.publicKeyFile) process.stdout.write(`Signature verified, digest ${digest}\n`);
  else process.stdout.write(`Signature verified using fingerprint ${fpr}, digest ${digest}\n`);
}

/** `tscopy manifest-digest MANIFEST`: print the manifest's digest (skopeo manifest-digest). */
export async function manifestDigestCmd(args: string[]): Promise<void> {
  if (args.length !== 1) throw new UsageError('Usage: tscopy manifest-digest manifest');
  const path = args[0]!;
  const manifest = await readOrSay(path, `Error reading manifest from ${path}`);
  let digest: string;
  try {
    digest = manifestDigest(manifest);
  } catch (e) {
    throw new TsimageError(`Error computing digest: ${(e as Error).message}`, { cause: e });
  }
  process.stdout.write(`${digest}\n`);
}
