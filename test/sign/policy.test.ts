/** policy.json: parsing, lookup order, and each rule type accepting and refusing. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  parsePolicy,
  loadPolicy,
  requirementsFor,
  dockerPolicyIdentity,
  dockerNamespaces,
  pathPolicyIdentity,
  evaluatePolicy,
  PolicyRejectedError,
  type PolicySubject,
} from '../../src/copy/policy.js';
import { generateKeyPair, loadPrivateKey, SCRYPT_PARAMS } from '../../src/copy/sign/keys.js';
import { makePayload, signPayload } from '../../src/copy/sign/payload.js';
import { checkIdentity, type SignatureCandidate } from '../../src/copy/sign/verify.js';
import { digestOf, parseReference, type Digest } from '../../src/oci/index.js';
import { tempDir } from '../helpers.js';

const pairA = generateKeyPair('a', { params: SCRYPT_PARAMS.legacy });
const pairB = generateKeyPair('b', { params: SCRYPT_PARAMS.legacy });
const keyA = loadPrivateKey(pairA.privateKey, 'a');
const keyB = loadPrivateKey(pairB.privateKey, 'b');
const DIGEST = digestOf('the image manifest') as Digest;
const OTHER = digestOf('another manifest') as Digest;

function sig(key = keyA, ref = 'reg.example:5000/ns/app', digest = DIGEST, where = 'tag sha256-x.sig layer 0'): SignatureCandidate {
  const payload = makePayload(ref, digest);
  return { payload, signature: signPayload(key, payload), where };
}

function subject(ref: string, sigs: SignatureCandidate[], digest = DIGEST): PolicySubject & { fetched: number } {
  const s = {
    ...dockerPolicyIdentity(parseReference(ref)),
    manifestDigest: digest,
    fetched: 0,
    signatures: async () => {
      s.fetched++;
      return sigs;
    },
  };
  return s;
}

function keyData(pem: string): string {
  return Buffer.from(pem).toString('base64');
}

async function rejects(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof PolicyRejectedError, `expected PolicyRejectedError, got ${String(e)}`);
    assert.match((e as Error).message, re);
    return true;
  });
}

describe('policy.json parsing', () => {
  it('needs default, refuses unknown keys/types and empty lists, naming the path', () => {
    assert.throws(() => parsePolicy('{}', 'p.json'), /p.json: "default" policy is missing/);
    assert.throws(() => parsePolicy('{"default":[]}', 'p.json'), /p.json: default: no requirements/);
    assert.throws(() => parsePolicy('{"default":[{"type":"acceptAll"}]}', 'p.json'), /default\[0\]\.type: unknown policy requirement type "acceptAll"/);
    assert.throws(() => parsePolicy('{"default":[{"type":"reject","x":1}]}', 'p.json'), /default\[0\]: unknown key "x"/);
    assert.throws(() => parsePolicy('{"default":[{"type":"reject"}],"extra":{}}', 'p.json'), /unknown key "extra"/);
    assert.throws(
      () => parsePolicy('{"default":[{"type":"reject"}],"transports":{"docker":{"busybox":[{"type":"reject"}]}}}', 'p.json'),
      /transports.docker\["busybox"\]: docker scope "busybox" must start with a registry host/,
    );
    assert.throws(
      () => parsePolicy('{"default":[{"type":"sigstoreSigned","keyPath":"/a","keyData":"b"}]}', 'p.json'),
      /exactly one of keyPath, keyPaths, keyData/,
    );
    assert.throws(
      () => parsePolicy('{"default":[{"type":"sigstoreSigned","keyPath":"/a","signedIdentity":{"type":"matchSomething"}}]}', 'p.json'),
      /signedIdentity.type: unknown signedIdentity type "matchSomething"/,
    );
    assert.throws(() => parsePolicy('not json', 'p.json'), /p.json: invalid JSON/);
  });

  it('reads a file given with --policy and the system default', async (t) => {
    const dir = tempDir(t, 'sign-policy');
    const f = join(dir, 'policy.json');
    writeFileSync(f, '{"default":[{"type":"reject"}]}');
    const p = await loadPolicy(f);
    assert.equal(p.source, f);
    assert.equal(p.default[0]!.type, 'reject');
    await assert.rejects(loadPolicy(join(dir, 'missing.json')), /reading policy .*missing.json/);
    // the machine's /etc/containers/policy.json (HOME pointed at an empty dir so only the system file counts)
    const oldHome = process.env.HOME;
    process.env.HOME = dir;
    try {
      const sys = await loadPolicy();
      assert.equal(sys.source, '/etc/containers/policy.json');
    } finally {
      process.env.HOME = oldHome;
    }
  });
});

describe('policy lookup order (containers/image requirementsForImageRef)', () => {
  const policy = parsePolicy(
    JSON.stringify({
      default: [{ type: 'reject' }],
      transports: {
        docker: {
          'reg.example:5000/ns/app:v1': [{ type: 'insecureAcceptAnything' }],
          'reg.example:5000/ns/app': [{ type: 'reject' }],
          'reg.example:5000/ns': [{ type: 'insecureAcceptAnything' }],
          '*.example.com': [{ type: 'insecureAcceptAnything' }],
          '': [{ type: 'reject' }],
        },
        oci: { '/srv/images': [{ type: 'insecureAcceptAnything' }] },
      },
    }),
  );
  const sect = (ref: string): string => requirementsFor(policy, dockerPolicyIdentity(parseReference(ref))).section;

  it('exact identity, then repository, then parent namespaces, then wildcard domains, then "", then default', () => {
    assert.equal(sect('reg.example:5000/ns/app:v1'), 'transports.docker["reg.example:5000/ns/app:v1"]');
    assert.equal(sect('reg.example:5000/ns/app:v2'), 'transports.docker["reg.example:5000/ns/app"]');
    assert.equal(sect('reg.example:5000/ns/app'), 'transports.docker["reg.example:5000/ns/app"]');
    assert.equal(sect('reg.example:5000/ns/other/deep:x'), 'transports.docker["reg.example:5000/ns"]');
    assert.equal(sect('a.b.example.com/x:1'), 'transports.docker["*.example.com"]');
    assert.equal(sect('quay.io/x:1'), 'transports.docker[""]');
    assert.equal(requirementsFor(policy, pathPolicyIdentity('oci', '/srv/images/app', 'v1')).section, 'transports.oci["/srv/images"]');
    assert.equal(requirementsFor(policy, pathPolicyIdentity('dir', '/srv/images/app')).section, 'default');
  });

  it('namespaces are containers/image\'s (ports stripped before wildcards)', () => {
    assert.deepEqual(dockerNamespaces('example.com:8443/ns/repo'), ['example.com:8443/ns/repo', 'example.com:8443/ns', 'example.com:8443', '*.com']);
    assert.deepEqual(dockerNamespaces('docker.io/library/busybox'), ['docker.io/library/busybox', 'docker.io/library', 'docker.io', '*.io']);
    assert.equal(dockerPolicyIdentity(parseReference('busybox')).identity, 'docker.io/library/busybox:latest');
    assert.equal(dockerPolicyIdentity(parseReference(`r.io/a@${DIGEST}`)).identity, `r.io/a@${DIGEST}`);
  });
});

describe('policy evaluation: each rule type', () => {
  const ref = 'reg.example:5000/ns/app:v1';

  it('insecureAcceptAnything accepts without looking at signatures; reject refuses naming the rule', async () => {
    const s = subject(ref, []);
    const d = await evaluatePolicy(parsePolicy('{"default":[{"type":"insecureAcceptAnything"}]}', 'pol.json'), s);
    assert.equal(d.section, 'default');
    assert.equal(s.fetched, 0);
    await rejects(
      evaluatePolicy(parsePolicy('{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker":{"reg.example:5000/ns":[{"type":"reject"}]}}}', 'pol.json'), s),
      /Source image docker:reg.example:5000\/ns\/app:v1 rejected by policy pol.json transports.docker\["reg.example:5000\/ns"\]\[0\] \(reject\)/,
    );
  });

  it('sigstoreSigned (keyData) accepts a good signature and refuses unsigned, wrong key, other digest', async () => {
    const pol = parsePolicy(JSON.stringify({ default: [{ type: 'sigstoreSigned', keyData: keyData(pairA.publicKey), signedIdentity: { type: 'matchRepository' } }] }), 'pol.json');
    const ok = await evaluatePolicy(pol, subject(ref, [sig()]));
    assert.match(ok.accepted[0]!, /signature in tag sha256-x.sig layer 0 by key 1/);
    await rejects(evaluatePolicy(pol, subject(ref, [])), /default\[0\] \(sigstoreSigned\): A signature was required, but no signature exists/);
    await rejects(evaluatePolicy(pol, subject(ref, [sig(keyB)])), /\(sigstoreSigned\): no valid signature among 1: .*cryptographic signature verification failed/);
    await rejects(evaluatePolicy(pol, subject(ref, [sig(keyA, undefined, OTHER)])), new RegExp(`signature is for manifest ${OTHER}, not for this image's ${DIGEST}`));
    // one good signature among bad ones is enough
    await evaluatePolicy(pol, subject(ref, [sig(keyB), sig(keyA, undefined, OTHER), sig()]));
    // a tampered payload (same signature) fails
    const good = sig();
    const tampered = { ...good, payload: Buffer.from(good.payload.toString().replace('ns/app', 'ns/apq')) };
    await rejects(evaluatePolicy(pol, subject(ref, [tampered])), /cryptographic signature verification failed/);
  });

  it('sigstoreSigned keyPath / keyPaths read keys from files', async (t) => {
    const dir = tempDir(t, 'sign-policy');
    writeFileSync(join(dir, 'a.pub'), pairA.publicKey);
    writeFileSync(join(dir, 'b.pub'), pairB.publicKey);
    const one = parsePolicy(JSON.stringify({ default: [{ type: 'sigstoreSigned', keyPath: join(dir, 'b.pub'), signedIdentity: { type: 'matchRepository' } }] }));
    await rejects(evaluatePolicy(one, subject(ref, [sig(keyA)])), /signature verification failed/);
    const two = parsePolicy(JSON.stringify({ default: [{ type: 'sigstoreSigned', keyPaths: [join(dir, 'b.pub'), join(dir, 'a.pub')], signedIdentity: { type: 'matchRepository' } }] }));
    const d = await evaluatePolicy(two, subject(ref, [sig(keyA)]));
    assert.match(d.accepted[0]!, /by key 2/);
    const missing = parsePolicy(JSON.stringify({ default: [{ type: 'sigstoreSigned', keyPath: join(dir, 'nope.pub') }] }));
    await rejects(evaluatePolicy(missing, subject(ref, [sig(keyA)])), /reading public key: .*nope.pub/);
  });

  it('signedIdentity: matchRepoDigestOrExact (default), matchExact, matchRepository, exactReference, exactRepository, remapIdentity', async () => {
    const pol = (identity?: object): ReturnType<typeof parsePolicy> =>
      parsePolicy(JSON.stringify({ default: [{ type: 'sigstoreSigned', keyData: keyData(pairA.publicKey), ...(identity ? { signedIdentity: identity } : {}) }] }), 'pol.json');
    // default matchRepoDigestOrExact: tag refs need the exact tag signed
    await evaluatePolicy(pol(), subject(ref, [sig(keyA, 'reg.example:5000/ns/app:v1')]));
    await rejects(evaluatePolicy(pol(), subject(ref, [sig(keyA, 'reg.example:5000/ns/app:v2')])), /does not match reg.example:5000\/ns\/app:v1 \(matchRepoDigestOrExact\)/);
    await rejects(evaluatePolicy(pol(), subject(ref, [sig(keyA, 'reg.example:5000/ns/app')])), /matchRepoDigestOrExact/);
    // ...digest refs need only the repository
    await evaluatePolicy(pol(), subject(`reg.example:5000/ns/app@${DIGEST}`, [sig(keyA, 'reg.example:5000/ns/app:anything')]));
    // matchExact
    await evaluatePolicy(pol({ type: 'matchExact' }), subject(ref, [sig(keyA, 'reg.example:5000/ns/app:v1')]));
    await rejects(evaluatePolicy(pol({ type: 'matchExact' }), subject(ref, [sig(keyA, 'reg.example:5000/ns/app')])), /\(matchExact\)/);
    // matchRepository
    await evaluatePolicy(pol({ type: 'matchRepository' }), subject(ref, [sig(keyA, 'reg.example:5000/ns/app:v9')]));
    await rejects(evaluatePolicy(pol({ type: 'matchRepository' }), subject(ref, [sig(keyA, 'reg.example:5000/ns/other')])), /does not match reg.example:5000\/ns\/app \(matchRepository\)/);
    // exactReference / exactRepository
    await evaluatePolicy(pol({ type: 'exactReference', dockerReference: 'prod.example/app:1.0' }), subject(ref, [sig(keyA, 'prod.example/app:1.0')]));
    await rejects(evaluatePolicy(pol({ type: 'exactReference', dockerReference: 'prod.example/app:1.0' }), subject(ref, [sig(keyA, 'prod.example/app:1.1')])), /\(exactReference\)/);
    await evaluatePolicy(pol({ type: 'exactRepository', dockerRepository: 'prod.example/app' }), subject(ref, [sig(keyA, 'prod.example/app')]));
    await rejects(evaluatePolicy(pol({ type: 'exactRepository', dockerRepository: 'prod.example/app' }), subject(ref, [sig(keyA, 'prod.example/other')])), /\(exactRepository\)/);
    // remapIdentity: a mirror accepts signatures made for the original location
    const remap = { type: 'remapIdentity', prefix: 'reg.example:5000/ns', signedPrefix: 'upstream.example/ns' };
    await evaluatePolicy(pol(remap), subject(ref, [sig(keyA, 'upstream.example/ns/app:v1')]));
    await rejects(evaluatePolicy(pol(remap), subject(ref, [sig(keyA, 'reg.example:5000/ns/app:v1')])), /remapped from reg.example:5000\/ns\/app:v1\) \(remapIdentity\)/);
    // a prefix that only matches part of a path component does not remap
    assert.match(checkIdentity({ type: 'remapIdentity', prefix: 'reg.example:5000/n', signedPrefix: 'upstream.example/n' }, parseReference(ref), 'upstream.example/ns/app:v1')!, /remapIdentity/);
  });

  it('signedBy without simple signatures, signedBy X509, and sigstoreSigned with fulcio refuse saying why', async () => {
    // (GPG signatures themselves: test/copy/gpg.test.ts)
    const gpg = parsePolicy('{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k.gpg"}]}', 'pol.json');
    await rejects(evaluatePolicy(gpg, subject(ref, [sig()])), /\(signedBy\): A signature was required, but no signature exists/);
    const x509 = parsePolicy('{"default":[{"type":"signedBy","keyType":"X509Certificates","keyPath":"/k.pem"}]}', 'pol.json');
    await rejects(evaluatePolicy(x509, subject(ref, [sig()])), /Unimplemented "keyType" value "X509Certificates"/);
    const fulcio = parsePolicy('{"default":[{"type":"sigstoreSigned","fulcio":{"caPath":"/x"}}]}', 'pol.json');
    await rejects(evaluatePolicy(fulcio, subject(ref, [sig()])), /fulcio\/pki certificates is not supported/);
  });

  it('every requirement of the list must accept', async () => {
    const pol = parsePolicy(
      JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }, { type: 'sigstoreSigned', keyData: keyData(pairB.publicKey), signedIdentity: { type: 'matchRepository' } }] }),
      'pol.json',
    );
    await rejects(evaluatePolicy(pol, subject(ref, [sig(keyA)])), /default\[1\] \(sigstoreSigned\)/);
    const d = await evaluatePolicy(pol, subject(ref, [sig(keyB)]));
    assert.equal(d.accepted.length, 2);
  });
});
