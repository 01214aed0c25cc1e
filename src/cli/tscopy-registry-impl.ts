/** tscopy login / logout / list-tags / delete (loaded lazily by tscopy-registry.ts). */
import { createInterface } from 'node:readline';
import { TsimageError, UsageError } from '../oci/errors.js';
import { formatReference, parseReference } from '../oci/reference.js';
// the registry part of src/copy only (its index also loads the engine, transports and signing): a lean start
import {
  RegistryClient,
  defaultAuthFile,
  loginKey,
  lookupCredentials,
  parseCreds,
  removeCredentials,
  saveCredentials,
  refuseBlockedRegistry,
  type Credentials,
} from '../copy/registry/index.js';
import type { Digest } from '../oci/digest.js';
import { parseDockerName } from '../copy/transports/docker.js';
import { rootController } from './common.js';

export interface RegistryOpts {
  tlsVerify?: boolean | undefined;
  authfile?: string | undefined;
  certDir?: string | undefined;
  /** string from --creds, false from --no-creds */
  creds?: string | boolean | undefined;
  username?: string | undefined;
  password?: string | undefined;
  registryToken?: string | undefined;
  retryTimes?: string | number | undefined;
  /** skopeo's global --registries.d (delete removes the lookaside signatures it names). */
  registriesD?: string | undefined;
}

export interface LoginOpts {
  tlsVerify?: boolean | undefined;
  authfile?: string | undefined;
  certDir?: string | undefined;
  username?: string | undefined;
  password?: string | undefined;
  passwordStdin?: boolean | undefined;
  getLogin?: boolean | undefined;
  verbose?: boolean | undefined;
}

export interface LogoutOpts {
  authfile?: string | undefined;
  all?: boolean | undefined;
}

function credsFrom(o: RegistryOpts): Credentials | undefined {
  const n = [typeof o.creds === 'string', o.username !== undefined || o.password !== undefined, o.creds === false, o.registryToken !== undefined].filter(Boolean).length;
  if (n > 1) throw new UsageError('use only one of --creds, --username/--password, --no-creds and --registry-token');
  if (typeof o.creds === 'string') return parseCreds(o.creds);
  if (o.username !== undefined || o.password !== undefined) {
    if (!o.username || o.password === undefined) throw new UsageError('--username and --password go together');
    return { username: o.username, password: o.password, source: '--username/--password' };
  }
  if (o.creds === false) return {};
  if (o.registryToken) return { registryToken: o.registryToken, source: '--registry-token' };
  return undefined;
}

function clientFor(registry: string, o: RegistryOpts): RegistryClient {
  return new RegistryClient(registry, {
    tlsVerify: o.tlsVerify,
    authfile: o.authfile,
    certDir: o.certDir,
    creds: credsFrom(o),
    retryTimes: o.retryTimes === undefined ? undefined : Number(o.retryTimes),
  });
}

/**
 * The client for list-tags and delete. As skopeo (containers/image newDockerClientFromRef): the registry the name
 * says, never a registries.conf location or mirror (a rewrite applies to copy and inspect only), with the
 * `insecure` and `blocked` of the registries.conf entry that matches the name (the longest prefix).
 */
async function nameClient(ref: { registry: string; repository: string }, shown: string, o: RegistryOpts): Promise<RegistryClient> {
  const entry = await refuseBlockedRegistry(`${ref.registry}/${ref.repository}`, shown);
  return clientFor(ref.registry, { ...o, tlsVerify: o.tlsVerify ?? (entry ? !entry.insecure : undefined) });
}

/** `docker://HOST/REPO` without tag or digest (skopeo list-tags). */
function parseRepo(arg: string): { registry: string; repository: string } {
  const i = arg.indexOf(':');
  const transport = i > 0 ? arg.slice(0, i) : '';
  if (transport !== 'docker' || !arg.slice(i + 1).startsWith('//'))
    throw new UsageError(`${JSON.stringify(arg)}: list-tags needs a docker://HOST/REPO name (transport "docker")`);
  const ref = parseReference(arg.slice(i + 3), { defaultTag: false });
  if (ref.tag || ref.digest) throw new UsageError(`${JSON.stringify(arg)}: list-tags takes a repository, not a tag or digest`);
  return ref;
}

export async function listTagsCmd(arg: string, o: RegistryOpts): Promise<void> {
  const ref = parseRepo(arg);
  const c = await nameClient(ref, arg, o);
  try {
    const tags = await c.listTags(ref.repository, { signal: rootController.signal });
    // skopeo: json.MarshalIndent(..., "", "    ")
    process.stdout.write(JSON.stringify({ Repository: formatReference({ registry: ref.registry, repository: ref.repository }), Tags: tags }, null, 4) + '\n');
  } finally {
    await c.close();
  }
}

export async function deleteCmd(arg: string, o: RegistryOpts): Promise<void> {
  const i = arg.indexOf(':');
  if (i <= 0 || arg.slice(0, i) !== 'docker') throw new UsageError(`${JSON.stringify(arg)}: delete needs a docker://HOST/REPO:TAG or @DIGEST name`);
  const name = parseDockerName(arg.slice(i + 1));
  const c = await nameClient(name.ref, arg, o);
  let digest: Digest;
  try {
    digest = await c.deleteManifest(name.ref.repository, name.ref.digest ?? name.ref.tag ?? 'latest', { signal: rootController.signal });
  } finally {
    await c.close();
  }
  // skopeo (containers/image deleteImage) then removes the manifest's simple signatures from the registries.d
  // lookaside it would write to (signature-1, -2, ... up to the first missing one); an http(s) lookaside fails
  // there, after the delete, with containers/image's message
  const { deleteLookasideOf } = await import('../copy/transports/docker-lookaside.js');
  await deleteLookasideOf(name.ref, o.registriesD, digest);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

async function prompt(question: string, hidden: boolean): Promise<string> {
  if (!process.stdin.isTTY) throw new UsageError(`${question.replace(/: $/, '')} needed: pass it as a flag (no terminal to ask on)`);
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  if (hidden) {
    const out = rl as unknown as { _writeToOutput: (s: string) => void; output: NodeJS.WritableStream };
    out._writeToOutput = (s: string) => {
      if (s.startsWith(question)) process.stderr.write(question);
    };
  }
  try {
    return await new Promise<string>((resolve) => rl.question(question, resolve));
  } finally {
    if (hidden) process.stderr.write('\n');
    rl.close();
  }
}

export async function loginCmd(registry: string, o: LoginOpts): Promise<void> {
  const key = loginKey(registry);
  const slash = key.indexOf('/');
  const host = slash < 0 ? key : key.slice(0, slash);
  const ns = slash < 0 ? undefined : key.slice(slash + 1);
  const authOpts = { authfile: o.authfile };
  if (o.getLogin) {
    if (o.username || o.password || o.passwordStdin) throw new UsageError('--get-login takes no credentials');
    const c = lookupCredentials(host, ns, authOpts);
    if (!c?.username) throw new TsimageError(`not logged into ${key}`);
    process.stdout.write(`${c.username}\n`);
    return;
  }
  if (o.password !== undefined && o.passwordStdin) throw new UsageError('--password and --password-stdin are mutually exclusive');
  if (o.passwordStdin && !o.username) throw new UsageError('--password-stdin needs --username');
  const verify = async (creds: Credentials) => {
    const c = new RegistryClient(host, { tlsVerify: o.tlsVerify, certDir: o.certDir, creds });
    try {
      await c.checkLogin(rootController.signal);
    } catch (e) {
      throw new TsimageError(`authenticating creds for ${JSON.stringify(key)}: ${(e as Error).message}`, { cause: e });
    } finally {
      await c.close();
    }
  };
  if (!o.username && o.password === undefined && !o.passwordStdin) {
    const existing = lookupCredentials(host, ns, authOpts);
    if (existing?.username) {
      await verify(existing);
      process.stdout.write(`Authenticating with existing credentials for ${key}\nExisting credentials are valid. Already logged in to ${key}\n`);
      return;
    }
  }
  const username = o.username ?? (await prompt('Username: ', false));
  if (!username) throw new UsageError('a user name is required (--username)');
  const password = o.passwordStdin ? await readStdin() : (o.password ?? (await prompt('Password: ', true)));
  if (!password) throw new UsageError('a password is required (--password or --password-stdin)');
  await verify({ username, password, source: 'login' });
  const path = await saveCredentials(key, username, password, authOpts);
  if (o.verbose) process.stderr.write(`Used: ${path}\n`);
  process.stdout.write('Login Succeeded!\n');
}

export async function logoutCmd(registry: string | undefined, o: LogoutOpts): Promise<void> {
  if (o.all) {
    if (registry) throw new UsageError('--all takes no registry');
    await removeCredentials(undefined, { authfile: o.authfile, all: true });
    process.stdout.write('Removed login credentials for all registries\n');
    return;
  }
  if (!registry) throw new UsageError('logout needs a registry (or --all)');
  const key = loginKey(registry);
  const removed = await removeCredentials(key, { authfile: o.authfile });
  if (!removed) {
    const host = key.split('/')[0]!;
    const other = lookupCredentials(host, key.includes('/') ? key.slice(key.indexOf('/') + 1) : undefined, {});
    const where = defaultAuthFile({ authfile: o.authfile });
    if (other?.source && !other.source.startsWith(where))
      throw new TsimageError(`not logged into ${key} in ${where}; existing credentials come from ${other.source} (edit that file or use the tool that wrote it)`);
    throw new TsimageError(`not logged into ${key}`);
  }
  process.stdout.write(`Removed login credentials for ${key}\n`);
}
