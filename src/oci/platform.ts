/** Platforms: parse/format `os/arch[/variant]`, normalise, and match against an index. */
import { UsageError } from './errors.js';
import type { Descriptor, Platform } from './manifest.js';

const ARCH_ALIASES: Record<string, string> = {
  x86_64: 'amd64',
  'x86-64': 'amd64',
  aarch64: 'arm64',
  armhf: 'arm',
  armel: 'arm',
  i386: '386',
  i686: '386',
};

/** Normalise arch and variant as containerd's platforms package does. */
export function normalizePlatform(p: Platform): Platform {
  const os = p.os.toLowerCase();
  let architecture = p.architecture.toLowerCase();
  let variant = p.variant?.toLowerCase();
  if (p.architecture.toLowerCase() === 'armhf') variant ??= 'v7';
  if (p.architecture.toLowerCase() === 'armel') variant ??= 'v6';
  architecture = ARCH_ALIASES[architecture] ?? architecture;
  if (architecture === 'arm64') {
    if (variant === 'v8' || variant === '8' || variant === undefined) variant = 'v8';
  } else if (architecture === 'arm') {
    if (variant === undefined || variant === '7') variant = 'v7';
    else if (variant === '5' || variant === '6' || variant === '8') variant = `v${variant}`;
  } else if (architecture === 'amd64' && variant === 'v1') {
    variant = undefined;
  }
  const out: Platform = { os: os === 'macos' ? 'darwin' : os, architecture };
  if (variant) out.variant = variant;
  if (p['os.version']) out['os.version'] = p['os.version'];
  return out;
}

export function parsePlatform(s: string): Platform {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((x) => x === '' || !/^[A-Za-z0-9_.-]+$/.test(x)))
    throw new UsageError(`invalid platform ${JSON.stringify(s)}: want os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8`);
  const p: Platform = { os: parts[0]!, architecture: parts[1]! };
  if (parts[2]) p.variant = parts[2];
  return normalizePlatform(p);
}

export function formatPlatform(p: Platform): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

/** The platform of this machine, in OCI terms. */
export function hostPlatform(): Platform {
  const arch = process.arch === 'x64' ? 'amd64' : process.arch === 'ia32' ? '386' : process.arch;
  return normalizePlatform({ os: process.platform === 'win32' ? 'windows' : process.platform, architecture: arch });
}

/** Does `have` satisfy `want`? (a missing variant in `want` matches any variant) */
export function platformMatches(want: Platform, have: Platform): boolean {
  const w = normalizePlatform(want);
  const h = normalizePlatform(have);
  if (w.os !== h.os || w.architecture !== h.architecture) return false;
  if (w.variant && h.variant && w.variant !== h.variant) return false;
  if (w.variant && !h.variant && !(w.architecture === 'arm64' && w.variant === 'v8')) return false;
  return true;
}

/** Pick the index entry for a platform (exact variant first); undefined when none matches. */
export function selectPlatform(manifests: readonly Descriptor[], want: Platform): Descriptor | undefined {
  const w = normalizePlatform(want);
  const candidates = manifests.filter((m) => m.platform && platformMatches(w, m.platform));
  return (
    candidates.find((m) => normalizePlatform(m.platform!).variant === w.variant) ??
    candidates[0]
  );
}
