/**
 * `tscopy manifest-digest` against `skopeo manifest-digest` (skopeo 1.9.3 as the oracle) on the same files: plain
 * manifests hash their bytes; a signed Docker schema 1 manifest (libtrust "pretty" JWS, built here as libtrust
 * builds it) hashes its payload without the signatures; a signed manifest whose signatures cannot be parsed fails
 * in both. Also src/oci's manifestDigest directly (the payload digest is computed independently here).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { manifestDigest } from '../../src/oci/manifest.js';
import { requireTool } from '../helpers.js';
import { tscopy } from '../sign/util.js';

const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const b64u = (b: Buffer | string) => Buffer.from(b).toString('base64url');

/** A schema 1 manifest signed as libtrust's PrettySignature lays it out; `payload` is what the signatures cover. */
function signedSchema1(opts: { sigs?: number; protect?: (i: number, h: Record<string, unknown>) => unknown; indent?: string } = {}): { bytes: Buffer; payload: Buffer } {
  const doc = { schemaVersion: 1, name: 'team/app', tag: 'v1', architecture: 'amd64', fsLayers: [{ blobSum: sha('layer') }], history: [{ v1Compatibility: '{"id":"x"}' }] };
  const indent = opts.indent ?? '   ';
  const payload = Buffer.from(JSON.stringify(doc, null, indent));
  const formatLength = payload.length - 2; // without the final "\n}"
  const tail = payload.subarray(formatLength);
  const sigs = Array.from({ length: opts.sigs ?? 1 }, (_, i) => {
    const h: Record<string, unknown> = { formatLength, formatTail: b64u(tail), time: '2026-11-23T00:00:00Z' };
    const p = opts.protect ? opts.protect(i, h) : h;
    return { header: { alg: 'ES256' }, signature: b64u(`sig${i}`), protected: typeof p === 'string' ? p : b64u(JSON.stringify(p)) };
  });
  const sigText = JSON.stringify(sigs, null, indent).replace(/\n/g, `\n${indent}`);
  const bytes = Buffer.concat([payload.subarray(0, formatLength), Buffer.from(`,\n${indent}"signatures": ${sigText}\n}`)]);
  return { bytes, payload };
}

describe('tscopy manifest-digest (skopeo as the oracle)', () => {
  let dir: string;
  before(() => {
    requireTool('skopeo');
    dir = mkdtempSync(join(tmpdir(), 'tsimage-mdigest-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a signed schema 1 manifest digests to its payload (manifestDigest)', () => {
    const { bytes, payload } = signedSchema1({ sigs: 2 });
    assert.notEqual(sha(bytes), sha(payload));
    assert.equal(manifestDigest(bytes), sha(payload));
    const oci = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json' }));
    assert.equal(manifestDigest(oci), sha(oci));
    assert.throws(() => manifestDigest(signedSchema1({ protect: (i, h) => ({ ...h, formatLength: 1e6 }) }).bytes), /signatures: signed Docker schema 1 manifest: invalid format length/);
  });

  it('prints the digest skopeo prints, and fails where skopeo fails', () => {
    const s1 = signedSchema1();
    const cases: [string, Buffer | string][] = [
      ['oci manifest', JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: {}, layers: [] })],
      ['not json', 'garbage \x00\xff'],
      ['empty file', ''],
      ['json array', '[1,2]'],
      ['unsigned schema 1', JSON.stringify({ schemaVersion: 1, name: 'a/b' })],
      ['signatures null', JSON.stringify({ schemaVersion: 1, signatures: null })],
      ['signed schema 1', s1.bytes],
      ['signed schema 1, two signatures', signedSchema1({ sigs: 2 }).bytes],
      ['signed schema 1, tab indent', signedSchema1({ indent: '\t' }).bytes],
      ['no signatures in the list', JSON.stringify({ schemaVersion: 1, signatures: [] })],
      ['schema 2 media type wins', Buffer.concat([s1.bytes.subarray(0, 1), Buffer.from('"mediaType":"application/vnd.oci.image.manifest.v1+json",'), s1.bytes.subarray(1)])],
      ['schemaVersion as a string', JSON.stringify({ schemaVersion: '1', signatures: [{ protected: 'x' }] })],
      ['keys match case-insensitively', JSON.stringify({ SchemaVersion: 1, name: 'x', signatures: [] })],
      ['protected with spaces and newlines', signedSchema1({ protect: (_i, h) => b64u(JSON.stringify(h)).replace(/(.{8})/g, '$1 \n') }).bytes],
      // failures
      ['Signatures key in another case', JSON.stringify({ schemaVersion: 1, Signatures: [] })],
      ['signatures not a list', JSON.stringify({ schemaVersion: 1, signatures: {} })],
      ['null signature', JSON.stringify({ schemaVersion: 1, signatures: [null] })],
      ['protected not base64url', signedSchema1({ protect: () => '!!!' }).bytes],
      ['protected not json', signedSchema1({ protect: () => b64u('nope') }).bytes],
      ['no formatLength', signedSchema1({ protect: (_i, h) => ({ formatTail: h.formatTail }) }).bytes],
      ['formatTail not a string', signedSchema1({ protect: (_i, h) => ({ ...h, formatTail: 5 }) }).bytes],
      ['formatLength past the end', signedSchema1({ protect: (_i, h) => ({ ...h, formatLength: 100000 }) }).bytes],
      ['conflicting lengths', signedSchema1({ sigs: 2, protect: (i, h) => ({ ...h, formatLength: (h.formatLength as number) - i }) }).bytes],
      ['conflicting tails', signedSchema1({ sigs: 2, protect: (i, h) => ({ ...h, formatTail: i ? b64u('\n }') : h.formatTail }) }).bytes],
    ];
    let fails = 0;
    for (const [i, [what, content]] of cases.entries()) {
      const f = join(dir, `m${i}.json`);
      writeFileSync(f, content);
      const sk = spawnSync('skopeo', ['manifest-digest', f], { encoding: 'utf8' });
      const ts = tscopy(['manifest-digest', f]);
      if (sk.status === 0) {
        assert.equal(ts.status, 0, `${what}: ${ts.stderr}`);
        assert.equal(ts.stdout, sk.stdout, what);
      } else {
        fails++;
        assert.equal(ts.status, 1, `${what}: skopeo failed (${sk.stderr.trim()}), tscopy printed ${ts.stdout}`);
        assert.match(ts.stderr, /^tscopy: Error computing digest: signatures: signed Docker schema 1 manifest: /, what);
      }
    }
    assert.equal(fails, 10, 'the failure cases fail in skopeo');
    // the signed manifest's digest is its payload's, not its bytes'
    assert.equal(tscopy(['manifest-digest', join(dir, 'm6.json')]).stdout, `${sha(s1.payload)}\n`);
    // usage and file errors
    const none = tscopy(['manifest-digest']);
    assert.equal(none.status, 2);
    assert.match(none.stderr, /Usage: tscopy manifest-digest manifest/);
    const missing = tscopy(['manifest-digest', join(dir, 'nonexistent')]);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /Error reading manifest from .*nonexistent: ENOENT/);
  });
});
