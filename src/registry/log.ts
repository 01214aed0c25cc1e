/**
 * Structured JSON logs: one object per line (time, level, msg, fields), to stderr by default
 * or to a file (appended; reopened on SIGHUP by the server for logrotate). The access log is
 * one `msg: "request"` line per request with the request id, user, repository, route,
 * method, path, status, bytes in/out and duration.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { UsageError } from '../oci/index.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LogConfig {
  /** Minimum level. Default info. */
  level?: LogLevel;
  /** Write here instead of stderr. */
  file?: string;
  /** Access log lines (one per request). Default true. */
  access?: boolean;
  /** Format: json (default) or text (a short human line). */
  format?: 'json' | 'text';
}

export function validateLogConfig(raw: unknown, at = 'log'): LogConfig | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new UsageError(`${at}: expected a mapping`);
  const r = raw as Record<string, unknown>;
  const out: LogConfig = {};
  for (const [k, v] of Object.entries(r)) {
    switch (k) {
      case 'level':
        if (typeof v !== 'string' || !(v in LEVELS)) throw new UsageError(`${at}.level: expected one of ${Object.keys(LEVELS).join(', ')}`);
        out.level = v as LogLevel;
        break;
      case 'file':
        if (typeof v !== 'string' || !v) throw new UsageError(`${at}.file: expected a path`);
        out.file = v;
        break;
      case 'access':
        if (typeof v !== 'boolean') throw new UsageError(`${at}.access: expected true or false`);
        out.access = v;
        break;
      case 'format':
        if (v !== 'json' && v !== 'text') throw new UsageError(`${at}.format: expected json or text`);
        out.format = v;
        break;
      default:
        throw new UsageError(`${at}.${k}: unknown key (known: level, file, access, format)`);
    }
  }
  return out;
}

export interface Sink {
  write(line: string): void;
}

export class Logger {
  private readonly min: number;
  private stream: WriteStream | undefined;
  readonly accessEnabled: boolean;

  constructor(
    readonly config: LogConfig = {},
    private sink?: Sink,
    private readonly base: Record<string, unknown> = {},
  ) {
    this.min = LEVELS[config.level ?? 'info'];
    this.accessEnabled = config.access !== false;
    if (!sink) this.open();
  }

  private open(): void {
    if (this.config.file) {
      this.stream = createWriteStream(this.config.file, { flags: 'a' });
      this.stream.on('error', (e) => process.stderr.write(`tsregistry: log file ${this.config.file}: ${e.message}\n`));
      const s = this.stream;
      this.sink = { write: (l) => void s.write(l) };
    } else this.sink = { write: (l) => void process.stderr.write(l) };
  }

  /** Reopen the log file (after logrotate moved it). */
  reopen(): void {
    if (!this.config.file) return;
    this.stream?.end();
    this.open();
  }

  child(fields: Record<string, unknown>): Logger {
    return new Logger(this.config, this.sink, { ...this.base, ...fields });
  }

  enabled(level: LogLevel): boolean {
    return LEVELS[level] >= this.min;
  }

  log(level: LogLevel, msg: string, fields: Record<string, unknown> = {}): void {
    if (LEVELS[level] < this.min) return;
    const rec = { time: new Date().toISOString(), level, msg, ...this.base, ...fields };
    let line: string;
    if (this.config.format === 'text') {
      const extra = Object.entries({ ...this.base, ...fields })
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ');
      line = `${rec.time} ${level.toUpperCase()} ${msg}${extra ? ' ' + extra : ''}\n`;
    } else line = JSON.stringify(rec, (_k, v) => (v instanceof Error ? v.message : v)) + '\n';
    this.sink!.write(line);
  }

  debug(msg: string, f?: Record<string, unknown>): void {
    this.log('debug', msg, f);
  }
  info(msg: string, f?: Record<string, unknown>): void {
    this.log('info', msg, f);
  }
  warn(msg: string, f?: Record<string, unknown>): void {
    this.log('warn', msg, f);
  }
  error(msg: string, f?: Record<string, unknown>): void {
    this.log('error', msg, f);
  }
}

/** A logger that drops everything (tests, --quiet). */
export const nullLogger = new Logger({ level: 'error', access: false }, { write: () => {} });
