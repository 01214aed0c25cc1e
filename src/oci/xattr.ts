/**
 * Extended attributes without following symlinks (lgetxattr/lsetxattr/llistxattr), via the
 * @napi-rs/xattr prebuilt addon (loaded on first use). Used by the layer packer/extractor
 * (PAX SCHILY.xattr.*) and by overlay code (trusted.overlay.opaque on opaque dirs).
 *
 * Names are full xattr names with their namespace ("user.x", "security.capability",
 * "trusted.overlay.opaque"). Values are raw bytes.
 */
import { createRequire } from 'node:module';
import { lstatSync } from 'node:fs';
import { TsimageError } from './errors.js';

type XattrBinding = {
  getAttributeSync(path: string, name: string): Buffer | null;
  listAttributesSync(path: string): string[];
  removeAttributeSync(path: string, name: string): void;
  setAttributeSync(path: string, name: string, value: Uint8Array | string): void;
};

let binding: XattrBinding | undefined;
function xa(): XattrBinding {
  binding ??= createRequire(import.meta.url)('@napi-rs/xattr') as XattrBinding;
  return binding;
}

/** The overlayfs xattr marking a directory opaque (value "y"). */
export const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';

export class XattrError extends TsimageError {}

function fail(op: string, path: string, name: string | undefined, err: unknown): never {
  const msg = err instanceof Error ? err.message : String(err);
  throw new XattrError(`${op} ${name ? `xattr ${name} ` : 'xattrs '}on ${path}: ${msg}`, { cause: err });
}

/** The names of the xattrs on `path` (the link itself for symlinks); [] when the filesystem has none. */
export function listXattrs(path: string): string[] {
  try {
    return xa().listAttributesSync(path);
  } catch (err) {
    if (/not supported|os error 95/i.test(String((err as Error)?.message))) return [];
    fail('listing', path, undefined, err);
  }
}

/** One xattr's value, or undefined when it is not set. */
export function getXattr(path: string, name: string): Buffer | undefined {
  try {
    return xa().getAttributeSync(path, name) ?? undefined;
  } catch (err) {
    if (/No data available|os error 61|not supported|os error 95/i.test(String((err as Error)?.message))) return undefined;
    fail('reading', path, name, err);
  }
}

/** Set one xattr (on the link itself for symlinks). */
export function setXattr(path: string, name: string, value: Uint8Array | string): void {
  try {
    xa().setAttributeSync(path, name, value);
  } catch (err) {
    fail('setting', path, name, err);
  }
}

/** Remove one xattr; a missing one is not an error. */
export function removeXattr(path: string, name: string): void {
  try {
    xa().removeAttributeSync(path, name);
  } catch (err) {
    if (/No data available|os error 61/i.test(String((err as Error)?.message))) return;
    fail('removing', path, name, err);
  }
}

/** All xattrs of `path` as name -> value, sorted by name. */
export function readXattrs(path: string, filter?: (name: string) => boolean): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const name of listXattrs(path).sort()) {
    if (filter && !filter(name)) continue;
    const v = getXattr(path, name);
    if (v !== undefined) out.set(name, v);
  }
  return out;
}

/** Copy xattrs from `src` to `dst` (optionally filtered by name); returns the names copied. */
export function copyXattrs(src: string, dst: string, filter?: (name: string) => boolean): string[] {
  const copied: string[] = [];
  for (const [name, value] of readXattrs(src, filter)) {
    setXattr(dst, name, value);
    copied.push(name);
  }
  return copied;
}

/** Whether a directory carries trusted.overlay.opaque=y. */
export function isOpaqueDir(dir: string): boolean {
  const v = getXattr(dir, OVERLAY_OPAQUE_XATTR);
  return v !== undefined && v.toString() === 'y';
}

/** Mark a directory opaque for overlayfs (trusted.overlay.opaque=y). */
export function setOpaqueDir(dir: string): void {
  if (!lstatSync(dir).isDirectory()) throw new XattrError(`cannot mark ${dir} opaque: not a directory`);
  setXattr(dir, OVERLAY_OPAQUE_XATTR, 'y');
}
