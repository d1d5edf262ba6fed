/**
 * `JwksCache`: the gate's public keys, refetched (at most every `minRefetchS`) when a token
 * names a key id the cache does not hold, so a key rotation is picked up without a restart.
 * The same contract as the Python `gate.consent.tokens.JwksCache`.
 */

import { GateError } from "../errors.js";
import type { Jwks } from "../types.js";

export interface JwksCacheOptions {
  /** Least seconds between two refetches for an unknown key id (default 30). */
  readonly minRefetchS?: number;
  /** A monotonic clock in seconds (default `performance.now() / 1000`). */
  readonly clock?: () => number;
}

export class JwksCache {
  readonly #fetch: () => Promise<Jwks>;
  readonly #minRefetchS: number;
  readonly #clock: () => number;
  #jwks: Jwks = { keys: [] };
  #fetchedAt: number | null = null;
  #inflight: Promise<Jwks> | null = null;

  constructor(fetch: () => Promise<Jwks>, options: JwksCacheOptions = {}) {
    this.#fetch = fetch;
    this.#minRefetchS = options.minRefetchS ?? 30;
    this.#clock = options.clock ?? (() => performance.now() / 1000);
  }

  /** The keys; fetched the first time, and again for an unknown `kid` when due. */
  async get(kid?: string): Promise<Jwks> {
    if (this.#inflight !== null) return this.#inflight;
    const now = this.#clock();
    const known = this.#jwks.keys.some((k) => k.kid === kid);
    const due = this.#fetchedAt === null
      || (kid !== undefined && !known && now - this.#fetchedAt >= this.#minRefetchS);
    if (!due) return this.#jwks;
    this.#inflight = this.#load(now).finally(() => { this.#inflight = null; });
    return this.#inflight;
  }

  async #load(now: number): Promise<Jwks> {
    const jwks = await this.#fetch();
    if (typeof jwks !== "object" || jwks === null || !Array.isArray(jwks.keys)) {
      throw new GateError("the JWKS is malformed", { code: "invalid_response" });
    }
    this.#jwks = jwks;
    this.#fetchedAt = now;
    return jwks;
  }
}
