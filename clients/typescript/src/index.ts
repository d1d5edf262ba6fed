/**
 * consent-gate-client: the consent-gate sidecar from TypeScript (Node >= 18, browsers, edge
 * runtimes), with no dependency beyond the platform's `fetch`. Offline verification of
 * grant tokens lives in `consent-gate-client/offline` (it needs `jose`).
 */

export { GateClient } from "./client.js";
export type { GateClientOptions } from "./client.js";
export { CLIENT_ERROR_CODES, GateError } from "./errors.js";
export type { GateErrorOptions } from "./errors.js";
export type * from "./types.js";
export type { components, paths } from "./generated/openapi.js";
