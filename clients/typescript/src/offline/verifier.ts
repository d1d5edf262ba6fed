/**
 * `OfflineGrantVerifier`: everything an app needs to accept a grant token without asking
 * the gate per request, and `SidecarFeed`, the sidecar's JWKS and revocation feed over
 * HTTP. The same contract as the Python `OfflineGrantVerifier` and `SidecarFeed`.
 */

import { GateClient, type GateClientOptions } from "../client.js";
import { GateError } from "../errors.js";
import type { Jwks } from "../types.js";
import { JwksCache } from "./jwks.js";
import type { RevocationList, RevocationPage } from "./revocations.js";
import { type GrantClaims, type GrantScope, grantHeader, refusal, verifyGrantToken } from "./tokens.js";

export interface OfflineGrantVerifierOptions {
  /** Accept grants with `max_uses` (their uses are then not counted; default false). */
  readonly allowCounted?: boolean;
  /** Seconds of clock skew tolerated at `nbf` and `exp` (default 0). */
  readonly leewayS?: number;
}

export interface VerifyArgs extends GrantScope {
  /** Default: the current time. */
  readonly now?: Date;
}

export class OfflineGrantVerifier {
  readonly revocations: RevocationList;
  readonly appId: string;
  readonly allowCounted: boolean;
  readonly leewayS: number;
  readonly #jwks: JwksCache | Jwks;

  constructor(jwks: JwksCache | Jwks, revocations: RevocationList, appId: string,
              options: OfflineGrantVerifierOptions = {}) {
    this.#jwks = jwks;
    this.revocations = revocations;
    this.appId = appId;
    this.allowCounted = options.allowCounted ?? false;
    this.leewayS = options.leewayS ?? 0;
  }

  /**
   * The token's claims when it lets this request through; otherwise rejects with a
   * `GateError`: a bad token, another app's token, an expired token, a revoked grant, a
   * stale revocation list, a scope that does not cover the request, and, unless
   * `allowCounted`, a grant with `max_uses` (only the gate can count uses exactly).
   */
  async verify(token: string, args: VerifyArgs): Promise<GrantClaims> {
    const jwks = this.#jwks instanceof JwksCache
      ? await this.#jwks.get(grantHeader(token).kid) : this.#jwks;
    const claims = await verifyGrantToken(token, {
      jwks, appId: this.appId, now: args.now, leewayS: this.leewayS });
    if (this.revocations.isRevoked(claims.gid)) {
      throw refusal("grant_revoked", "the grant was revoked");
    }
    if (claims.max_uses !== null && !this.allowCounted) {
      throw refusal("grant_counted_online", "a grant with a use limit must be checked by the gate");
    }
    if (!claims.covers(args)) {
      throw refusal("grant_not_covering", "the grant does not cover this request");
    }
    return claims;
  }
}

/**
 * The sidecar's JWKS and revocation feed: `new RevocationList(feed.revocations)` and
 * `new JwksCache(feed.jwks)`. The feed needs an API key with the `check` scope and lists
 * that key's app only. Given options rather than a client, it makes its own client with a
 * short timeout (default 2 000 ms).
 */
export class SidecarFeed {
  readonly client: GateClient;

  constructor(client: GateClient | GateClientOptions) {
    this.client = client instanceof GateClient
      ? client : new GateClient({ timeoutMs: 2_000, ...client });
  }

  readonly revocations = async (sinceEpoch: number): Promise<RevocationPage> => {
    const page = await this.client.revocations({ sinceEpoch });
    const revoked = page.revoked.map((entry) => entry["grant_id"]);
    if (!Number.isSafeInteger(page.epoch) || !revoked.every((id) => typeof id === "string")) {
      throw new GateError("the revocation feed's answer is malformed",
                          { code: "invalid_response" });
    }
    return { epoch: page.epoch, revoked: revoked as string[], more: page.more === true };
  };

  readonly jwks = (): Promise<Jwks> => this.client.jwks();
}
