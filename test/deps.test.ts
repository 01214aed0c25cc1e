/** Module boundaries: imports flow one way (see STYLE.md "This project's shape"). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { ROOT } from './helpers.js';

const ALLOWED: Record<string, string[]> = {
  oci: [],
  ns: ['oci'],
  overlay: ['oci'],
  registry: ['oci'],
  copy: ['oci'],
  builder: ['oci', 'overlay', 'ns', 'copy'],
  cli: ['oci', 'overlay', 'ns', 'copy', 'registry', 'builder'],
};

function files(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...files(p));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

describe('module boundaries', () => {
  for (const [mod, allowed] of Object.entries(ALLOWED)) {
    it(`src/${mod} imports only ${allowed.length ? allowed.join(', ') : 'node:* and packages'}`, () => {
      const bad: string[] = [];
      let dir: string;
      try {
        dir = join(ROOT, 'src', mod);
        readdirSync(dir);
      } catch {
        return;
      }
      for (const f of files(dir)) {
        const src = readFileSync(f, 'utf8');
        for (const m of src.matchAll(/(?:from|import)\s*\(?\s*['"](\.\.?\/[^'"]+)['"]/g)) {
          // resolve against the importing file, so nested folders (src/copy/sign/x.ts -> ../../oci) count right
          const rel = relative(join(ROOT, 'src'), resolve(dirname(f), m[1]!));
          const target = rel.split(sep)[0]!;
          if (target !== mod && !allowed.includes(target)) bad.push(`${f.slice(ROOT.length)} imports ${m[1]}`);
        }
      }
      assert.deepEqual(bad, []);
    });
  }
});
