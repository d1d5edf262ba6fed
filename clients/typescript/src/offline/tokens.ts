/**
 * Grant tokens: compact JWS over Ed25519 that the gate signs and an app verifies offline
 * against the gate's JWKS. The same rules as the Python `gate.consent.tokens`:
 *
 * - header `{"alg": "Ed25519" | "EdDSA", "kid": ..., "typ": "gate-grant+jwt"}` (`EdDSA` is
 *   the older name of the same signature, RFC 8037; `Ed25519` the fully specified one);
 * - the key is the JWKS entry named by `kid`, an `OKP` / `Ed25519` key;
 * - `aud` must be the verifying app; `nbf <= now < exp` (with `leewayS`).
 *
 * Every refusal is a `GateError` whose `code` names the reason; messages never contain the
 * token. Signature verification is `jose`'s (`compactVerify`).
 */

import { compactVerify, decodeProtectedHeader, importJWK } from "jose";

import { GateError } from "../errors.js";
import type { Jwk, Jwks } from "../types.js";

export const ACCEPTED_ALGORITHMS: readonly string[] = ["Ed25519", "EdDSA"];
export const TOKEN_TYPE = "gate-grant+jwt";
export const MAX_TOKEN_CHARS = 8192;

/** Codes of a refused grant token (the Python `TokenInvalid` family). */
export const TOKEN_ERROR_CODES = [
  "token_invalid", // malformed, tampered with, or a key that does not verify it
  "token_unknown_key", // signed with a key id the JWKS does not hold
  "token_expired",
  "token_not_yet_valid",
  "token_wrong_audience", // issued to another app
  "grant_revoked", // revoked, its subject erased, or its uses spent
  "grant_not_covering", // valid, but its scope does not cover this request
  "grant_counted_online", // a grant with max_uses: only the gate can count uses
  "revocation_list_stale", // the revocation list is older than its bound: fail closed
] as const;

export type TokenErrorCode = (typeof TOKEN_ERROR_CODES)[number];

export function refusal(code: TokenErrorCode, message: string, cause?: unknown): GateError {
  return new GateError(message, { code, cause });
}

/** What a request asks of a grant (the scope half of the check). */
export interface GrantScope {
  readonly operation: string;
  /** Default `["general"]`. */
  readonly content?: readonly string[];
  readonly userId?: string | null;
  readonly purpose?: string | null;
}

/** What a verified grant token says. Times are Unix seconds (UTC). */
export class GrantClaims {
  /** Subject id. */
  readonly sub: string;
  /** Grant id. */
  readonly gid: string;
  /** Grantee app id. */
  readonly aud: string;
  /** Grantee user id (`null`: any user of the app). */
  readonly uid: string | null;
  readonly ops: readonly string[];
  readonly content: readonly string[];
  readonly purpose: string | null;
  readonly nbf: number;
  readonly exp: number;
  readonly iat: number;
  readonly max_uses: number | null;
  readonly kid: string;
  /** Consent formalities the grant records (`explicit_consent`...; empty when none). */
  readonly frm: readonly string[];

  constructor(fields: Omit<GrantClaims, "covers" | "frm"> & { frm?: readonly string[] }) {
    this.sub = fields.sub;
    this.gid = fields.gid;
    this.aud = fields.aud;
    this.uid = fields.uid;
    this.ops = Object.freeze([...fields.ops]);
    this.content = Object.freeze([...fields.content]);
    this.purpose = fields.purpose;
    this.nbf = fields.nbf;
    this.exp = fields.exp;
    this.iat = fields.iat;
    this.max_uses = fields.max_uses;
    this.kid = fields.kid;
    this.frm = Object.freeze([...(fields.frm ?? [])]);
    Object.freeze(this);
  }

  /** The same scope rule as the gate's `Grant.covers` (time and audience checked already):
   * the grant's user (if any) is the requester, the operation is granted, every content
   * category is granted, and the grant's purpose (if any) is the request's. */
  covers(scope: GrantScope): boolean {
    if (this.uid !== null && this.uid !== (scope.userId ?? null)) return false;
    const content = scope.content ?? ["general"];
    if (!this.ops.includes(scope.operation) || !content.every((c) => this.content.includes(c))) {
      return false;
    }
    return this.purpose === null || this.purpose === (scope.purpose ?? null);
  }
}

export interface GrantHeader {
  readonly alg: string;
  readonly kid: string;
}

/** The token's protected header, checked to be a grant token header (not verified yet). */
export function grantHeader(token: unknown): GrantHeader {
  if (typeof token !== "string" || token.length > MAX_TOKEN_CHARS
      || token.split(".").length !== 3) {
    throw refusal("token_invalid", "the grant token is malformed");
  }
  let header: Record<string, unknown>;
  try {
    header = decodeProtectedHeader(token);
  } catch (error) {
    throw refusal("token_invalid", "the grant token is malformed", error);
  }
  const { alg, kid, typ } = header;
  if (typeof alg !== "string" || !ACCEPTED_ALGORITHMS.includes(alg) || typeof kid !== "string"
      || typ !== TOKEN_TYPE) {
    throw refusal("token_invalid", "the grant token's header is not an Ed25519 grant header");
  }
  return { alg, kid };
}

async function keyFor(jwks: Jwks, kid: string, alg: string): Promise<CryptoKey | Uint8Array> {
  const keys: readonly Jwk[] = Array.isArray(jwks?.keys) ? jwks.keys : [];
  const entry = keys.find((k) => typeof k === "object" && k !== null && k.kid === kid);
  if (entry === undefined) {
    throw refusal("token_unknown_key", "the token was signed with a key the JWKS does not hold");
  }
  if (entry.kty !== "OKP" || entry.crv !== "Ed25519") {
    throw refusal("token_invalid", "the signing key is not an Ed25519 key");
  }
  try {
    // public members only; the entry's own "alg" is left out so either header name verifies
    return await importJWK({ kty: "OKP", crv: "Ed25519", x: entry.x as string }, alg);
  } catch (error) {
    throw refusal("token_invalid", "the signing key in the JWKS is malformed", error);
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function claimsFrom(payload: Uint8Array, kid: string): GrantClaims {
  const malformed = (cause?: unknown): GateError =>
    refusal("token_invalid", "the grant token's claims are malformed", cause);
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(payload));
  } catch (error) {
    throw malformed(error);
  }
  if (!isObject(raw)) throw malformed();
  const text = (name: string): string => {
    const value = raw[name];
    if (typeof value !== "string") throw malformed();
    return value;
  };
  const optionalText = (name: string): string | null => (raw[name] == null ? null : text(name));
  const integer = (name: string): number => {
    const value = raw[name];
    if (typeof value !== "number" || !Number.isSafeInteger(value)) throw malformed();
    return value;
  };
  const texts = (name: string): string[] => {
    const value = raw[name];
    if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) throw malformed();
    return value as string[];
  };
  return new GrantClaims({
    sub: text("sub"), gid: text("gid"), aud: text("aud"), uid: optionalText("uid"),
    ops: texts("ops"), content: texts("content"), purpose: optionalText("purpose"),
    nbf: integer("nbf"), exp: integer("exp"), iat: integer("iat"),
    max_uses: raw["max_uses"] == null ? null : integer("max_uses"), kid,
    frm: raw["frm"] == null ? [] : texts("frm"),
  });
}

export interface VerifyGrantTokenOptions {
  /** The gate's public keys (`/.well-known/jwks.json`). */
  readonly jwks: Jwks;
  /** The verifying app: the token's `aud` must be it. */
  readonly appId: string;
  /** Default: the current time. */
  readonly now?: Date;
  /** Seconds of clock skew tolerated at `nbf` and `exp` (default 0). */
  readonly leewayS?: number;
}

/** Unix seconds of `now`, as the gate counts them (truncated). */
export function unixSeconds(now: Date | undefined): number {
  return Math.trunc((now ?? new Date()).getTime() / 1000);
}

/**
 * Verify signature, key, audience and validity window; reject with a `GateError` whose code
 * is one of `TOKEN_ERROR_CODES`. Does not consult revocations (`RevocationList`) nor the
 * request's scope (`GrantClaims.covers`): `OfflineGrantVerifier` does all of it.
 */
export async function verifyGrantToken(token: string,
                                       options: VerifyGrantTokenOptions): Promise<GrantClaims> {
  const { alg, kid } = grantHeader(token);
  const key = await keyFor(options.jwks, kid, alg);
  let payload: Uint8Array;
  try {
    ({ payload } = await compactVerify(token, key, { algorithms: [alg] }));
  } catch (error) {
    throw refusal("token_invalid", "the grant token's signature does not verify", error);
  }
  const claims = claimsFrom(payload, kid);
  if (claims.aud !== options.appId) {
    throw refusal("token_wrong_audience", "the grant token was issued to another app");
  }
  const t = unixSeconds(options.now);
  const leeway = options.leewayS ?? 0;
  if (t + leeway < claims.nbf) throw refusal("token_not_yet_valid", "the grant token is not valid yet");
  if (t - leeway >= claims.exp) throw refusal("token_expired", "the grant token has expired");
  return claims;
}
