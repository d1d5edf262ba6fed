/**
 * consent-gate-client/offline: verify grant tokens without calling the gate per request.
 *
 *     const feed = new SidecarFeed({ baseUrl, apiKey });          // a `check` key
 *     const revocations = new RevocationList(feed.revocations);   // fails closed when stale
 *     await revocations.refresh();
 *     revocations.start();
 *     const verifier = new OfflineGrantVerifier(new JwksCache(feed.jwks), revocations, appId);
 *     const claims = await verifier.verify(token, { operation: "face_swap", userId });
 *
 * This entry point (and only this one) needs the `jose` package: install it next to
 * `consent-gate-client` to use it.
 */

export { GateError } from "../errors.js";
export { JwksCache } from "./jwks.js";
export type { JwksCacheOptions } from "./jwks.js";
export { RevocationList } from "./revocations.js";
export type { FetchRevocations, RevocationListOptions, RevocationPage } from "./revocations.js";
export {
  ACCEPTED_ALGORITHMS,
  GrantClaims,
  MAX_TOKEN_CHARS,
  TOKEN_ERROR_CODES,
  TOKEN_TYPE,
  verifyGrantToken,
} from "./tokens.js";
export type { GrantScope, TokenErrorCode, VerifyGrantTokenOptions } from "./tokens.js";
export { OfflineGrantVerifier, SidecarFeed } from "./verifier.js";
export type { OfflineGrantVerifierOptions, VerifyArgs } from "./verifier.js";
export type { Jwk, Jwks } from "../types.js";
