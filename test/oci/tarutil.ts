/** Helpers for the layer tests: tree snapshots, tar-stream built archives, stream sinks. */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tarStream from 'tar-stream';
import { listXattrs, getXattr } from '../../src/oci/xattr.js';

export type Snap = Record<string, string>;

/** A comparable description of every path under dir: type, mode, owner, size/hash/target, mtime, link count, xattrs. */
export function snapshot(dir: string, o: { mtime?: boolean; xattrs?: boolean } = {}): Snap {
  const out: Snap = {};
  const walk = (rel: string) => {
    for (const n of readdirSync(join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${n}` : n;
      const p = join(dir, r);
      const st = lstatSync(p);
      const mode = (st.mode & 0o7777).toString(8);
      let d: string;
      if (st.isSymbolicLink()) d = `symlink ${readlinkSync(p)}`;
      else if (st.isDirectory()) d = `dir ${mode}`;
      else if (st.isFile()) d = `file ${mode} ${createHash('sha256').update(readFileSync(p)).digest('hex').slice(0, 16)} nlink=${st.nlink}`;
      else if (st.isCharacterDevice()) d = `char ${mode} ${st.rdev}`;
      else if (st.isBlockDevice()) d = `block ${mode} ${st.rdev}`;
      else if (st.isFIFO()) d = `fifo ${mode}`;
      else d = 'other';
      d += ` ${st.uid}:${st.gid}`;
      if (o.mtime !== false && !st.isSymbolicLink()) d += ` t=${Math.floor(st.mtimeMs / 1000)}`;
      if (o.xattrs !== false) {
        const xs = listXattrs(p).sort();
        for (const x of xs) d += ` ${x}=${getXattr(p, x)?.toString('hex')}`;
      }
      out[r] = d;
      if (st.isDirectory()) walk(r);
    }
  };
  walk('');
  return out;
}

export type RawHeader = Partial<tarStream.Header> & { name: string; pax?: Record<string, string> };
export type RawEntry = { header: RawHeader; body?: string | Buffer };

/** Build a tar with tar-stream (an independent writer, used for hostile archives). */
export async function tarOf(entries: RawEntry[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  const done = pipeline(
    pack,
    new Writable({
      write(c, _e, cb) {
        chunks.push(c);
        cb();
      },
    }),
  );
  for (const e of entries) {
    await new Promise<void>((res, rej) => {
      const h = { mtime: new Date(0), ...e.header };
      const cb = (err?: Error | null) => (err ? rej(err) : res());
      if (e.body !== undefined) pack.entry(h, e.body, cb);
      else if (h.type === 'file' || !h.type) pack.entry(h, '', cb);
      else pack.entry(h, cb);
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** Read a tar with tar-stream: [{header, body}] (small archives only). */
export async function untar(buf: Buffer): Promise<{ header: tarStream.Header; body: Buffer }[]> {
  const ex = tarStream.extract();
  const out: { header: tarStream.Header; body: Buffer }[] = [];
  const p = (async () => {
    for await (const entry of ex) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      out.push({ header: entry.header, body: Buffer.concat(chunks) });
    }
  })();
  Readable.from([buf]).pipe(ex);
  await p;
  return out;
}

export async function collect(src: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of src) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

export const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A deterministic pseudo-random buffer (xorshift), so data is the same on every run. */
export function prng(size: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}
