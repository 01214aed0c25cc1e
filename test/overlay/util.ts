/** Shared helpers for the overlay tests: the base layer, tree fingerprints, tar listings. */
import { createHash } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { OciLayout } from '../../src/oci/store.js';
import { parseConfig, parseManifest, readTar, readXattrs, type Digest, type Descriptor, type ImageManifest } from '../../src/oci/index.js';
import { baseLayout } from '../fixtures/base.js';

export async function baseLayer(): Promise<{ layout: OciLayout; desc: Descriptor; diffID: Digest; dir: string }> {
  const base = await baseLayout();
  const layout = await OciLayout.open(base.dir);
  const m = await layout.resolve('latest');
  const man = parseManifest(await layout.readBytes(m.digest), m.mediaType).doc as ImageManifest;
  const cfg = parseConfig(await layout.readBytes(man.config.digest));
  return { layout, desc: man.layers[0]!, diffID: cfg.rootfs.diff_ids[0] as Digest, dir: base.dir };
}

/** rel -> "type mode uid:gid size/hash/target xattrs mtime" for every entry under root. */
export function fingerprint(root: string, opts: { mtimes?: boolean; skip?: (rel: string) => boolean } = {}): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string) => {
    for (const nm of readdirSync(join(root, rel)).sort()) {
      const r = rel ? `${rel}/${nm}` : nm;
      if (opts.skip?.(r)) continue;
      const abs = join(root, r);
      const st = lstatSync(abs);
      let what = '';
      if (st.isFile()) what = `file ${st.size} ${createHash('sha256').update(readFileSync(abs)).digest('hex').slice(0, 16)}`;
      else if (st.isDirectory()) what = 'dir';
      else if (st.isSymbolicLink()) what = `symlink ${readlinkSync(abs)}`;
      else if (st.isFIFO()) what = 'fifo';
      else if (st.isCharacterDevice()) what = `char ${st.rdev}`;
      else if (st.isBlockDevice()) what = `block ${st.rdev}`;
      const x = [...readXattrs(abs, (n) => !n.startsWith('trusted.overlay.'))].map(([k, v]) => `${k}=${v.toString('hex')}`).join(',');
      const mt = opts.mtimes === false || st.isDirectory() ? '' : ` t=${Math.floor(st.mtimeMs / 1000)}`;
      out.set(r, `${what} mode=${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}${x ? ' x=' + x : ''}${mt}`);
      if (st.isDirectory()) walk(r);
    }
  };
  walk('');
  return out;
}

export type Listed = { name: string; type: string; mode: number; uid: number; gid: number; size: number; linkname: string; xattrs: string[] };

export async function listTar(src: Readable | AsyncIterable<Uint8Array>): Promise<Listed[]> {
  const out: Listed[] = [];
  for await (const { header: h, body } of readTar(src as AsyncIterable<Uint8Array>)) {
    if (body) for await (const _ of body) void _;
    out.push({ name: h.name.replace(/^\.\//, '').replace(/\/$/, ''), type: h.type, mode: h.mode & 0o7777, uid: h.uid, gid: h.gid, size: h.size, linkname: h.linkname, xattrs: [...h.xattrs.keys()] });
  }
  return out;
}

/** The fixture layer: the files the change cases (snapshot.test, buildah-diff.test) change. */
export function fixtureTree(dir: string): void {
  mkdirSync(join(dir, 'data/dir/deep'), { recursive: true });
  mkdirSync(join(dir, 'data/opq'), { recursive: true });
  mkdirSync(join(dir, 'data/ren'), { recursive: true });
  mkdirSync(join(dir, 'data/rendir'), { recursive: true });
  writeFileSync(join(dir, 'data/keep.txt'), 'keep\n');
  writeFileSync(join(dir, 'data/change.txt'), 'change\n');
  writeFileSync(join(dir, 'data/del.txt'), 'del\n');
  writeFileSync(join(dir, 'data/dir/a'), 'a');
  writeFileSync(join(dir, 'data/dir/deep/b'), 'b');
  writeFileSync(join(dir, 'data/opq/x'), 'x');
  writeFileSync(join(dir, 'data/opq/y'), 'y');
  writeFileSync(join(dir, 'data/ren/old.txt'), 'old');
  writeFileSync(join(dir, 'data/rendir/inner.txt'), 'inner');
  writeFileSync(join(dir, 'data/hl'), 'hl');
  writeFileSync(join(dir, 'data/perm'), '#!/bin/sh\n');
  chmodSync(join(dir, 'data/perm'), 0o755);
  symlinkSync('keep.txt', join(dir, 'data/sym'));
}

/** A whole stream in memory (small test layers only). */
export async function toBuffer(r: Readable): Promise<Buffer> {
  const c: Buffer[] = [];
  for await (const x of r) c.push(x as Buffer);
  return Buffer.concat(c);
}
