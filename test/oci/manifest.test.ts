import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  validateDescriptor,
  validateManifest,
  validateIndex,
  validateConfig,
  parseManifest,
  parseConfig,
  EMPTY_DESCRIPTOR,
  toJsonBytes,
} from '../../src/oci/manifest.js';
import { MediaTypes, layerCompression, layerMediaType, guessManifestType, isLayerType } from '../../src/oci/mediatypes.js';
import { digestOf } from '../../src/oci/digest.js';
import { ValidationError } from '../../src/oci/errors.js';

const dg = (s: string) => digestOf(s);
const layer = (n: number) => ({ mediaType: MediaTypes.ociLayerGzip, digest: dg(`layer${n}`), size: 100 + n });
const ociManifest = () => ({
  schemaVersion: 2,
  mediaType: MediaTypes.ociManifest,
  config: { mediaType: MediaTypes.ociConfig, digest: dg('config'), size: 42 },
  layers: [layer(0), layer(1), layer(2)],
  annotations: { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' },
});
const bytes = (o: unknown) => Buffer.from(JSON.stringify(o));

function fieldError(path: string, re: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof ValidationError, String(e));
    assert.equal(e.path, path);
    assert.ok(e.message.startsWith(path ? `${path}: ` : ''), e.message);
    assert.match(e.message, re);
    return true;
  };
}

describe('descriptors', () => {
  it('accepts a full descriptor and the empty descriptor (with data)', () => {
    validateDescriptor({ ...layer(0), urls: ['https://x'], annotations: { a: 'b' }, artifactType: 'application/x', platform: { os: 'linux', architecture: 'amd64' } });
    assert.deepEqual(validateDescriptor(EMPTY_DESCRIPTOR), EMPTY_DESCRIPTOR);
  });
  const cases: [unknown, string, RegExp][] = [
    [null, 'descriptor', /must be an object/],
    [{ ...layer(0), mediaType: 5 }, 'descriptor.mediaType', /missing or not a string/],
    [{ ...layer(0), mediaType: 'not a type' }, 'descriptor.mediaType', /invalid media type/],
    [{ ...layer(0), digest: 'sha256:xyz' }, 'descriptor.digest', /invalid sha256 digest/],
    [{ ...layer(0), size: -1 }, 'descriptor.size', /non-negative integer/],
    [{ ...layer(0), size: 1.5 }, 'descriptor.size', /non-negative integer/],
    [{ ...layer(0), urls: [1] }, 'descriptor.urls[0]', /must be a string/],
    [{ ...layer(0), annotations: { a: 1 } }, 'descriptor.annotations.a', /must be a string/],
    [{ ...EMPTY_DESCRIPTOR, size: 3 }, 'descriptor.data', /decodes to 2 bytes but size is 3/],
    [{ ...EMPTY_DESCRIPTOR, data: 'W10=' }, 'descriptor.data', /does not match digest/],
    [{ ...layer(0), platform: { os: 'linux' } }, 'descriptor.platform.architecture', /non-empty string/],
  ];
  for (const [v, path, re] of cases) it(`rejects with path ${path} (${re.source})`, () => assert.throws(() => validateDescriptor(v), fieldError(path, re)));
});

describe('manifests', () => {
  it('parses an OCI manifest, keeping the digest of the exact bytes', () => {
    const b = Buffer.from(JSON.stringify(ociManifest(), null, 3));
    const p = parseManifest(b, MediaTypes.ociManifest);
    assert.equal(p.kind, 'manifest');
    assert.equal(p.digest, digestOf(b));
    assert.equal(p.mediaType, MediaTypes.ociManifest);
    assert.equal(parseManifest(b, `${MediaTypes.ociManifest}; charset=utf-8`).kind, 'manifest');
    assert.equal(parseManifest(b).mediaType, MediaTypes.ociManifest, 'guessed from the document');
  });

  it('names the field path of the first problem', () => {
    const m = ociManifest();
    (m.layers[2] as { digest: string }).digest = 'sha256:nothex';
    assert.throws(() => validateManifest(m), fieldError('layers[2].digest', /invalid sha256 digest/));
    const m2 = ociManifest() as Record<string, unknown>;
    delete m2.config;
    assert.throws(() => validateManifest(m2), fieldError('config', /must be an object/));
    assert.throws(() => validateManifest({ ...ociManifest(), layers: {} }), fieldError('layers', /must be an array/));
    assert.throws(() => validateManifest({ ...ociManifest(), schemaVersion: 3 }), fieldError('schemaVersion', /must be 2, got 3/));
    assert.throws(() => validateManifest({ ...ociManifest(), mediaType: MediaTypes.ociIndex }), fieldError('mediaType', /not an image manifest media type/));
    assert.throws(() => validateManifest(ociManifest(), MediaTypes.dockerManifest), fieldError('mediaType', /does not match the declared/));
    assert.throws(() => validateManifest({ ...ociManifest(), annotations: { x: 1 } }), fieldError('annotations.x', /must be a string/));
    assert.throws(() => validateManifest({ ...ociManifest(), subject: { mediaType: MediaTypes.ociManifest, size: 1 } }), fieldError('subject.digest', /missing/));
    assert.throws(() => validateManifest([]), fieldError('', /manifest must be a JSON object/));
  });

  it('Docker schema 2: mediaType required and the Docker config type', () => {
    const docker = {
      schemaVersion: 2,
      mediaType: MediaTypes.dockerManifest,
      config: { mediaType: MediaTypes.dockerConfig, digest: dg('c'), size: 1 },
      layers: [{ mediaType: MediaTypes.dockerLayerGzip, digest: dg('l'), size: 2 }],
    };
    assert.equal(parseManifest(bytes(docker), MediaTypes.dockerManifest).kind, 'manifest');
    assert.equal(parseManifest(bytes(docker)).mediaType, MediaTypes.dockerManifest);
    assert.throws(
      () => validateManifest({ ...docker, config: { ...docker.config, mediaType: MediaTypes.ociConfig } }),
      fieldError('config.mediaType', /Docker schema 2 manifests need/),
    );
    const { mediaType: _, ...noType } = docker;
    assert.throws(() => validateManifest(noType, MediaTypes.dockerManifest), fieldError('mediaType', /required for Docker schema 2/));
  });

  it('rejects schema 1 clearly, whether declared or found in the document', () => {
    const s1 = { schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [] };
    const re = /Docker image manifest schema 1 is not supported/;
    assert.throws(() => parseManifest(bytes(s1), MediaTypes.dockerSchema1), fieldError('mediaType', re));
    assert.throws(() => parseManifest(bytes(s1), MediaTypes.dockerSchema1Signed), fieldError('mediaType', re));
    assert.throws(() => parseManifest(bytes(s1)), fieldError('mediaType', re));
    assert.throws(() => parseManifest(bytes(s1), 'application/json'), fieldError('mediaType', re));
    assert.throws(() => validateManifest(s1), fieldError('mediaType', re));
  });

  it('rejects non-JSON and unknown types', () => {
    assert.throws(() => parseManifest(Buffer.from('{nope')), fieldError('', /manifest is not valid JSON/));
    assert.throws(() => parseManifest(bytes({ schemaVersion: 2 })), fieldError('mediaType', /unsupported manifest media type "\(none\)"/));
    assert.throws(() => parseManifest(bytes(ociManifest()), 'text/plain'), fieldError('mediaType', /unsupported manifest media type "text\/plain"/));
  });
});

describe('indexes', () => {
  const index = () => ({
    schemaVersion: 2,
    mediaType: MediaTypes.ociIndex,
    manifests: [
      { mediaType: MediaTypes.ociManifest, digest: dg('a'), size: 10, platform: { os: 'linux', architecture: 'amd64' } },
      { mediaType: MediaTypes.ociManifest, digest: dg('b'), size: 11, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ],
  });
  it('parses OCI indexes and Docker manifest lists', () => {
    assert.equal(parseManifest(bytes(index()), MediaTypes.ociIndex).kind, 'index');
    const { mediaType: _m, ...bare } = index();
    assert.equal(parseManifest(bytes(bare)).kind, 'index', 'guessed');
    assert.equal(parseManifest(bytes({ ...index(), mediaType: MediaTypes.dockerManifestList }), MediaTypes.dockerManifestList).kind, 'index');
  });
  it('names field paths', () => {
    const i = index();
    (i.manifests[1]!.platform as { os?: string }).os = '';
    assert.throws(() => validateIndex(i), fieldError('manifests[1].platform.os', /non-empty string/));
    assert.throws(() => validateIndex({ ...index(), manifests: null }), fieldError('manifests', /must be an array/));
    assert.throws(() => validateIndex({ ...index(), mediaType: MediaTypes.ociManifest }), fieldError('mediaType', /not an index media type/));
    const { mediaType: _m, ...bare } = index();
    assert.throws(() => validateIndex(bare, MediaTypes.dockerManifestList), fieldError('mediaType', /required for Docker manifest lists/));
  });
});

describe('image configs', () => {
  const config = () => ({
    architecture: 'amd64',
    os: 'linux',
    created: '2024-01-01T00:00:00Z',
    config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'], Entrypoint: null, Labels: { a: 'b' } },
    rootfs: { type: 'layers', diff_ids: [dg('d0'), dg('d1')] },
    history: [{ created_by: 'x' }],
  });
  it('accepts a config and keeps unknown fields', () => {
    const c = parseConfig(bytes({ ...config(), 'moby.buildkit.cache.v0': 'x' }));
    assert.equal(c.rootfs.diff_ids.length, 2);
    assert.equal(c['moby.buildkit.cache.v0'], 'x');
  });
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ rootfs: { type: 'layers', diff_ids: [dg('x'), 'sha256:zz'] } }, 'rootfs.diff_ids[1]', /invalid sha256 digest/],
    [{ rootfs: { type: 'foo', diff_ids: [] } }, 'rootfs.type', /must be "layers", got "foo"/],
    [{ rootfs: undefined }, 'rootfs', /must be an object/],
    [{ architecture: 1 }, 'architecture', /missing or not a string/],
    [{ os: undefined }, 'os', /missing or not a string/],
    [{ config: { Env: [1] } }, 'config.Env[0]', /must be a string/],
    [{ config: { Cmd: 'sh' } }, 'config.Cmd', /must be an array of strings/],
    [{ config: { Labels: { a: 2 } } }, 'config.Labels.a', /must be a string/],
    [{ created: 5 }, 'created', /RFC 3339/],
    [{ history: {} }, 'history', /must be an array/],
  ];
  for (const [patch, path, re] of cases) it(`rejects with path ${path}`, () => assert.throws(() => validateConfig({ ...config(), ...patch }), fieldError(path, re)));
  it('rejects non-JSON configs', () => assert.throws(() => parseConfig(Buffer.from('[')), fieldError('', /image config is not valid JSON/)));
});

describe('media types', () => {
  it('layer compression and media types', () => {
    assert.equal(layerCompression(MediaTypes.ociLayerGzip), 'gzip');
    assert.equal(layerCompression(MediaTypes.ociLayerZstd), 'zstd');
    assert.equal(layerCompression(MediaTypes.dockerLayerGzip), 'gzip');
    assert.equal(layerCompression(MediaTypes.ociLayer), 'none');
    assert.equal(layerMediaType('oci', 'zstd'), MediaTypes.ociLayerZstd);
    assert.equal(layerMediaType('docker', 'gzip'), MediaTypes.dockerLayerGzip);
    assert.throws(() => layerMediaType('docker', 'zstd'), /Docker schema 2 layers must be gzip-compressed/);
    assert.ok(isLayerType(MediaTypes.ociLayerNondistGzip));
    assert.ok(!isLayerType(MediaTypes.ociConfig));
    assert.equal(guessManifestType({ schemaVersion: 1 }), MediaTypes.dockerSchema1);
    assert.equal(guessManifestType('x'), undefined);
    assert.deepEqual(toJsonBytes({ a: 1 }), Buffer.from('{"a":1}'));
  });
});
