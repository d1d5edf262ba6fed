/**
 * `RevocationList`: the app's revoked grant ids, kept fresh by polling the gate's
 * revocation feed (`GET /v1/revocations?since_epoch=N`), answering only while fresh enough:
 * the same contract as the Python `gate.consent.tokens.RevocationList`.
 *
 * `freshAt` is when the last successful refresh was *sent*, so the list is known to hold
 * every revocation made before that moment. `isRevoked` throws `revocation_list_stale`
 * when that moment is more than `maxStalenessS` ago (or when no refresh succeeded yet).
 */

import { GateError } from "../errors.js";
import { refusal } from "./tokens.js";

/** One answer of the revocation feed. */
export interface RevocationPage {
  /** The newest epoch the answer covers. */
  readonly epoch: number;
  /** Grant ids revoked after the asked `sinceEpoch`. */
  readonly revoked: readonly string[];
  /** Another page follows (ask again from `epoch`). */
  readonly more?: boolean;
}

export type FetchRevocations = (sinceEpoch: number) => Promise<RevocationPage>;

export interface RevocationListOptions {
  /** Seconds after which the list refuses to answer (default 5). */
  readonly maxStalenessS?: number;
  /** Seconds between polls of `start()`; must be shorter than `maxStalenessS` (default 1). */
  readonly pollIntervalS?: number;
  /** A monotonic clock in seconds (default `performance.now() / 1000`). */
  readonly clock?: () => number;
  /** Told about each failed background refresh (the list ages and then fails closed). */
  readonly onError?: (error: unknown) => void;
}

const MAX_PAGES = 1000;

function monotonicSeconds(): number {
  return performance.now() / 1000;
}

function positive(value: number, name: string): number {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name} must be positive`);
  return value;
}

function checkedPage(page: unknown): RevocationPage {
  const p = page as Partial<RevocationPage> | null;
  if (typeof p !== "object" || p === null || !Number.isSafeInteger(p.epoch)
      || !Array.isArray(p.revoked) || !p.revoked.every((id) => typeof id === "string")) {
    throw new GateError("the revocation feed's answer is malformed",
                        { code: "invalid_response" });
  }
  return p as RevocationPage;
}

export class RevocationList {
  readonly maxStalenessS: number;
  readonly pollIntervalS: number;
  readonly #fetch: FetchRevocations;
  readonly #clock: () => number;
  readonly #onError: ((error: unknown) => void) | undefined;
  #epoch = 0;
  readonly #revoked = new Set<string>();
  #freshAt: number | null = null;
  #failures = 0;
  #inflight: Promise<number> | null = null;
  #generation = 0;
  #running = false;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(fetch: FetchRevocations, options: RevocationListOptions = {}) {
    this.maxStalenessS = positive(options.maxStalenessS ?? 5, "maxStalenessS");
    this.pollIntervalS = positive(options.pollIntervalS ?? 1, "pollIntervalS");
    if (this.pollIntervalS >= this.maxStalenessS) {
      throw new RangeError("pollIntervalS must be shorter than maxStalenessS");
    }
    this.#fetch = fetch;
    this.#clock = options.clock ?? monotonicSeconds;
    this.#onError = options.onError;
  }

  /** The newest epoch of the feed that the list holds. */
  get epoch(): number {
    return this.#epoch;
  }

  /** Background refreshes that failed since the last successful one. */
  get failures(): number {
    return this.#failures;
  }

  /** Seconds since the last successful refresh was sent (`Infinity` before the first). */
  ageS(): number {
    return this.#freshAt === null ? Infinity : this.#clock() - this.#freshAt;
  }

  /** Fetch what changed since the current epoch; resolves to the number of ids received. */
  async refresh(): Promise<number> {
    const sent = this.#clock();
    let epoch = this.#epoch;
    const added = new Set<string>();
    for (let i = 0; i < MAX_PAGES; i += 1) {
      const page = checkedPage(await this.#fetch(epoch));
      for (const id of page.revoked) added.add(id);
      epoch = Math.max(epoch, page.epoch);
      if (!page.more) break;
    }
    for (const id of added) this.#revoked.add(id);
    this.#epoch = Math.max(this.#epoch, epoch);
    if (this.#freshAt === null || sent > this.#freshAt) this.#freshAt = sent;
    this.#failures = 0;
    return added.size;
  }

  /** `refresh()` when the list is older than `pollIntervalS` (one refresh at a time): for
   * runtimes without background timers (edge functions), call it before `verify`. */
  async refreshIfDue(): Promise<void> {
    if (this.#inflight === null && this.ageS() < this.pollIntervalS) return;
    this.#inflight ??= this.refresh().finally(() => { this.#inflight = null; });
    await this.#inflight;
  }

  /** Whether `grantId` is revoked; throws `revocation_list_stale` when the list is too old. */
  isRevoked(grantId: string): boolean {
    if (this.ageS() > this.maxStalenessS) {
      throw refusal("revocation_list_stale", "the revocation list is too old to trust; refused");
    }
    return this.#revoked.has(grantId);
  }

  /** Poll every `pollIntervalS` in the background (the timer does not keep Node alive). */
  start(): this {
    if (this.#running) return this;
    this.#running = true;
    const generation = ++this.#generation;
    const tick = async (): Promise<void> => {
      try {
        await this.refresh();
      } catch (error) { // any fetch fault: the list ages, then fails closed
        this.#failures += 1;
        try {
          this.#onError?.(error);
        } catch {
          // the hook's own fault changes nothing
        }
      }
      if (this.#running && generation === this.#generation) {
        this.#timer = setTimeout(() => void tick(), this.pollIntervalS * 1000);
        (this.#timer as { unref?: () => void }).unref?.();
      }
    };
    void tick();
    return this;
  }

  stop(): void {
    this.#running = false;
    this.#generation += 1;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
