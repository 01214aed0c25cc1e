/**
 * Blob download workers: a small pool of worker threads, each of which GETs blobs, hashes them while they stream
 * and writes them into a file descriptor the caller opened (the temp file of an atomic ingest). A pull into an OCI
 * layout is CPU-bound on one thread otherwise (HTTP parsing, SHA-256, file writes: ~0.9 CPU-s per 250 MB on the
 * main thread); skopeo (Go) spreads that work over every core.
 *
 * The workers do one thing: one GET (following redirects) of a URL with the headers the main thread resolved
 * (auth), straight into the file. Everything else stays on the main thread in RegistryClient.getBlobToFile:
 * auth, retries, Range resume, the registry's error messages, digest verification (the worker returns the digest
 * it computed). Any result but success (an HTTP status other than 200/redirect, a broken connection, a crashed
 * worker) is handed back with the bytes written so far, and the main thread continues from there.
 *
 * Plain HTTP is read from the socket into ONE reused buffer (net.connect's `onread`): node:http allocates a
 * buffer per read, which cost ~2x the CPU here (user 0.30 + sys 0.35 s vs 0.22 + 0.13 s for 250 MB, hash and
 * writes included). The response it accepts is narrow on purpose: a 200 with a Content-Length (or a redirect);
 * anything else (chunked encoding...) is `unsupported` and the main thread downloads the blob. HTTPS goes
 * through node:https (a keep-alive agent per TLS settings).
 *
 * No module file of its own: the worker's code is `workerMain` below, started with `eval` (the CLI runs from one
 * bundled file; see scripts/bundle.mjs), so it may use Node built-ins only and no name from outside its body.
 * Loaded lazily (client.ts imports this module on the first large blob): node:worker_threads costs nothing to
 * commands that do not pull.
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import type { ClientTls } from './trust.js';

/** What a worker is asked to do. */
export interface BlobJob {
  /** Absolute URL of the blob (`/v2/<repo>/blobs/<digest>` on the registry's origin). */
  url: string;
  /** Request headers (user-agent, authorization). Authorization is dropped when a redirect leaves the host. */
  headers: Record<string, string>;
  /** An open, empty, writable file: bytes go at offsets 0..size-1. */
  fd: number;
  /** Expected size: more bytes than this stop the download (reported as `size`). */
  size: number;
  algorithm: 'sha256' | 'sha512';
  /** TLS settings for https (trust.ts's, with the deferred extra CAs already in `cas`). */
  tls?: ClientTls | undefined;
}

export type BlobJobResult =
  /** Every byte received, written (not fsynced) and hashed. */
  | { kind: 'ok'; digest: string; size: number; requests: number }
  /** Something the worker does not handle (chunked encoding, ...): the main thread downloads the blob. */
  | { kind: 'unsupported'; reason: string; written: number; requests: number }
  /** The response was not 200 (nor a redirect): the main thread asks again (and reports the registry's error). */
  | { kind: 'status'; status: number; written: number; requests: number }
  /** More bytes than expected. */
  | { kind: 'size'; written: number; requests: number }
  /** Connection failure before or during the body; `written` bytes are on disk (offsets 0..written-1). */
  | { kind: 'net'; code: string | undefined; message: string; written: number; requests: number }
  /** A write to the file failed. */
  | { kind: 'io'; code: string | undefined; message: string; written: number; requests: number }
  /** Cancelled by the main thread. */
  | { kind: 'aborted'; written: number; requests: number }
  /** The worker died (or could not start): nothing is known about the file. */
  | { kind: 'crash'; message: string };

type ToWorker = ({ type: 'get'; id: number } & BlobJob) | { type: 'abort'; id: number };
type FromWorker = { type: 'progress'; id: number; n: number } | ({ type: 'done'; id: number } & BlobJobResult);

/** The worker thread's program (runs from its source text: Node built-ins only, nothing from outside). */
function workerMain(req: (id: string) => unknown): void {
  const { parentPort } = req('node:worker_threads') as typeof import('node:worker_threads');
  const net = req('node:net') as typeof import('node:net');
  const { createHash } = req('node:crypto') as typeof import('node:crypto');
  const fs = req('node:fs') as typeof import('node:fs');
  const port = parentPort!;
  /**
   * Writes of at most 64 KiB, straight from the read buffer. Larger writes (1 MiB) made ext4 allocate large page
   * cache folios, and here (a VM) those came from memory the host had not backed yet: the write's copy then took
   * 3-4x the system time in 4 runs of 6 (0.7-0.8 s instead of 0.2 s per 250 MB). skopeo (Go's io.Copy) writes 32 KiB.
   */
  const WRITE = 64 << 10;
  /**
   * An fdatasync (in the background: libuv's pool) after each SYNC_EVERY bytes written, so that the disk writes
   * overlap the download and the caller's final fsync has little left to do (no sync_file_range in Node). Pull of
   * 250 MB: median 0.545 s vs 0.635 s without (10 runs each, interleaved; 8 MiB: 0.645 s).
   */
  const SYNC_EVERY = 16 << 20;
  /** Progress messages to the main thread: one per this many bytes. */
  const PROGRESS = 1 << 20;
  /** Socket read buffer (plain HTTP: reused for every read, see net.connect's onread). */
  const READ = 256 << 10;
  const MAX_HEAD = 64 << 10;
  const agents = new Map<string, { agent: import('node:https').Agent; secureContext: import('node:tls').SecureContext }>();
  const aborts = new Map<number, () => void>();

  port.on('message', (m: ToWorker) => {
    if (m.type === 'abort') aborts.get(m.id)?.();
    else run(m);
  });

  function run(job: { id: number } & BlobJob): void {
    const hash = createHash(job.algorithm);
    const firstHost = new URL(job.url).host;
    let requests = 0;
    let received = 0; // hashed and written
    let written = 0; // on disk (= received unless a write failed)
    let reported = 0; // progress sent
    let done = false;
    let stop: (() => void) | undefined; // closes the current connection
    let syncing = false; // an fdatasync in flight (the fd must stay open: 'done' waits for it)
    let synced = 0;
    let afterSync: (() => void) | undefined;
    let syncFailed: BlobJobResult | undefined;

    const finish = (r: BlobJobResult) => {
      if (done) return;
      done = true;
      aborts.delete(job.id);
      stop?.();
      if (written > reported) port.postMessage({ type: 'progress', id: job.id, n: written - reported } satisfies FromWorker);
      const post = () => port.postMessage({ type: 'done', id: job.id, ...(syncFailed && r.kind === 'ok' ? syncFailed : r) } satisfies FromWorker);
      if (syncing) afterSync = post;
      else post();
    };
    const errCode = (e: unknown) => ((e as { code?: unknown })?.code as string | undefined) ?? undefined;
    const netFail = (e: unknown) => finish({ kind: 'net', code: errCode(e), message: (e as Error)?.message ?? String(e), written, requests });
    const short = () => Object.assign(new Error(`connection closed after ${received} of ${job.size} bytes`), { code: 'ECONNRESET' });
    /**
     * Body bytes (valid only during the call: the read buffer is reused): hashed and written, synchronously (this
     * thread has nothing else to do meanwhile; the kernel keeps receiving). False: stop reading.
     */
    const take = (c: Buffer): boolean => {
      if (done) return false;
      if (received + c.length > job.size) {
        finish({ kind: 'size', written, requests });
        return false;
      }
      received += c.length;
      hash.update(c);
      try {
        for (let off = 0; off < c.length; ) {
          const n = fs.writeSync(job.fd, c, off, Math.min(WRITE, c.length - off), written);
          written += n;
          off += n;
        }
      } catch (e) {
        finish({ kind: 'io', code: errCode(e), message: (e as Error).message, written, requests });
        return false;
      }
      if (written - reported >= PROGRESS) {
        port.postMessage({ type: 'progress', id: job.id, n: written - reported } satisfies FromWorker);
        reported = written;
      }
      if (!syncing && written - synced >= SYNC_EVERY && received < job.size) {
        syncing = true;
        synced = written;
        fs.fdatasync(job.fd, (err) => {
          syncing = false;
          if (err) syncFailed = { kind: 'io', code: errCode(err), message: `fdatasync: ${err.message}`, written, requests };
          if (syncFailed && !done) finish(syncFailed);
          else afterSync?.();
        });
      }
      if (received === job.size) {
        finish({ kind: 'ok', digest: `${job.algorithm}:${hash.digest('hex')}`, size: received, requests });
        return false;
      }
      return true;
    };
    const redirect = (status: number, location: string | undefined, from: URL, headers: Record<string, string>, redirects: number): boolean => {
      if (status < 300 || status >= 400 || !location || redirects >= 10) return false;
      const next = new URL(location, from);
      const h = { ...headers };
      if (next.host !== firstHost) delete h.authorization;
      get(next, h, redirects + 1);
      return true;
    };

    /** Plain HTTP/1.1 over a socket that reads into one reused buffer: a 200 with a Content-Length, or a redirect. */
    const getPlain = (url: URL, headers: Record<string, string>, redirects: number) => {
      const lines = [`GET ${url.pathname}${url.search} HTTP/1.1`, `host: ${url.host}`, 'connection: close'];
      for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
      if (lines.some((l) => /[\r\n]/.test(l))) return finish({ kind: 'unsupported', reason: 'a header with a line break', written, requests });
      let head: Buffer | undefined = Buffer.alloc(0);
      let body = false;
      let closed = false;
      const sock = net.connect({
        host: url.hostname.replace(/^\[|\]$/g, ''),
        port: Number(url.port || 80),
        onread: {
          buffer: Buffer.allocUnsafe(READ),
          callback: (n: number, buf: Uint8Array): boolean => {
            if (done || closed) return false;
            let c = Buffer.from(buf.buffer, buf.byteOffset, n);
            if (!body) {
              head = Buffer.concat([head!, c]);
              const end = head.indexOf('\r\n\r\n');
              if (end < 0) {
                if (head.length > MAX_HEAD) finish({ kind: 'unsupported', reason: 'response head over 64 KiB', written, requests });
                return !done;
              }
              const text = head.subarray(0, end).toString('latin1').split('\r\n');
              const m = /^HTTP\/1\.[01] (\d{3})/.exec(text[0] ?? '');
              const h = new Map<string, string>();
              for (const l of text.slice(1)) {
                const i = l.indexOf(':');
                if (i > 0) h.set(l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim());
              }
              const status = m ? Number(m[1]) : 0;
              c = head.subarray(end + 4);
              head = undefined;
              if (redirect(status, h.get('location'), url, headers, redirects)) {
                closed = true;
                sock.destroy();
                return false;
              }
              if (status !== 200) {
                finish({ kind: 'status', status, written, requests });
                return false;
              }
              const cl = h.get('content-length');
              if (h.has('transfer-encoding') || cl === undefined || !/^\d+$/.test(cl)) {
                finish({ kind: 'unsupported', reason: 'a response without a Content-Length', written, requests });
                return false;
              }
              if (Number(cl) !== job.size) {
                finish({ kind: 'size', written, requests });
                return false;
              }
              body = true;
            }
            return c.length === 0 || take(c);
          },
        },
      });
      requests++;
      stop = () => {
        closed = true;
        sock.destroy();
      };
      sock.setNoDelay(true);
      sock.setTimeout(300_000, () => sock.destroy(Object.assign(new Error('no data for 300 s'), { code: 'ETIMEDOUT' })));
      sock.on('connect', () => sock.write(`${lines.join('\r\n')}\r\n\r\n`));
      sock.on('error', (e) => !closed && netFail(e));
      sock.on('close', () => !closed && netFail(short()));
    };

    /** HTTPS (node:https, keep-alive agent): the same, reading the response's chunks. */
    const getTls = (url: URL, headers: Record<string, string>, redirects: number) => {
      // node:https (tls, http) loaded on the first HTTPS job, not at every worker's start (~10 ms of it)
      const https = req('node:https') as typeof import('node:https');
      const t = job.tls ?? { verify: true, cas: [] };
      // one keep-alive agent and SecureContext per TLS settings (a socket verified under one set of CAs is not
      // reused under another); the context as trust.ts's clientSecureContext makes it (no imports here):
      // Node's default store plus `cas` when verifying, an empty one when not
      const key = JSON.stringify([t.verify, t.cas, t.cert ?? '', t.key ?? '']);
      let a = agents.get(key);
      if (!a) {
        const tls = req('node:tls') as typeof import('node:tls');
        const secureContext = tls.createSecureContext({ ...(t.verify ? {} : { ca: [] }), cert: t.cert, key: t.key });
        if (t.verify) for (const pem of t.cas) (secureContext as unknown as { context: { addCACert(pem: string): void } }).context.addCACert(pem);
        a = { agent: new https.Agent({ keepAlive: true }), secureContext };
        agents.set(key, a);
      }
      requests++;
      let closed = false;
      const options = { headers, agent: a.agent, secureContext: a.secureContext, rejectUnauthorized: t.verify }; // (secureContext: tls.connect's)
      const r0 = https.get(url, options as import('node:https').RequestOptions, (res) => {
        if (redirect(res.statusCode ?? 0, res.headers.location, url, headers, redirects)) {
          closed = true;
          res.resume();
          return;
        }
        if (res.statusCode !== 200) return finish({ kind: 'status', status: res.statusCode ?? 0, written, requests });
        res.on('data', (c: Buffer) => take(c));
        res.on('error', (e) => !closed && netFail(e));
        res.on('close', () => !closed && netFail(short()));
      });
      stop = () => {
        closed = true;
        r0.destroy();
      };
      r0.setTimeout(300_000, () => r0.destroy(Object.assign(new Error('no data for 300 s'), { code: 'ETIMEDOUT' })));
      r0.on('error', (e) => !closed && netFail(e));
    };

    const get = (url: URL, headers: Record<string, string>, redirects: number) => {
      stop?.();
      if (url.protocol === 'http:') getPlain(url, headers, redirects);
      else if (url.protocol === 'https:') getTls(url, headers, redirects);
      else finish({ kind: 'unsupported', reason: `a ${url.protocol} URL`, written, requests });
    };

    aborts.set(job.id, () => finish({ kind: 'aborted', written, requests }));
    try {
      get(new URL(job.url), job.headers, 0);
    } catch (e) {
      netFail(e);
    }
  }
}

interface Slot {
  worker: Worker;
  jobs: number;
}

interface Pending {
  resolve: (r: BlobJobResult) => void;
  onProgress: ((n: number) => void) | undefined;
  slot: Slot;
}

/** A pool of blob download workers; jobs go to the least busy one (a worker runs any number at once). */
export class BlobWorkerPool {
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  constructor(readonly size: number) {}

  private spawn(): Slot {
    const worker = new Worker(`(${workerMain.toString()})(require)`, { eval: true, name: 'tsimage-blob' });
    const slot: Slot = { worker, jobs: 0 };
    worker.on('message', (m: FromWorker) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      if (m.type === 'progress') return p.onProgress?.(m.n);
      this.settle(m.id, m);
    });
    const die = (e: unknown) => {
      const i = this.slots.indexOf(slot);
      if (i >= 0) this.slots.splice(i, 1);
      for (const [id, p] of this.pending) if (p.slot === slot) this.settle(id, { kind: 'crash', message: e instanceof Error ? e.message : String(e) });
    };
    worker.on('error', die);
    worker.on('exit', (code) => die(new Error(`blob worker exited (${code})`)));
    // after the listeners: adding a 'message' listener refs the worker's port again (an idle worker would keep the
    // process alive)
    worker.unref();
    this.slots.push(slot);
    return slot;
  }

  private settle(id: number, r: BlobJobResult): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (--p.slot.jobs === 0) p.slot.worker.unref();
    p.resolve(r);
  }

  /** Run one download; resolves with its outcome (never rejects). An abort resolves after the worker stopped writing. */
  run(job: BlobJob, io: { signal?: AbortSignal | undefined; onProgress?: ((n: number) => void) | undefined } = {}): Promise<BlobJobResult> {
    if (this.closed) return Promise.resolve({ kind: 'crash', message: 'blob workers are closed' });
    let slot: Slot;
    try {
      slot = this.slots.length < this.size ? this.spawn() : this.slots.reduce((a, b) => (b.jobs < a.jobs ? b : a));
    } catch (e) {
      return Promise.resolve({ kind: 'crash', message: (e as Error).message });
    }
    const id = this.nextId++;
    if (slot.jobs++ === 0) slot.worker.ref();
    const signal = io.signal;
    return new Promise<BlobJobResult>((resolve) => {
      const onAbort = () => slot.worker.postMessage({ type: 'abort', id } satisfies ToWorker);
      this.pending.set(id, {
        resolve: (r) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(r);
        },
        onProgress: io.onProgress,
        slot,
      });
      slot.worker.postMessage({ type: 'get', id, ...job } satisfies ToWorker);
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Stop the workers (end of a command); running jobs resolve as crashed. */
  async close(): Promise<void> {
    this.closed = true;
    const ws = this.slots.splice(0).map((s) => s.worker);
    await Promise.all(ws.map((w) => w.terminate().catch(() => undefined)));
  }
}

let pool: BlobWorkerPool | undefined;

/**
 * The process's pool, or undefined when turned off: TSIMAGE_BLOB_WORKERS=N sets the number of workers (0: none,
 * every blob is read on the main thread); default: the number of cores, at most 4.
 */
export function blobWorkers(env: NodeJS.ProcessEnv = process.env): BlobWorkerPool | undefined {
  if (pool) return pool;
  const v = env.TSIMAGE_BLOB_WORKERS;
  const n = v !== undefined && /^\d+$/.test(v.trim()) ? Number(v) : Math.min(4, availableParallelism());
  if (n <= 0) return undefined;
  return (pool = new BlobWorkerPool(n));
}

/** Stop the pool's workers, if any were started. */
export async function closeBlobWorkers(): Promise<void> {
  const p = pool;
  pool = undefined;
  await p?.close();
}
