/** Which process owns a snapshot or staging dir: pid plus its start time (pids get reused). */
import { readFileSync } from 'node:fs';

function startTime(pid: number): string | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

export function ownerStamp(): string {
  return `${process.pid} ${startTime(process.pid) ?? 0}`;
}

export function ownerAlive(stamp: string | undefined): boolean {
  if (!stamp) return false;
  const [pid, st] = stamp.trim().split(' ');
  if (!pid || !/^\d+$/.test(pid)) return false;
  const now = startTime(Number(pid));
  return now !== undefined && now === st;
}
