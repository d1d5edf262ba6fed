/**
 * `GateClient`: the consent-gate sidecar over HTTP, with the operations of the Python
 * `gate.client.GateClient`. It needs nothing but the platform's `fetch`.
 *
 *     const gate = new GateClient({ baseUrl: "http://127.0.0.1:8080", apiKey: "gk_..." });
 *     const decision = await gate.check({ operation: "face_swap",
 *                                         images: [{ role: "target", data: bytes }] });
 *
 * The requesting app is the API key's app (a body never names it); `userId` is sent.
 * Every failure rejects with a `GateError`; nothing here ever answers "allow" on its own.
 */

import { toBase64 } from "./encoding.js";
import { GateError } from "./errors.js";
import type { components, paths } from "./generated/openapi.js";
import type {
  AuditPage,
  AuditVerification,
  CallOptions,
  CheckArgs,
  CheckOutputArgs,
  ConsentRequest,
  ConsentRequestArgs,
  ConsentRequestCreated,
  Decision,
  EnrollArgs,
  Grant,
  GrantArgs,
  ImageContent,
  Jwks,
  LabelOutputArgs,
  Readiness,
  Report,
  ReportArgs,
  RevocationsAnswer,
  Subject,
  SubjectStatus,
  Trace,
} from "./types.js";

type Schemas = components["schemas"];
/** A request body of the API. Every field the client sends must exist there with its type,
 * so a renamed, removed or retyped field fails the build; a field the API adds (with a
 * default) does not, until the client chooses to send it. */
type Body<Name extends keyof Schemas> = Partial<Schemas[Name]>;
type Method = "GET" | "POST" | "DELETE";
type Query = Record<string, string | number | undefined>;

export interface GateClientOptions {
  /** The sidecar's base URL, e.g. `http://127.0.0.1:8080` (a path prefix is kept). */
  readonly baseUrl: string;
  /** An API key from `gate keys create`: `gk_...` (`check` scope for apps). */
  readonly apiKey: string;
  /** Milliseconds a call may take, answer body included (default 30 000). */
  readonly timeoutMs?: number;
  /** A `fetch` to use instead of the global one. */
  readonly fetch?: typeof fetch;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const VERDICTS: ReadonlySet<unknown> = new Set(["allow", "needs_consent", "deny"]);

/** `template` (a path of the OpenAPI document, so a renamed route fails the build) with its
 * `{params}` filled in. */
function route(template: keyof paths, params: Readonly<Record<string, string>> = {}): string {
  return template.replace(/\{(\w+)\}/g, (_, name: string) => {
    const value = params[name];
    if (typeof value !== "string" || value === "") {
      throw new GateError(`${name} must be a non-empty string`, { code: "invalid_request" });
    }
    return encodeURIComponent(value);
  });
}

function isoTime(value: Date | string | undefined): string | null {
  if (value === undefined) return null;
  return value instanceof Date ? value.toISOString() : value;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function checkTimeout(ms: number, what: string): number {
  if (!Number.isFinite(ms) || ms <= 0) throw new RangeError(`${what} must be a positive number`);
  return ms;
}

export class GateClient {
  /** The sidecar's base URL, without a trailing slash. */
  readonly baseUrl: string;
  readonly timeoutMs: number;
  readonly #authorization: string;
  readonly #fetch: typeof fetch;

  constructor(options: GateClientOptions) {
    const base = new URL(options.baseUrl); // throws a TypeError on a malformed URL
    if (base.protocol !== "http:" && base.protocol !== "https:") {
      throw new TypeError("baseUrl must be an http(s) URL");
    }
    if (typeof options.apiKey !== "string" || options.apiKey === "") {
      throw new TypeError("apiKey must be a non-empty string");
    }
    this.baseUrl = `${base.origin}${base.pathname.replace(/\/+$/, "")}`;
    this.timeoutMs = checkTimeout(options.timeoutMs ?? DEFAULT_TIMEOUT_MS, "timeoutMs");
    this.#authorization = `Bearer ${options.apiKey}`;
    const custom = options.fetch;
    this.#fetch = custom ?? ((input, init) => fetch(input, init));
  }

  // -- decisions ------------------------------------------------------------------------
  /** Decide `allow` / `needs_consent` / `deny` for a generation request with images. */
  async check(args: CheckArgs, options?: CallOptions): Promise<Decision> {
    const images = await Promise.all((args.images ?? []).map(async (image, i) => ({
      role: image.role, data_b64: await toBase64(image.data, `images[${i}].data`),
    })));
    const body: Body<"CheckBody"> = {
      operation: args.operation, images, prompt: args.prompt ?? "",
      negative_prompt: args.negativePrompt ?? "", content: args.content ?? ["general"],
      purpose: args.purpose ?? null, user_id: args.userId ?? null,
      request_id: args.requestId ?? null,
    };
    return this.#decision(await this.#call("POST", route("/v1/check"), { body }, options));
  }

  /** Screen a generated image; the answer can only tighten the input decision. */
  async checkOutput(args: CheckOutputArgs, options?: CallOptions): Promise<Decision> {
    const body: Body<"CheckOutputBody"> = {
      image_b64: await toBase64(args.image, "image"), request_id: args.requestId,
      operation: args.operation ?? "txt2img", content: args.content ?? ["general"],
      prompt: args.prompt ?? "", user_id: args.userId ?? null,
    };
    return this.#decision(await this.#call("POST", route("/v1/check-output"), { body },
                                           options));
  }

  // -- incident response -------------------------------------------------------------------
  /** The output of an allowed request, marked (what `trace` reads) and labelled: the
   * implicit AI labels, and the visible label or C2PA manifest its policy asks for. */
  async labelOutput(args: LabelOutputArgs, options?: CallOptions): Promise<Uint8Array> {
    const body: Body<"LabelOutputBody"> = {
      image_b64: await toBase64(args.image, "image"), request_id: args.requestId,
      locale: args.locale ?? null,
    };
    const answer = await this.#call("POST", route("/v1/label-output"),
                                    { body, binary: true }, options);
    if (!(answer instanceof Uint8Array)) throw this.#invalid("an image");
    return answer;
  }

  /** Where did this image come from? Its request and audit record (admin scope), or
   * `found: false` for an image this gate never marked. */
  async trace(image: ImageContent, options?: CallOptions): Promise<Trace> {
    const body: Body<"TraceBody"> = { image_b64: await toBase64(image, "image") };
    return this.#object(await this.#call("POST", route("/v1/trace"), { body }, options));
  }

  /** A takedown report: its hashes are blocked at once, a trace runs, the deadline is set
   * (48 hours by default). */
  async report(args: ReportArgs, options?: CallOptions): Promise<Report> {
    const body: Body<"ReportBody"> = {
      image_b64: args.image === undefined ? null : await toBase64(args.image, "image"),
      pdq: [...(args.pdq ?? [])], reason: args.reason ?? "ncii",
      subject_id: args.subjectId ?? null, contact: args.contact ?? null,
    };
    return this.#object(await this.#call("POST", route("/v1/reports"), { body }, options));
  }

  // -- subjects (admin scope) -------------------------------------------------------------
  /** Enrol a person from photos that each show exactly one face. */
  async enroll(args: EnrollArgs, options?: CallOptions): Promise<Subject> {
    const images = await Promise.all(args.images.map((data, i) => toBase64(data, `images[${i}]`)));
    const body: Body<"EnrollBody"> = {
      images_b64: images, display_name: args.displayName, status: args.status ?? "protected",
      owner_user_id: args.ownerUserId ?? null, aliases: args.aliases ?? [],
      guardian: args.guardian ?? false,
    };
    return this.#object(await this.#call("POST", route("/v1/subjects"), { body }, options));
  }

  async getSubject(subjectId: string, options?: CallOptions): Promise<Subject> {
    const path = route("/v1/subjects/{subject_id}", { subject_id: subjectId });
    return this.#object(await this.#call("GET", path, {}, options));
  }

  async listSubjects(options?: CallOptions): Promise<Subject[]> {
    return this.#list(await this.#call("GET", route("/v1/subjects"), {}, options));
  }

  /** `protected` (opt-out: never generate me) or `consenting`. */
  async setStatus(subjectId: string, status: SubjectStatus,
                  options?: CallOptions): Promise<Subject> {
    const path = route("/v1/subjects/{subject_id}/status", { subject_id: subjectId });
    const body: Body<"StatusBody"> = { status };
    return this.#object(await this.#call("POST", path, { body }, options));
  }

  /** Erase the subject: templates, grants and index entries (the audit keeps hashes). */
  async erase(subjectId: string, options?: CallOptions): Promise<true> {
    const path = route("/v1/subjects/{subject_id}", { subject_id: subjectId });
    await this.#call("DELETE", path, {}, options);
    return true;
  }

  /** A one-time portal sign-in link for the subject (deliver it to them privately). */
  async portalLink(subjectId: string, options?: CallOptions): Promise<{ url: string }> {
    const path = route("/v1/subjects/{subject_id}/portal-link", { subject_id: subjectId });
    const answer = this.#object<Record<string, unknown>>(
      await this.#call("POST", path, {}, options));
    if (typeof answer["url"] !== "string") throw this.#invalid("a portal link");
    return { url: answer["url"] };
  }

  // -- grants (admin scope) ---------------------------------------------------------------
  /** Record a subject's consent for a grantee app; the answer carries its signed token. */
  async grant(args: GrantArgs, options?: CallOptions): Promise<Grant> {
    const body: Body<"GrantBody"> = {
      subject_id: args.subjectId, app_id: args.appId, operations: args.operations,
      content: args.content ?? ["general"], user_id: args.userId ?? null,
      purpose: args.purpose ?? null, not_before: isoTime(args.notBefore),
      expires_at: isoTime(args.expiresAt), max_uses: args.maxUses ?? null,
    };
    return this.#object(await this.#call("POST", route("/v1/grants"), { body }, options));
  }

  /** Revoke at once: every replica refuses the grant from its next decision on. */
  async revoke(grantId: string, options?: CallOptions): Promise<Grant> {
    const path = route("/v1/grants/{grant_id}", { grant_id: grantId });
    return this.#object(await this.#call("DELETE", path, {}, options));
  }

  /** Every grant, or one subject's (`listGrants("sub_...")` or `{ subjectId }`). */
  async listGrants(filter: string | { readonly subjectId?: string } = {},
                   options?: CallOptions): Promise<Grant[]> {
    const query = { subject_id: typeof filter === "string" ? filter : filter.subjectId };
    return this.#list(await this.#call("GET", route("/v1/grants"), { query }, options));
  }

  // -- audit (admin scope) ----------------------------------------------------------------
  /** Audit events after sequence number `since` (pass `next_since` to read on). */
  async audit(page: { readonly since?: number; readonly limit?: number } = {},
              options?: CallOptions): Promise<AuditPage> {
    const query = { since: page.since ?? 0, limit: page.limit ?? 100 };
    return this.#object(await this.#call("GET", route("/v1/audit"), { query }, options));
  }

  /** Walk the whole hash chain; `ok` is false at the first edited or missing event. */
  async verifyAudit(options?: CallOptions): Promise<AuditVerification> {
    return this.#object(await this.#call("POST", route("/v1/audit/verify"), {}, options));
  }

  // -- consent requests, grant tokens, revocations (check scope) ----------------------------
  /** Ask the person of a `needs_consent` face; forward the answer's `link` to them. */
  async createConsentRequest(args: ConsentRequestArgs,
                             options?: CallOptions): Promise<ConsentRequestCreated> {
    const body: Body<"ConsentRequestBody"> = {
      image: await toBase64(args.image, "image"), bbox: args.bbox ? [...args.bbox] : null,
      operation: args.operation, content: args.content ?? ["general"],
      purpose: args.purpose ?? null, user_id: args.userId ?? null,
      decision_request_id: args.decisionRequestId ?? null, face_ref: args.faceRef ?? null,
      expires_in_s: args.expiresInS ?? null, grant_ttl_s: args.grantTtlS ?? null,
      max_uses: args.maxUses ?? null,
    };
    return this.#object(await this.#call("POST", route("/v1/consent-requests"), { body },
                                         options));
  }

  /** Poll a request: `pending`, `granted` (with `grant_token`), `refused` or `expired`. */
  async getConsentRequest(requestId: string, options?: CallOptions): Promise<ConsentRequest> {
    const path = route("/v1/consent-requests/{request_id}", { request_id: requestId });
    return this.#object(await this.#call("GET", path, {}, options));
  }

  /** A fresh signed token (`token`) for one of this app's active grants. */
  async grantToken(grantId: string, options?: CallOptions): Promise<Grant> {
    const path = route("/v1/grants/{grant_id}/token", { grant_id: grantId });
    return this.#object(await this.#call("GET", path, {}, options));
  }

  /** This app's grants revoked (or erased, or used up) after `sinceEpoch`. */
  async revocations(page: { readonly sinceEpoch?: number; readonly limit?: number } = {},
                    options?: CallOptions): Promise<RevocationsAnswer> {
    const query = { since_epoch: page.sinceEpoch ?? 0, limit: page.limit };
    return this.#object(await this.#call("GET", route("/v1/revocations"), { query }, options));
  }

  /** The public keys that verify grant tokens (no API key needed). */
  async jwks(options?: CallOptions): Promise<Jwks> {
    const answer = this.#object<Jwks>(
      await this.#call("GET", route("/.well-known/jwks.json"), { auth: false }, options));
    if (!Array.isArray(answer.keys)) throw this.#invalid("a JWKS");
    return answer;
  }

  // -- health -----------------------------------------------------------------------------
  /** The readiness checks; a not-ready sidecar rejects with code `not_ready` (503). */
  async readiness(options?: CallOptions): Promise<Readiness> {
    return this.#object(await this.#call("GET", route("/readyz"), { auth: false }, options));
  }

  // -- plumbing ---------------------------------------------------------------------------
  async #call(method: Method, path: string,
              request: { body?: unknown; query?: Query; auth?: boolean; binary?: boolean },
              options: CallOptions = {}): Promise<unknown> {
    const timeoutMs = checkTimeout(options.timeoutMs ?? this.timeoutMs, "timeoutMs");
    const headers: Record<string, string> = {
      accept: request.binary ? "image/*, application/json" : "application/json" };
    if (request.auth !== false) headers["authorization"] = this.#authorization;
    if (request.body !== undefined) headers["content-type"] = "application/json";
    const url = `${this.baseUrl}${path}${queryString(request.query)}`;

    const controller = new AbortController();
    const outer = options.signal;
    if (outer?.aborted) throw aborted(outer.reason);
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; controller.abort(); }, timeoutMs);
    const onAbort = (): void => controller.abort();
    outer?.addEventListener("abort", onAbort, { once: true });
    let response: Response;
    let text = "";
    let bytes: Uint8Array | undefined;
    try {
      response = await this.#fetch(url, {
        method, headers, signal: controller.signal,
        body: request.body === undefined ? null : JSON.stringify(request.body),
      });
      // the body is read under the same deadline
      if (request.binary && response.ok) bytes = new Uint8Array(await response.arrayBuffer());
      else text = await response.text();
    } catch (error) {
      if (timedOut) {
        throw new GateError(`the gate did not answer within ${timeoutMs} ms`,
                            { code: "timeout", cause: error });
      }
      if (outer?.aborted) throw aborted(error);
      throw new GateError(`the gate at ${this.baseUrl} could not be reached`,
                          { code: "network_error", cause: error });
    } finally {
      clearTimeout(timer);
      outer?.removeEventListener("abort", onAbort);
    }
    const requestId = response.headers.get("x-request-id");
    if (!response.ok) throw errorFrom(response.status, text, requestId);
    if (bytes !== undefined) return bytes;
    if (text === "") return undefined;
    try {
      return JSON.parse(text) as unknown;
    } catch (error) {
      throw new GateError("the gate's answer is not JSON", {
        code: "invalid_response", status: response.status, requestId, cause: error });
    }
  }

  #decision(value: unknown): Decision {
    if (!isObject(value) || !VERDICTS.has(value["verdict"]) || !Array.isArray(value["reasons"])
        || !Array.isArray(value["faces"]) || typeof value["request_id"] !== "string") {
      throw this.#invalid("a decision");
    }
    return value as unknown as Decision;
  }

  #object<T>(value: unknown): T {
    if (!isObject(value)) throw this.#invalid("an object");
    return value as T;
  }

  #list<T>(value: unknown): T[] {
    if (!Array.isArray(value) || !value.every(isObject)) throw this.#invalid("a list");
    return value as T[];
  }

  #invalid(what: string): GateError {
    return new GateError(`the gate's answer is not ${what}`, { code: "invalid_response" });
  }
}

function queryString(query: Query | undefined): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined) params.set(name, String(value));
  }
  const text = params.toString();
  return text === "" ? "" : `?${text}`;
}

function aborted(cause: unknown): GateError {
  return new GateError("the call was aborted", { code: "aborted", cause });
}

/** The `GateError` of an error answer: the sidecar's `{"error": {code, message,
 * request_id}}`, or (from a proxy in between, say) `http_<status>`. */
function errorFrom(status: number, text: string, requestId: string | null): GateError {
  try {
    const parsed: unknown = JSON.parse(text);
    const error = isObject(parsed) ? parsed["error"] : undefined;
    if (isObject(error) && typeof error["code"] === "string"
        && typeof error["message"] === "string") {
      const id = typeof error["request_id"] === "string" ? error["request_id"] : requestId;
      return new GateError(error["message"], { code: error["code"], status, requestId: id });
    }
  } catch {
    // not JSON: fall through to the status
  }
  return new GateError(`the gate answered HTTP ${status}`,
                       { code: `http_${status}`, status, requestId });
}

