/**
 * Error classes shared by every module. Only src/cli maps them to exit codes;
 * messages name the thing (digest, path, line, expected vs got).
 */
export class TsimageError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Bad command-line usage or an invalid user-supplied value (exit code 2). */
export class UsageError extends TsimageError {}

/** Spec error codes with distribution's HTTP statuses (clients depend on them). */
export const OCI_ERROR_STATUS = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  RANGE_INVALID: 416,
  TAG_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  UNAVAILABLE: 503,
  UNKNOWN: 500,
  /** Not in the spec: a manifest body over the size limit (distribution answers 400 MANIFEST_INVALID). */
  PAYLOAD_TOO_LARGE: 413,
} as const satisfies Record<string, number>;

export type OciErrorCode = keyof typeof OCI_ERROR_STATUS;

/** An error in OCI terms: a spec code, an HTTP status and optional detail. */
export class OciError extends TsimageError {
  readonly code: OciErrorCode;
  readonly status: number;
  readonly detail: unknown;
  /** Client side: worth retrying (408/429/5xx, UNAVAILABLE, TOOMANYREQUESTS, connection resets). */
  readonly temporary: boolean;

  constructor(
    code: OciErrorCode,
    message: string,
    options?: { detail?: unknown; status?: number; temporary?: boolean; cause?: unknown },
  ) {
    super(message, options);
    this.code = code;
    this.status = options?.status ?? OCI_ERROR_STATUS[code];
    this.detail = options?.detail;
    this.temporary =
      options?.temporary ??
      (code === 'TOOMANYREQUESTS' || code === 'UNAVAILABLE' || this.status === 408 || this.status === 429 || this.status >= 500);
  }

  toJSON(): { code: string; message: string; detail?: unknown } {
    const out: { code: string; message: string; detail?: unknown } = { code: this.code, message: this.message };
    if (this.detail !== undefined) out.detail = this.detail;
    return out;
  }

  /** Wrap any error as an OciError (unknown errors become 500 UNKNOWN). */
  static from(err: unknown): OciError {
    if (err instanceof OciError) return err;
    if (err instanceof DigestMismatchError) return new OciError('DIGEST_INVALID', err.message, { cause: err });
    if (err instanceof SizeMismatchError) return new OciError('SIZE_INVALID', err.message, { cause: err });
    if (err instanceof ValidationError) return new OciError('MANIFEST_INVALID', err.message, { cause: err });
    const msg = err instanceof Error ? err.message : String(err);
    return new OciError('UNKNOWN', msg, { cause: err });
  }
}

/** Content did not hash to the expected digest. */
export class DigestMismatchError extends TsimageError {
  constructor(
    readonly expected: string,
    readonly actual: string,
    what = 'content',
  ) {
    super(`digest mismatch for ${what}: expected ${expected}, got ${actual}`);
  }
}

/** Content was not the expected length (too short, too long or over a limit). */
export class SizeMismatchError extends TsimageError {
  constructor(
    readonly expected: number,
    readonly actual: number,
    what = 'content',
    readonly kind: 'mismatch' | 'limit' = 'mismatch',
  ) {
    super(
      kind === 'limit'
        ? `${what} exceeds the size limit of ${expected} bytes`
        : `size mismatch for ${what}: expected ${expected} bytes, got ${actual}`,
    );
  }
}

/** A document (manifest, index, config, descriptor) failed validation; the message names the field path. */
export class ValidationError extends TsimageError {
  constructor(
    readonly path: string,
    problem: string,
  ) {
    super(path ? `${path}: ${problem}` : problem);
  }
}

/** A tar stream tried something unsafe (path traversal, link escape, device node without privilege...). */
export class TarSecurityError extends TsimageError {
  constructor(
    readonly entry: string,
    problem: string,
  ) {
    super(`unsafe tar entry ${JSON.stringify(entry)}: ${problem}`);
  }
}

/** A Dockerfile problem, located by file and line. */
export class DockerfileError extends TsimageError {
  constructor(
    message: string,
    readonly loc: { file: string; line: number },
  ) {
    super(`${loc.file}:${loc.line}: ${message}`);
  }
}

const SIGNAL_WORDS: Record<string, string> = {
  SIGKILL: 'killed (SIGKILL; out of memory or timeout?)',
  SIGTERM: 'terminated (SIGTERM)',
  SIGINT: 'interrupted (SIGINT)',
  SIGSEGV: 'crashed (SIGSEGV)',
};

/** A process in a build container failed: the exit code or the signal, in words. */
export class RunError extends TsimageError {
  constructor(
    readonly argv: string[],
    readonly exitCode: number | null,
    readonly signal: string | null,
  ) {
    super(`${JSON.stringify(argv)}: ${RunError.describe(exitCode, signal)}`);
  }

  static describe(exitCode: number | null, signal: string | null): string {
    if (signal) return SIGNAL_WORDS[signal] ?? `killed by ${signal}`;
    if (exitCode === 126) return 'exit code 126 (command not executable)';
    if (exitCode === 127) return 'exit code 127 (command not found)';
    if (exitCode === 137) return 'exit code 137 (killed; out of memory?)';
    return `exit code ${exitCode}`;
  }
}
