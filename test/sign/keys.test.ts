/**
 * cosign key format and signatures, checked against fixed vectors from the published
 * format and against openssl as an independent implementation.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { writeFileSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import nacl from 'tweetnacl';
import {
  decryptEnvelope,
  encryptEnvelope,
  generateKeyPair,
  loadPrivateKey,
  loadPublicKey,
  decodePem,
  SCRYPT_PARAMS,
  SIGSTORE_PRIVATE_KEY_PEM,
  KeyDecryptError,
} from '../../src/copy/sign/keys.js';
import { makePayload, parsePayload, signPayload, verifyPayloadSignature, SignatureError } from '../../src/copy/sign/payload.js';
import { digestOf, type Digest } from '../../src/oci/index.js';
import { requireTool, sh, tempDir } from '../helpers.js';

/**
 * Vectors from secure-systems-lab/go-securesystemslib encrypted/encrypted_test.go (the package
 * cosign encrypts its keys with): "supersecret" decrypts them to "reallyimportant" (TestDecrypt)
 * and to the JSON encoding of that byte string, `"cmVhbGx5aW1wb3J0YW50"` (kdfVectors).
 */
const SSL_DECRYPT_VECTOR =
  '{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"N9a7x5JFGbrtB2uBR81jPwp0eiLR4A7FV3mjVAQrg1g="},"cipher":{"name":"nacl/secretbox","nonce":"2h8HxMmgRfuYdpswZBQaU3xJ1nkA/5Ik"},"ciphertext":"SEW6sUh0jf2wfdjJGPNS9+bkk2uB+Cxamf32zR8XkQ=="}';
const SSL_STANDARD_VECTOR =
  '{"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"FhzPOt9/bJG4PTq6lQ6ecG6GzaOuOy/ynG5+yRiFlNs="},"cipher":{"name":"nacl/secretbox","nonce":"aw1ng1jHaDz/tQ7V2gR9O2+IGQ8xJEuE"},"ciphertext":"HycvuLZL4sYH0BrYTh4E/H20VtAW6u5zL5Pr+IBjYLYnCPzDkq8="}';
const SSL_UNSUPPORTED_VECTOR =
  '{"kdf":{"name":"scrypt","params":{"N":99,"r":99,"p":99},"salt":"cZFcQJdwPhPyhU1R4qkl0qVOIjZd4V/7LYYAavq166k="},"cipher":{"name":"nacl/secretbox","nonce":"7vhRS7j0hEPBWV05skAdgLj81AkGeE7U"},"ciphertext":"6WYU/YSXVbYzl/NzaeAzmjLyfFhOOjLc0d8/GFV0aBFdJvyCcXc="}';

/**
 * A key written by `cosign generate-key-pair` with an empty password (published as a test key
 * in conforma/cli's VSA signing test, COSIGN_PASSWORD=""): N=65536, PEM type ENCRYPTED SIGSTORE PRIVATE KEY.
 */
const COSIGN_GENERATED_KEY = `-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjo2NTUzNiwiciI6
OCwicCI6MX0sInNhbHQiOiJLYU9OQzduQVJLOVgxM1FoaWFucjAwTTBGYys2Sitr
dnAxN1FuanpiVk9nPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJVOHZqWWtqMlZOUFZGdlZFZWZ3bXZ5VGloUERrelBoaCJ9LCJj
aXBoZXJ0ZXh0IjoidWNWMnQ4TTZVNFJvb29FOXc0d3dkc3E1RDYrS2RKY245dERT
KzFwRDRGN040SVJOWEgzSTBua3h1a3NackFOUHR1emIvTkVYQ201dUp3Zjh3Qzl1
VlprbXdwNU5jRUZ6b3ZNS3JCZmNvdXdjaEkrMzkrQ0NhbVZPbzBucmRnZjhvcmpK
dXdrWDBYL1phY0RUTERGaUxyc1laMWVMMmlqMGU1MVRpZmVQNTl4WXNPK1FnM1Jv
OURRVjNQMk9ndDFDaVFHeGg1VXhUZytGc3c9PSJ9
-----END ENCRYPTED SIGSTORE PRIVATE KEY-----
`;

/** scrypt computed by openssl (an independent implementation of the KDF step). */
function opensslScrypt(password: string, salt: Buffer, p: { N: number; r: number; p: number }): Buffer {
  const out = sh('openssl', [
    'kdf',
    '-keylen',
    '32',
    '-kdfopt',
    `pass:${password}`,
    '-kdfopt',
    `hexsalt:${salt.toString('hex')}`,
    '-kdfopt',
    `n:${p.N}`,
    '-kdfopt',
    `r:${p.r}`,
    '-kdfopt',
    `p:${p.p}`,
    'SCRYPT',
  ]);
  return Buffer.from(out.trim().replace(/:/g, ''), 'hex');
}

describe('cosign encrypted key envelope', () => {
  it('decrypts the published go-securesystemslib vectors', () => {
    assert.equal(decryptEnvelope(SSL_DECRYPT_VECTOR, 'supersecret').toString(), 'reallyimportant');
    assert.equal(decryptEnvelope(SSL_STANDARD_VECTOR, 'supersecret').toString(), JSON.stringify(Buffer.from('reallyimportant').toString('base64')));
  });

  it('encrypts to the published vector byte for byte (same password, salt, nonce: the same envelope go-securesystemslib wrote)', () => {
    const v = JSON.parse(SSL_DECRYPT_VECTOR) as { kdf: { salt: string }; cipher: { nonce: string } };
    const ours = encryptEnvelope(Buffer.from('reallyimportant'), 'supersecret', {
      params: SCRYPT_PARAMS.legacy,
      salt: Buffer.from(v.kdf.salt, 'base64'),
      nonce: Buffer.from(v.cipher.nonce, 'base64'),
    });
    assert.equal(ours.toString(), SSL_DECRYPT_VECTOR);
    const w = JSON.parse(SSL_STANDARD_VECTOR) as { kdf: { salt: string }; cipher: { nonce: string } };
    const ours2 = encryptEnvelope(Buffer.from(JSON.stringify(Buffer.from('reallyimportant').toString('base64'))), 'supersecret', {
      params: SCRYPT_PARAMS.standard,
      salt: Buffer.from(w.kdf.salt, 'base64'),
      nonce: Buffer.from(w.cipher.nonce, 'base64'),
    });
    assert.equal(ours2.toString(), SSL_STANDARD_VECTOR);
  });

  it('refuses unsupported scrypt parameters, a wrong password and a tampered ciphertext', () => {
    assert.throws(() => decryptEnvelope(SSL_UNSUPPORTED_VECTOR, 'supersecret'), /unsupported scrypt parameters/);
    assert.throws(() => decryptEnvelope(SSL_DECRYPT_VECTOR, 'supersecreT'), (e: unknown) => e instanceof KeyDecryptError && /wrong password/.test((e as Error).message));
    const env = JSON.parse(SSL_DECRYPT_VECTOR) as { ciphertext: string };
    const ct = Buffer.from(env.ciphertext, 'base64');
    ct[0] = ct[0]! ^ 0xff;
    env.ciphertext = ct.toString('base64');
    assert.throws(() => decryptEnvelope(JSON.stringify(env), 'supersecret'), /decrypting the private key failed/);
  });

  it('decrypts a key written by cosign generate-key-pair and signs with it (openssl verifies)', (t) => {
    requireTool('openssl');
    const key = loadPrivateKey(COSIGN_GENERATED_KEY, '');
    assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    const dir = tempDir(t, 'sign-keys');
    const payload = makePayload('registry.example/app', digestOf('manifest') as Digest);
    writeFileSync(join(dir, 'payload.json'), payload);
    writeFileSync(join(dir, 'payload.sig'), Buffer.from(signPayload(key, payload), 'base64'));
    writeFileSync(join(dir, 'key.pub'), createPublicKey(key).export({ format: 'pem', type: 'spki' }));
    const out = sh('openssl', ['dgst', '-sha256', '-verify', join(dir, 'key.pub'), '-signature', join(dir, 'payload.sig'), join(dir, 'payload.json')]);
    assert.match(out, /Verified OK/);
  });

  it('writes envelopes that decrypt per the format with an independent scrypt (openssl) and NaCl secretbox', () => {
    requireTool('openssl');
    const plaintext = Buffer.from('the quick brown fox');
    const env = JSON.parse(encryptEnvelope(plaintext, 'pässword', { params: SCRYPT_PARAMS.legacy }).toString()) as {
      kdf: { name: string; params: { N: number; r: number; p: number }; salt: string };
      cipher: { name: string; nonce: string };
      ciphertext: string;
    };
    // field names, order and values as go-securesystemslib writes them
    assert.deepEqual(Object.keys(env), ['kdf', 'cipher', 'ciphertext']);
    assert.deepEqual(Object.keys(env.kdf.params), ['N', 'r', 'p']);
    assert.equal(env.kdf.name, 'scrypt');
    assert.equal(env.cipher.name, 'nacl/secretbox');
    const salt = Buffer.from(env.kdf.salt, 'base64');
    const nonce = Buffer.from(env.cipher.nonce, 'base64');
    assert.equal(salt.length, 32);
    assert.equal(nonce.length, 24);
    const key = opensslScrypt('pässword', salt, env.kdf.params);
    const opened = nacl.secretbox.open(Buffer.from(env.ciphertext, 'base64'), nonce, key);
    assert.ok(opened, 'secretbox.open with the openssl-derived key failed');
    assert.equal(Buffer.from(opened).toString(), 'the quick brown fox');
  });

  it('generate-key-pair: SIGSTORE PEM whose PKCS#8 key matches the public key (checked by openssl)', (t) => {
    requireTool('openssl');
    const dir = tempDir(t, 'sign-keys');
    const pair = generateKeyPair('pw');
    const block = decodePem(pair.privateKey);
    assert.equal(block.type, SIGSTORE_PRIVATE_KEY_PEM);
    const env = JSON.parse(block.bytes.toString()) as { kdf: { params: { N: number }; salt: string }; cipher: { nonce: string }; ciphertext: string };
    assert.equal(env.kdf.params.N, 65536);
    const key = opensslScrypt('pw', Buffer.from(env.kdf.salt, 'base64'), { N: 65536, r: 8, p: 1 });
    const der = nacl.secretbox.open(Buffer.from(env.ciphertext, 'base64'), Buffer.from(env.cipher.nonce, 'base64'), key);
    assert.ok(der);
    writeFileSync(join(dir, 'key.der'), der);
    const pubFromOpenssl = sh('openssl', ['pkey', '-inform', 'DER', '-in', join(dir, 'key.der'), '-pubout']);
    assert.equal(pubFromOpenssl, pair.publicKey);
    // and the loaders agree
    const priv = loadPrivateKey(pair.privateKey, 'pw');
    assert.equal(createPublicKey(priv).export({ format: 'pem', type: 'spki' }), pair.publicKey);
    assert.throws(() => loadPrivateKey(pair.privateKey, 'wrong'), /wrong password/);
    assert.throws(() => loadPrivateKey(pair.privateKey), /password is needed/);
  });

  it('reads the older ENCRYPTED COSIGN PRIVATE KEY type', () => {
    const pair = generateKeyPair('x', { params: SCRYPT_PARAMS.legacy });
    const old = pair.privateKey.replaceAll('SIGSTORE', 'COSIGN');
    assert.ok(old.includes('BEGIN ENCRYPTED COSIGN PRIVATE KEY'));
    const k = loadPrivateKey(old, 'x');
    assert.equal(createPublicKey(k).export({ format: 'pem', type: 'spki' }), pair.publicKey);
  });

  it('rejects keys that are not ECDSA P-256', () => {
    const rsa = createPrivateKey(sh('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024']));
    assert.throws(() => loadPublicKey(createPublicKey(rsa).export({ format: 'pem', type: 'spki' }).toString()), /only ECDSA P-256/);
    assert.throws(() => loadPublicKey('hello'), /no PEM block/);
  });
});

describe('simple-signing payload and signatures', () => {
  const digest = digestOf('{"schemaVersion":2}') as Digest;

  it('payload bytes are cosign\'s (Go encoding/json field order, optional null)', () => {
    const p = makePayload('127.0.0.1:5000/ns/app', digest);
    assert.equal(
      p.toString(),
      `{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/ns/app"},"image":{"docker-manifest-digest":"${digest}"},"type":"cosign container image signature"},"optional":null}`,
    );
    const q = makePayload('r/a', digest, { z: 'last', a: '<&>' });
    assert.match(q.toString(), /"optional":\{"a":"\\u003c\\u0026\\u003e","z":"last"\}\}$/);
    assert.deepEqual(parsePayload(q).optional, { a: '<&>', z: 'last' });
    assert.equal(parsePayload(p).dockerReference, '127.0.0.1:5000/ns/app');
    assert.equal(parsePayload(p).digest, digest);
  });

  it('strict parsing names the problem', () => {
    assert.throws(() => parsePayload(Buffer.from('{"critical":{},"optional":null}')), /missing field critical.identity/);
    const bad = makePayload('r/a', digest).toString().replace('cosign container image signature', 'atomic container signature');
    assert.throws(() => parsePayload(Buffer.from(bad)), /unrecognized signature type/);
    const extra = makePayload('r/a', digest).toString().replace('"type"', '"extra":1,"type"');
    assert.throws(() => parsePayload(Buffer.from(extra)), /unexpected field critical.extra/);
  });

  it('openssl verifies our signature over the exact payload bytes with our public key', (t) => {
    requireTool('openssl');
    const dir = tempDir(t, 'sign-keys');
    const pair = generateKeyPair('pw', { params: SCRYPT_PARAMS.legacy });
    const payload = makePayload('localhost:5000/app', digest);
    const sig = signPayload(loadPrivateKey(pair.privateKey, 'pw'), payload);
    writeFileSync(join(dir, 'payload.json'), payload);
    writeFileSync(join(dir, 'payload.sig'), Buffer.from(sig, 'base64'));
    writeFileSync(join(dir, 'cosign.pub'), pair.publicKey);
    assert.match(sh('openssl', ['dgst', '-sha256', '-verify', join(dir, 'cosign.pub'), '-signature', join(dir, 'payload.sig'), join(dir, 'payload.json')]), /Verified OK/);
    // one changed byte: openssl refuses, and so do we
    writeFileSync(join(dir, 'payload.json'), Buffer.concat([payload, Buffer.from(' ')]));
    assert.throws(() => sh('openssl', ['dgst', '-sha256', '-verify', join(dir, 'cosign.pub'), '-signature', join(dir, 'payload.sig'), join(dir, 'payload.json')]));
    assert.throws(
      () => verifyPayloadSignature(loadPublicKey(pair.publicKey), readFileSync(join(dir, 'payload.json')), sig),
      (e: unknown) => e instanceof SignatureError && /signature verification failed/.test((e as Error).message),
    );
  });

  it('a key pair made by openssl signs with our code, and openssl-signed payloads verify with our code', (t) => {
    requireTool('openssl');
    const dir = tempDir(t, 'sign-keys');
    sh('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', join(dir, 'ec.key')]);
    sh('openssl', ['ec', '-in', join(dir, 'ec.key'), '-pubout', '-out', join(dir, 'ec.pub')]);
    const payload = makePayload('localhost:5000/app', digest);
    writeFileSync(join(dir, 'payload.json'), payload);
    // ours signs with the openssl key, openssl verifies
    const sig = signPayload(loadPrivateKey(readFileSync(join(dir, 'ec.key'), 'utf8')), payload);
    writeFileSync(join(dir, 'ours.sig'), Buffer.from(sig, 'base64'));
    assert.match(sh('openssl', ['dgst', '-sha256', '-verify', join(dir, 'ec.pub'), '-signature', join(dir, 'ours.sig'), join(dir, 'payload.json')]), /Verified OK/);
    // openssl signs, ours verifies
    sh('openssl', ['dgst', '-sha256', '-sign', join(dir, 'ec.key'), '-out', join(dir, 'theirs.sig'), join(dir, 'payload.json')]);
    const pub = loadPublicKey(readFileSync(join(dir, 'ec.pub'), 'utf8'));
    verifyPayloadSignature(pub, payload, readFileSync(join(dir, 'theirs.sig')).toString('base64'));
    // the wrong key fails
    const other = generateKeyPair('p', { params: SCRYPT_PARAMS.legacy });
    assert.throws(() => verifyPayloadSignature(loadPublicKey(other.publicKey), payload, sig), /signature verification failed/);
  });
});

describe('tscopy generate-key-pair', () => {
  it('writes cosign.key (0600, encrypted) and cosign.pub; refuses to overwrite', (t) => {
    const dir = tempDir(t, 'sign-keys');
    const tscopy = join(new URL('../../../bin/tscopy.js', import.meta.url).pathname);
    writeFileSync(join(dir, 'pw'), 'from-file\n');
    sh(process.execPath, [tscopy, 'generate-key-pair', '--password-file', join(dir, 'pw'), '--output-key-prefix', join(dir, 'k')]);
    const priv = readFileSync(join(dir, 'k.key'), 'utf8');
    const pub = readFileSync(join(dir, 'k.pub'), 'utf8');
    assert.match(priv, /^-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n/);
    assert.equal(statSync(join(dir, 'k.key')).mode & 0o777, 0o600);
    const key = loadPrivateKey(priv, 'from-file');
    assert.equal(createPublicKey(key).export({ format: 'pem', type: 'spki' }), pub);
    assert.throws(() => sh(process.execPath, [tscopy, 'generate-key-pair', '--output-key-prefix', join(dir, 'k')], { env: { ...process.env, COSIGN_PASSWORD: 'x' } }), /already exists/);
    // COSIGN_PASSWORD from the environment
    sh(process.execPath, [tscopy, 'generate-key-pair', '--output-key-prefix', join(dir, 'e')], { env: { ...process.env, COSIGN_PASSWORD: 'env-pw' } });
    loadPrivateKey(readFileSync(join(dir, 'e.key'), 'utf8'), 'env-pw');
  });
});
