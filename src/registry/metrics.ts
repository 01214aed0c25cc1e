/**
 * Prometheus metrics (text exposition format 0.0.4) and the per-request observer that feeds
 * them and the access log.
 *
 * The server writes most responses straight to the Node response object, so the observer
 * reads the outcome there: status from `ServerResponse.statusCode` when the response
 * finishes, bytes from the socket's read/write counters (requests on one keep-alive
 * connection are sequential), route/repo/user from what the route guard and the authoriser
 * put on the hono context.
 */
import { randomBytes } from 'node:crypto';
import type { Context, MiddlewareHandler } from 'hono';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from './log.js';

type Labels = Record<string, string>;

function labelKey(names: readonly string[], l: Labels): string {
  return names.map((n) => l[n] ?? '').join('\u0000');
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function fmtLabels(names: readonly string[], values: string[], extra?: [string, string]): string {
  const parts = names.map((n, i) => `${n}="${escapeLabel(values[i] ?? '')}"`);
  if (extra) parts.push(`${extra[0]}="${extra[1]}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

function fmtNum(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  return String(n);
}

interface Metric {
  readonly name: string;
  render(): string;
}

export class Counter implements Metric {
  private readonly values = new Map<string, { labels: string[]; v: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[] = [],
  ) {}
  inc(labels: Labels = {}, by = 1): void {
    const k = labelKey(this.labelNames, labels);
    const e = this.values.get(k);
    if (e) e.v += by;
    else this.values.set(k, { labels: this.labelNames.map((n) => labels[n] ?? ''), v: by });
  }
  get(labels: Labels = {}): number {
    return this.values.get(labelKey(this.labelNames, labels))?.v ?? 0;
  }
  render(): string {
    let s = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} counter\n`;
    if (this.values.size === 0 && this.labelNames.length === 0) s += `${this.name} 0\n`;
    for (const e of this.values.values()) s += `${this.name}${fmtLabels(this.labelNames, e.labels)} ${fmtNum(e.v)}\n`;
    return s;
  }
}

export class Gauge implements Metric {
  private readonly values = new Map<string, { labels: string[]; v: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[] = [],
    private readonly collect?: () => number | undefined,
  ) {}
  set(v: number, labels: Labels = {}): void {
    const k = labelKey(this.labelNames, labels);
    this.values.set(k, { labels: this.labelNames.map((n) => labels[n] ?? ''), v });
  }
  inc(labels: Labels = {}, by = 1): void {
    const k = labelKey(this.labelNames, labels);
    const e = this.values.get(k);
    if (e) e.v += by;
    else this.set(by, labels);
  }
  get(labels: Labels = {}): number | undefined {
    return this.values.get(labelKey(this.labelNames, labels))?.v;
  }
  render(): string {
    if (this.collect) {
      const v = this.collect();
      if (v !== undefined) this.set(v);
    }
    let s = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} gauge\n`;
    for (const e of this.values.values()) s += `${this.name}${fmtLabels(this.labelNames, e.labels)} ${fmtNum(e.v)}\n`;
    return s;
  }
}

export class Histogram implements Metric {
  private readonly values = new Map<string, { labels: string[]; counts: number[]; sum: number; n: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
    readonly labelNames: readonly string[] = [],
  ) {}
  observe(v: number, labels: Labels = {}): void {
    const k = labelKey(this.labelNames, labels);
    let e = this.values.get(k);
    if (!e) this.values.set(k, (e = { labels: this.labelNames.map((n) => labels[n] ?? ''), counts: this.buckets.map(() => 0), sum: 0, n: 0 }));
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) e.counts[i]!++;
    e.sum += v;
    e.n++;
  }
  count(labels: Labels = {}): number {
    return this.values.get(labelKey(this.labelNames, labels))?.n ?? 0;
  }
  render(): string {
    let s = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} histogram\n`;
    for (const e of this.values.values()) {
      this.buckets.forEach((b, i) => {
        s += `${this.name}_bucket${fmtLabels(this.labelNames, e.labels, ['le', fmtNum(b)])} ${e.counts[i]}\n`;
      });
      s += `${this.name}_bucket${fmtLabels(this.labelNames, e.labels, ['le', '+Inf'])} ${e.n}\n`;
      s += `${this.name}_sum${fmtLabels(this.labelNames, e.labels)} ${fmtNum(e.sum)}\n`;
      s += `${this.name}_count${fmtLabels(this.labelNames, e.labels)} ${e.n}\n`;
    }
    return s;
  }
}

const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Every metric tsregistry exports. */
export class RegistryMetrics {
  private readonly all: Metric[] = [];
  readonly requests = this.add(new Counter('tsregistry_http_requests_total', 'HTTP requests by route, method and status code.', ['route', 'method', 'status']));
  readonly duration = this.add(new Histogram('tsregistry_http_request_duration_seconds', 'HTTP request duration by route.', DURATION_BUCKETS, ['route']));
  readonly bytesIn = this.add(new Counter('tsregistry_http_received_bytes_total', 'Bytes received (requests, including headers) by route.', ['route']));
  readonly bytesOut = this.add(new Counter('tsregistry_http_sent_bytes_total', 'Bytes sent (responses, including headers) by route.', ['route']));
  readonly inflight = this.add(new Gauge('tsregistry_http_requests_in_flight', 'Requests being served.'));
  readonly uploadDuration = this.add(new Histogram('tsregistry_upload_duration_seconds', 'Blob upload duration, session start to commit.', DURATION_BUCKETS));
  readonly events = this.add(new Counter('tsregistry_storage_events_total', 'Storage events (blob.pushed, manifest.pushed, ...).', ['type']));
  readonly storageBytes = this.add(new Gauge('tsregistry_storage_bytes', 'Bytes of blob data in storage (as of the last GC or scrub).'));
  readonly storageBlobs = this.add(new Gauge('tsregistry_storage_blobs', 'Blobs in storage (as of the last GC or scrub).'));
  readonly gcRuns = this.add(new Counter('tsregistry_gc_runs_total', 'Garbage collection runs by result.', ['result']));
  readonly gcBlobsDeleted = this.add(new Counter('tsregistry_gc_blobs_deleted_total', 'Blobs deleted by garbage collection.'));
  readonly gcManifestsDeleted = this.add(new Counter('tsregistry_gc_manifests_deleted_total', 'Untagged manifests deleted by garbage collection.'));
  readonly gcBytesFreed = this.add(new Counter('tsregistry_gc_freed_bytes_total', 'Bytes freed by garbage collection.'));
  readonly gcDuration = this.add(new Gauge('tsregistry_gc_last_duration_seconds', 'Duration of the last garbage collection.'));
  readonly gcLast = this.add(new Gauge('tsregistry_gc_last_run_timestamp_seconds', 'When the last garbage collection finished (unix time).'));
  readonly retentionDeleted = this.add(new Counter('tsregistry_retention_tags_deleted_total', 'Tags deleted by retention policies.'));
  readonly mirror = this.add(new Counter('tsregistry_mirror_requests_total', 'Pull-through mirror lookups by kind and result (hit, miss, revalidated, stale, error).', ['kind', 'result']));
  readonly mirrorBytes = this.add(new Counter('tsregistry_mirror_fetched_bytes_total', 'Bytes fetched from upstream registries.'));
  readonly scrubCorrupt = this.add(new Counter('tsregistry_scrub_corrupt_total', 'Corrupt blobs found (and quarantined) by scrub.'));

  private add<M extends Metric>(m: M): M {
    this.all.push(m);
    return m;
  }

  register<M extends Metric>(m: M): M {
    return this.add(m);
  }

  render(): string {
    return this.all.map((m) => m.render()).join('');
  }

  /** Count a storage event (hook the store's `on()` to this). */
  onEvent = (e: { type: string; durationMs?: number }): void => {
    this.events.inc({ type: e.type });
    if (e.type === 'blob.pushed' && typeof e.durationMs === 'number') this.uploadDuration.observe(e.durationMs / 1000);
  };
}

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** What the observer reads from the hono context (set by the route guard and authoriser). */
interface ObservedVars {
  user?: string;
  repo?: string;
  route?: string;
  requestId?: string;
}

type Bindings = { incoming: IncomingMessage; outgoing: ServerResponse };

const sockStats = new WeakMap<object, { r: number; w: number }>();

/**
 * Middleware (mount first): request id (X-Request-Id in and out), then on finish one access
 * log line and the request metrics.
 */
export function observe(opts: { metrics?: RegistryMetrics | undefined; logger?: Logger | undefined }): MiddlewareHandler {
  const { metrics, logger } = opts;
  const logAccess = logger?.accessEnabled === true;
  return async function observer(c: Context, next) {
    const env = c.env as Bindings | undefined;
    const inc = env?.incoming;
    const out = env?.outgoing;
    const given = c.req.header('x-request-id');
    const id = given && /^[\w.:-]{1,128}$/.test(given) ? given : randomBytes(8).toString('hex');
    c.set('requestId' as never, id as never);
    if (!inc || !out) {
      await next();
      return;
    }
    out.setHeader('X-Request-Id', id);
    const start = performance.now();
    const sock = inc.socket;
    // bytes on this connection before this request (sequential requests per keep-alive socket)
    const prev = sockStats.get(sock) ?? { r: 0, w: 0 };
    const r0 = Math.max(prev.r, 0);
    const w0 = sock.bytesWritten;
    metrics?.inflight.inc({}, 1);
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      metrics?.inflight.inc({}, -1);
      const v = c.var as ObservedVars;
      const route = v.route ?? routeOf(c.req.path);
      const dur = (performance.now() - start) / 1000;
      const status = out.writableFinished ? out.statusCode : out.headersSent ? out.statusCode : 499;
      const bytesIn = Math.max(0, (sock.bytesRead ?? 0) - r0);
      const bytesOut = Math.max(0, (sock.bytesWritten ?? 0) - w0);
      sockStats.set(sock, { r: sock.bytesRead ?? 0, w: sock.bytesWritten ?? 0 });
      if (metrics) {
        metrics.requests.inc({ route, method: c.req.method, status: String(status) });
        metrics.duration.observe(dur, { route });
        metrics.bytesIn.inc({ route }, bytesIn);
        metrics.bytesOut.inc({ route }, bytesOut);
      }
      if (logAccess) {
        logger!.info('request', {
          id,
          remote: sock.remoteAddress,
          method: c.req.method,
          path: c.req.path,
          route,
          repo: v.repo,
          user: v.user,
          status,
          bytesIn,
          bytesOut,
          durationMs: Math.round(dur * 1000 * 10) / 10,
          ua: c.req.header('user-agent'),
        });
      }
    };
    out.once('finish', finish);
    out.once('close', finish);
    await next();
  };
}

function routeOf(path: string): string {
  if (path === '/v2/' || path === '/v2') return 'base';
  if (path === '/token' || path.startsWith('/token/')) return 'token';
  if (path === '/metrics') return 'metrics';
  if (path === '/healthz') return 'healthz';
  return 'other';
}
