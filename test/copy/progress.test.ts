/**
 * What `tscopy copy` prints: progress bars on a terminal (a real pty from util-linux `script`), one plain line per
 * blob when stdout is a pipe (CI logs), nothing but errors with -q; the summary line in both non-quiet modes.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { requireTool, tempDir } from '../helpers.js';
import { baseLayout, type BaseLayout } from '../fixtures/base.js';
import { BIN, tscopy } from './engine-util.js';
import { OciLayout, parseManifest } from '../../src/oci/index.js';

let base: BaseLayout;
let layers: string[];
before(async () => {
  base = await baseLayout();
  const layout = await OciLayout.open(base.dir);
  const m = parseManifest(await layout.readBytes(base.manifestDigest));
  assert.equal(m.kind, 'manifest');
  layers = m.kind === 'manifest' ? m.doc.layers.map((l) => l.digest) : [];
});

describe('tscopy progress output', () => {
  it('bars on a TTY, plain lines on a pipe, nothing with -q', (t) => {
    requireTool('script');
    const d = tempDir(t, 'progress');
    // a pty: script(1) runs the command on one and copies what it printed
    const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
    const cmd = [process.execPath, BIN, 'copy', base.ociRef, `oci:${join(d, 'tty')}:x`].map(q).join(' ');
    const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', env: { ...process.env, COLUMNS: '160', LINES: '40' } });
    assert.equal(r.status, 0, r.stderr + r.stdout);
    const tty = r.stdout;
    assert.match(tty, /\u001b\[\?25l/, 'cursor hidden while the bars draw');
    // every line fits 80 columns (script's pty): the outcome is not cut off
    for (const l of layers) assert.match(tty, new RegExp(`Copying blob ${l.slice(7, 19)} \\[[\\u2591\\u2588]+\\] [0-9.]+ [KMG]?i?B done`), `a bar for ${l} in ${JSON.stringify(tty.slice(-1500))}`);
    assert.match(tty, /Copied .* blobs? \(\d+ copied, 0 skipped, 0 mounted\)/);
    // a pipe: one line per blob with its full digest, no escape sequences
    const plain = tscopy(['copy', base.ociRef, `oci:${join(d, 'pipe')}:x`]);
    assert.doesNotMatch(plain, /\u001b\[/);
    for (const l of layers) assert.match(plain, new RegExp(`^Copying blob ${l} done \\(.+\\)$`, 'm'));
    assert.match(plain, /^Copied .* \(\d+ copied, 0 skipped, 0 mounted\); manifest sha256:[0-9a-f]{64}$/m);
    assert.equal(tscopy(['copy', '-q', base.ociRef, `oci:${join(d, 'quiet')}:x`]), '');
  });
});
