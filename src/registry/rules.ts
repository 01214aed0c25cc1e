/** Shared validation of the rule lists in the registry config (retention, immutable, quota). */
import { UsageError } from '../oci/index.js';

/**
 * A config value that is a list of mappings with known keys: null/undefined is an empty list,
 * anything else that is not a list, an entry that is not a mapping or an unknown key is a
 * UsageError naming the place (`at[i].key`). Each entry is turned into a rule by `build`.
 */
export function ruleList<T>(raw: unknown, at: string, what: string, keys: readonly string[], build: (o: Record<string, unknown>, p: string) => T): T[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw new UsageError(`${at}: expected a list of ${what}`);
  return raw.map((r: unknown, i) => {
    const p = `${at}[${i}]`;
    if (typeof r !== 'object' || r === null || Array.isArray(r)) throw new UsageError(`${p}: expected a mapping`);
    const o = r as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!keys.includes(k)) throw new UsageError(`${p}.${k}: unknown key (known: ${keys.join(', ')})`);
    return build(o, p);
  });
}
