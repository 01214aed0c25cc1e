/** Resolve `user[:group]` against the image's /etc/passwd and /etc/group (as runc/libcontainer does). */
import { readFile } from 'node:fs/promises';
import { UsageError } from '../oci/errors.js';
import { resolveInRoot } from './inroot.js';

export type ExecUser = { uid: number; gid: number; groups: number[]; home: string };

type PasswdEntry = { name: string; uid: number; gid: number; home: string };
type GroupEntry = { name: string; gid: number; members: string[] };

async function readEtc(rootfs: string, file: string): Promise<string[]> {
  try {
    const p = await resolveInRoot(rootfs, file);
    return (await readFile(p, 'utf8')).split('\n').filter((l) => l && !l.startsWith('#'));
  } catch {
    return [];
  }
}

const isNum = (s: string) => /^\d+$/.test(s);

export async function resolveUser(rootfs: string, spec: string | undefined): Promise<ExecUser> {
  const s = spec?.trim() || 'root';
  const [u = '', g] = s.split(':', 2) as [string, string | undefined];
  const passwd: PasswdEntry[] = (await readEtc(rootfs, '/etc/passwd')).map((l) => {
    const f = l.split(':');
    return { name: f[0] ?? '', uid: Number(f[2]), gid: Number(f[3]), home: f[5] || '/' };
  });
  const groups: GroupEntry[] = (await readEtc(rootfs, '/etc/group')).map((l) => {
    const f = l.split(':');
    return { name: f[0] ?? '', gid: Number(f[2]), members: (f[3] ?? '').split(',').filter(Boolean) };
  });
  let out: ExecUser = { uid: 0, gid: 0, groups: [], home: '/' };
  const pw = passwd.find((p) => (isNum(u) ? p.uid === Number(u) : p.name === u));
  if (pw) out = { uid: pw.uid, gid: pw.gid, groups: [], home: pw.home };
  else if (isNum(u)) out.uid = Number(u);
  else if (u === 'root') out.uid = 0; // an image without /etc/passwd still has root
  else throw new UsageError(`unable to find user ${u}: no matching entries in passwd file`);
  if (g !== undefined && g !== '') {
    const gr = groups.find((x) => (isNum(g) ? x.gid === Number(g) : x.name === g));
    if (gr) out.gid = gr.gid;
    else if (isNum(g)) out.gid = Number(g);
    else throw new UsageError(`unable to find group ${g}: no matching entries in group file`);
    out.groups = [out.gid];
  } else {
    // primary group plus every group that lists the user (by name)
    const name = pw?.name;
    const sup = name ? groups.filter((x) => x.members.includes(name)).map((x) => x.gid) : [];
    out.groups = [...new Set([out.gid, ...sup])];
  }
  if (!Number.isSafeInteger(out.uid) || !Number.isSafeInteger(out.gid) || out.uid < 0 || out.gid < 0 || out.uid > 0xfffffffe || out.gid > 0xfffffffe)
    throw new UsageError(`invalid user ${JSON.stringify(s)}`);
  return out;
}
