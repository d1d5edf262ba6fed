/**
 * `GateError`: the one error class of the client. Every failure (an error answer of the
 * sidecar, an unreachable sidecar, a timeout, an answer that is not what the API promises,
 * a grant token refused offline) is a `GateError` with a stable `code`. A caller treats
 * every error of `check` as "not allowed".
 */

/** Codes the client itself gives (the sidecar's own codes come from its answers). */
export const CLIENT_ERROR_CODES = [
  "network_error", // the sidecar could not be reached (refused, DNS, TLS, reset)
  "timeout", // no complete answer within `timeoutMs`
  "aborted", // the caller's `signal` aborted the call
  "invalid_response", // a 2xx answer that is not the JSON the API promises
  "invalid_request", // an argument the client cannot send (e.g. `data` of another type)
] as const;

export interface GateErrorOptions {
  /** A stable, machine-readable code: the sidecar's (`unauthorized`, `not_found`...) or the
   * client's (`network_error`, `timeout`...). */
  code: string;
  /** The HTTP status of the sidecar's answer; `0` when no HTTP answer was involved. */
  status?: number;
  /** The sidecar's request id (`X-Request-ID`), when it answered. */
  requestId?: string | null;
  cause?: unknown;
}

export class GateError extends Error {
  override readonly name = "GateError";
  readonly code: string;
  readonly status: number;
  readonly requestId: string | null;

  constructor(message: string, options: GateErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = options.code;
    this.status = options.status ?? 0;
    this.requestId = options.requestId ?? null;
  }
}
