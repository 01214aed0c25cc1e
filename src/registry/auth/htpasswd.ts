/**
 * htpasswd files as written by Apache's `htpasswd -B` (bcrypt, `$2y$`), the format
 * distribution's htpasswd auth reads. Only bcrypt entries are accepted (as distribution
 * does); other hash formats are reported by line so an operator knows which user to fix.
 *
 * bcrypt is deliberately slow (cost 5 is ~3 ms, cost 10 ~80 ms in JS), and clients send
 * Basic credentials on every request, so successful checks are cached for a short time,
 * keyed by a SHA-256 of user + password + hash (never the password itself).
 */
import { readFileSync, statSync } from 'node:fs';
import { createHash, timingSafeEqual } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { TsimageError } from '../../oci/index.js';

export class HtpasswdError extends TsimageError {}

export interface HtpasswdEntry {
  user: string;
  hash: string;
}

/** Parse htpasswd text: `user:hash` per line, `#` comments and blank lines ignored. */
export function parseHtpasswd(text: string, file = 'htpasswd'): Map<string, string> {
  const users = new Map<string, string>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (!line || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new HtpasswdError(`${file}:${i + 1}: expected "user:hash"`);
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    if (!/^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/.test(hash)) {
      throw new HtpasswdError(`${file}:${i + 1}: user "${user}" does not have a bcrypt hash (create it with htpasswd -B)`);
    }
    users.set(user, hash);
  }
  return users;
}

/** Format one entry the way `htpasswd -nbB` prints it ($2y$ prefix, default cost 5 as Apache uses). */
export function hashPassword(password: string, cost = 5): string {
  if (cost < 4 || cost > 17) throw new HtpasswdError(`bcrypt cost must be between 4 and 17 (got ${cost})`);
  const h = bcrypt.hashSync(password, cost);
  return h.replace(/^\$2[ab]\$/, '$2y$');
}

let dummyHash: string | undefined;
/** A hash to compare against for unknown users, so timing does not reveal who exists. */
function dummy(): string {
  return (dummyHash ??= bcrypt.hashSync('tsregistry-no-such-user', 5));
}

/**
 * Users from an htpasswd file; reloads the file when its mtime/size changes (checked at most
 * once a second), so adding a user needs no restart.
 */
export class Htpasswd {
  private users = new Map<string, string>();
  private stamp = '';
  private checkedAt = 0;
  private readonly cache = new Map<string, number>();

  constructor(
    readonly path: string,
    private readonly cacheMs = 60_000,
  ) {
    this.reload();
  }

  /** Load (or re-load) the file; throws HtpasswdError naming the file and line. */
  reload(): void {
    let st;
    try {
      st = statSync(this.path);
    } catch (e) {
      throw new HtpasswdError(`cannot read htpasswd file ${this.path}: ${(e as Error).message}`, { cause: e });
    }
    this.users = parseHtpasswd(readFileSync(this.path, 'utf8'), this.path);
    this.stamp = `${st.mtimeMs}:${st.size}`;
    this.cache.clear();
  }

  private maybeReload(): void {
    const now = Date.now();
    if (now - this.checkedAt < 1000) return;
    this.checkedAt = now;
    try {
      const st = statSync(this.path);
      if (`${st.mtimeMs}:${st.size}` !== this.stamp) this.reload();
    } catch {
      // keep the last good copy when the file is briefly missing (editors replace files)
    }
  }

  has(user: string): boolean {
    this.maybeReload();
    return this.users.has(user);
  }

  /** Check a password; constant work whether or not the user exists. */
  async verify(user: string, password: string): Promise<boolean> {
    this.maybeReload();
    const hash = this.users.get(user);
    const key = createHash('sha256').update(user).update('\0').update(password).update('\0').update(hash ?? '').digest('hex');
    const now = Date.now();
    const until = this.cache.get(key);
    if (hash && until !== undefined && until > now) return true;
    const ok = await bcrypt.compare(password, hash ?? dummy());
    if (ok && hash) {
      if (this.cache.size > 10_000) this.cache.clear();
      this.cache.set(key, now + this.cacheMs);
      return true;
    }
    return false;
  }
}

/** Constant-time string compare (for static secrets). */
export function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}
