/** Offline grant-token verification: the sidecar's real tokens and feed, and local keys for
 * the header, key, claim, time and staleness rules (the Python verifier's contract). */

import assert from "node:assert/strict";
import { test } from "node:test";

import { GateClient, GateError } from "consent-gate-client";
import {
  GrantClaims,
  JwksCache,
  OfflineGrantVerifier,
  RevocationList,
  SidecarFeed,
  TOKEN_TYPE,
  verifyGrantToken,
  type Jwks,
  type RevocationPage,
} from "consent-gate-client/offline";
import { CompactSign, exportJWK, generateKeyPair } from "jose";

import { needsSidecar, theSidecar } from "./support.js";

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof GateError, `not a GateError: ${String(error)}`);
    assert.ok(!error.message.includes("eyJ"), "a message must not echo the token");
    return error.code;
  }
  assert.fail("expected a GateError");
}

function thrownCode(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof GateError);
    return error.code;
  }
  assert.fail("expected a GateError");
}

// -- against the real sidecar ---------------------------------------------------------------
function feedFor(apiKey: string): SidecarFeed {
  return new SidecarFeed({ baseUrl: theSidecar().url, apiKey });
}

test("a sidecar token verifies offline; a revoked grant's token is refused",
     { skip: needsSidecar }, async () => {
  const s = theSidecar();
  const feed = feedFor(s.checkKey);
  const revocations = new RevocationList(feed.revocations);
  assert.ok((await revocations.refresh()) >= 1);
  const verifier = new OfflineGrantVerifier(new JwksCache(feed.jwks), revocations, s.appId);

  const claims = await verifier.verify(s.grantToken, { operation: "face_swap" });
  assert.equal(claims.gid, s.grantId);
  assert.equal(claims.sub, s.consentingSubjectId);
  assert.equal(claims.aud, s.appId);
  assert.deepEqual(claims.ops, ["face_swap"]);

  // the revoked grant's token is still well signed: the revocation list refuses it
  const jwks = await feed.jwks();
  assert.equal((await verifyGrantToken(s.revokedToken, { jwks, appId: s.appId })).gid,
               s.revokedGrantId);
  assert.equal(await codeOf(verifier.verify(s.revokedToken, { operation: "face_swap" })),
               "grant_revoked");

  assert.equal(await codeOf(verifier.verify(s.grantToken, { operation: "nudify" })),
               "grant_not_covering");
  assert.equal(await codeOf(verifier.verify(s.grantToken, {
    operation: "face_swap", content: ["general", "sexual"] })), "grant_not_covering");
  const other = new OfflineGrantVerifier(jwks, revocations, "another-app");
  assert.equal(await codeOf(other.verify(s.grantToken, { operation: "face_swap" })),
               "token_wrong_audience");
});

test("a stale revocation list fails closed, by the staleness bound", { skip: needsSidecar },
     async () => {
  const s = theSidecar();
  const feed = feedFor(s.checkKey);
  let now = 1000;
  const revocations = new RevocationList(feed.revocations, {
    maxStalenessS: 5, pollIntervalS: 1, clock: () => now });
  const verifier = new OfflineGrantVerifier(await feed.jwks(), revocations, s.appId);
  const swap = { operation: "face_swap" };
  assert.equal(await codeOf(verifier.verify(s.grantToken, swap)), "revocation_list_stale");
  await revocations.refresh();
  now += 5; // exactly at the bound: still fresh
  assert.equal((await verifier.verify(s.grantToken, swap)).gid, s.grantId);
  now += 0.001;
  assert.equal(await codeOf(verifier.verify(s.grantToken, swap)), "revocation_list_stale");
  await revocations.refresh();
  assert.equal((await verifier.verify(s.grantToken, swap)).gid, s.grantId);
});

test("a revocation reaches a polling list; a dead feed ages it into refusal",
     { skip: needsSidecar }, async () => {
  const s = theSidecar();
  const admin = new GateClient({ baseUrl: s.url, apiKey: s.adminKey });
  const grant = await admin.grant({ subjectId: s.consentingSubjectId, appId: s.appId,
                                    operations: ["img2img"] });
  const token = grant.token ?? assert.fail("no token");
  const feed = feedFor(s.checkKey);
  const revocations = new RevocationList(feed.revocations, { maxStalenessS: 2,
                                                             pollIntervalS: 0.1 });
  await revocations.refresh();
  revocations.start();
  try {
    const verifier = new OfflineGrantVerifier(new JwksCache(feed.jwks), revocations, s.appId);
    assert.equal((await verifier.verify(token, { operation: "img2img" })).gid, grant.grant_id);
    await admin.revoke(grant.grant_id);
    const deadline = Date.now() + 5000;
    while (!revocations.isRevoked(grant.grant_id) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(await codeOf(verifier.verify(token, { operation: "img2img" })), "grant_revoked");
  } finally {
    revocations.stop();
  }

  const errors: unknown[] = [];
  const dead = new RevocationList(async () => { throw new Error("feed down"); },
                                  { onError: (e) => errors.push(e) });
  dead.start();
  await new Promise((resolve) => setTimeout(resolve, 20));
  dead.stop();
  assert.ok(dead.failures >= 1 && errors.length >= 1);
  assert.equal(thrownCode(() => dead.isRevoked("gr_any")), "revocation_list_stale");
});

test("a counted grant needs the gate, unless allowed", { skip: needsSidecar }, async () => {
  const s = theSidecar();
  const admin = new GateClient({ baseUrl: s.url, apiKey: s.adminKey });
  const grant = await admin.grant({ subjectId: s.consentingSubjectId, appId: s.appId,
                                    operations: ["face_swap"], maxUses: 2 });
  const token = grant.token ?? assert.fail("no token");
  const feed = feedFor(s.checkKey);
  const revocations = new RevocationList(feed.revocations);
  await revocations.refresh();
  const jwks = new JwksCache(feed.jwks);
  const strict = new OfflineGrantVerifier(jwks, revocations, s.appId);
  assert.equal(await codeOf(strict.verify(token, { operation: "face_swap" })),
               "grant_counted_online");
  const lenient = new OfflineGrantVerifier(jwks, revocations, s.appId, { allowCounted: true });
  assert.equal((await lenient.verify(token, { operation: "face_swap" })).max_uses, 2);
});

// -- local keys: the token rules ------------------------------------------------------------
async function issuer(kid = "k1") {
  const { publicKey, privateKey } = await generateKeyPair("Ed25519");
  const jwk = { kty: "OKP", ...(await exportJWK(publicKey)), kid, alg: "Ed25519", use: "sig" };
  const jwks: Jwks = { keys: [jwk] };
  const sign = (claims: object, header: Record<string, unknown> = {}): Promise<string> =>
    new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
      .setProtectedHeader({ alg: "Ed25519", kid, typ: TOKEN_TYPE, ...header })
      .sign(privateKey);
  return { jwks, sign, kid };
}

const T0 = 1_800_000_000;
const AT = new Date(T0 * 1000);
function claimsAt(over: Record<string, unknown> = {}): Record<string, unknown> {
  return { sub: "sub_1", gid: "gr_1", aud: "studio", uid: null, ops: ["face_swap"],
           content: ["general"], purpose: null, nbf: T0 - 10, exp: T0 + 60, iat: T0 - 10,
           max_uses: null, ...over };
}

test("both header names of the Ed25519 signature verify; other headers do not", async () => {
  const { jwks, sign } = await issuer();
  const opts = { jwks, appId: "studio", now: AT };
  const claims = await verifyGrantToken(await sign(claimsAt()), opts);
  assert.deepEqual([claims.gid, claims.sub, claims.uid, claims.max_uses, claims.frm],
                   ["gr_1", "sub_1", null, null, []]);
  const formal = await sign(claimsAt({ frm: ["explicit_consent"], uid: "u1", max_uses: 3 }));
  const withFrm = await verifyGrantToken(formal, opts);
  assert.deepEqual([withFrm.frm, withFrm.uid, withFrm.max_uses], [["explicit_consent"], "u1", 3]);
  assert.equal((await verifyGrantToken(await sign(claimsAt(), { alg: "EdDSA" }), opts)).kid, "k1");
  for (const header of [{ typ: "JWT" }, { typ: undefined }, { kid: 7 }]) {
    assert.equal(await codeOf(verifyGrantToken(await sign(claimsAt(), header), opts)),
                 "token_invalid", JSON.stringify(header));
  }
  const body = (token: string): string => token.split(".").slice(1).join(".");
  const hs256 = Buffer.from(JSON.stringify({ alg: "HS256", kid: "k1", typ: TOKEN_TYPE }))
    .toString("base64url");
  const none = Buffer.from(JSON.stringify({ alg: "none", kid: "k1", typ: TOKEN_TYPE }))
    .toString("base64url");
  const good = await sign(claimsAt());
  assert.equal(await codeOf(verifyGrantToken(`${hs256}.${body(good)}`, opts)), "token_invalid");
  assert.equal(await codeOf(verifyGrantToken(`${none}.${body(good).split(".")[0]}.`, opts)),
               "token_invalid");
});

test("tampered, malformed, unknown-key and wrong-key tokens are refused", async () => {
  const { jwks, sign } = await issuer();
  const other = await issuer("k2");
  const opts = { jwks, appId: "studio", now: AT };
  const good = await sign(claimsAt());
  const [h, p, sig] = good.split(".") as [string, string, string];
  const forged = Buffer.from(JSON.stringify(claimsAt({ ops: ["nudify"] }))).toString("base64url");
  assert.equal(await codeOf(verifyGrantToken(`${h}.${forged}.${sig}`, opts)), "token_invalid");
  for (const bad of ["", "a.b", "a.b.c.d", "x".repeat(9000), `${h}.${p}`, "é.é.é"]) {
    assert.equal(await codeOf(verifyGrantToken(bad, opts)), "token_invalid");
  }
  assert.equal(await codeOf(verifyGrantToken(await other.sign(claimsAt()), opts)),
               "token_unknown_key");
  // the right kid, another key's signature
  const swapped = { keys: [{ ...other.jwks.keys[0], kid: "k1" }] } as Jwks;
  assert.equal(await codeOf(verifyGrantToken(good, { ...opts, jwks: swapped })), "token_invalid");
  const notEd = { keys: [{ kty: "EC", crv: "P-256", kid: "k1", x: "a", y: "b" }] };
  assert.equal(await codeOf(verifyGrantToken(good, { ...opts, jwks: notEd })), "token_invalid");
  for (const over of [{ ops: "face_swap" }, { nbf: "1" }, { sub: 1 }, { exp: 1.5 },
                      { frm: "explicit_consent" }, { uid: 7 }, { aud: undefined }]) {
    assert.equal(await codeOf(verifyGrantToken(await sign(claimsAt(over)), opts)),
                 "token_invalid", JSON.stringify(over));
  }
});

test("audience and validity window, with leeway", async () => {
  const { jwks, sign } = await issuer();
  const token = await sign(claimsAt());
  const at = (s: number): Date => new Date(s * 1000);
  assert.equal(await codeOf(verifyGrantToken(token, { jwks, appId: "other", now: AT })),
               "token_wrong_audience");
  const ok = { jwks, appId: "studio" };
  assert.equal((await verifyGrantToken(token, { ...ok, now: at(T0 - 10) })).nbf, T0 - 10);
  assert.equal(await codeOf(verifyGrantToken(token, { ...ok, now: at(T0 - 11) })),
               "token_not_yet_valid");
  assert.equal(await codeOf(verifyGrantToken(token, { ...ok, now: at(T0 + 60) })),
               "token_expired");
  assert.equal((await verifyGrantToken(token, { ...ok, now: at(T0 + 59.9) })).exp, T0 + 60);
  assert.equal((await verifyGrantToken(token, { ...ok, now: at(T0 + 64), leewayS: 5 })).gid,
               "gr_1");
  assert.equal((await verifyGrantToken(token, { ...ok, now: at(T0 - 14), leewayS: 5 })).gid,
               "gr_1");
});

test("scope: the same rule as the gate's Grant.covers", () => {
  const base = { sub: "s", gid: "g", aud: "a", uid: null, ops: ["face_swap", "img2img"],
                 content: ["general", "violent"], purpose: null, nbf: 0, exp: 1, iat: 0,
                 max_uses: null, kid: "k" };
  const any = new GrantClaims(base);
  assert.ok(any.covers({ operation: "face_swap" }));
  assert.ok(any.covers({ operation: "img2img", content: ["violent"], userId: "u" }));
  assert.ok(any.covers({ operation: "img2img", content: [] }));
  assert.ok(!any.covers({ operation: "nudify" }));
  assert.ok(!any.covers({ operation: "face_swap", content: ["general", "sexual"] }));
  const mine = new GrantClaims({ ...base, uid: "u1", purpose: "ads" });
  assert.ok(mine.covers({ operation: "face_swap", userId: "u1", purpose: "ads" }));
  assert.ok(!mine.covers({ operation: "face_swap", userId: "u2", purpose: "ads" }));
  assert.ok(!mine.covers({ operation: "face_swap", purpose: "ads" }));
  assert.ok(!mine.covers({ operation: "face_swap", userId: "u1" }));
  assert.ok(!mine.covers({ operation: "face_swap", userId: "u1", purpose: "art" }));
  assert.ok(Object.isFrozen(mine) && Object.isFrozen(mine.ops));
});

test("the revocation list: bounds, pages, and freshness from when a refresh was sent",
     async () => {
  assert.throws(() => new RevocationList(async () => ({ epoch: 0, revoked: [] }),
                                         { maxStalenessS: 1, pollIntervalS: 1 }), RangeError);
  let now = 0;
  const asked: number[] = [];
  const pages: RevocationPage[] = [
    { epoch: 2, revoked: ["gr_a", "gr_b"], more: true }, { epoch: 3, revoked: ["gr_c"] }];
  const list = new RevocationList(async (since) => {
    asked.push(since);
    now += 4; // the fetch itself takes 4 s
    return pages.shift() ?? { epoch: 3, revoked: [] };
  }, { clock: () => now, maxStalenessS: 5, pollIntervalS: 1 });
  assert.equal(list.ageS(), Infinity);
  assert.equal(thrownCode(() => list.isRevoked("gr_a")), "revocation_list_stale");
  assert.equal(await list.refresh(), 3);
  assert.deepEqual(asked, [0, 2]);
  assert.equal(list.epoch, 3);
  assert.equal(list.ageS(), 8); // fresh as of when it was sent, not when it came back
  assert.equal(thrownCode(() => list.isRevoked("gr_a")), "revocation_list_stale");
  await list.refresh();
  assert.deepEqual(asked, [0, 2, 3]);
  assert.equal(list.ageS(), 4);
  assert.ok(list.isRevoked("gr_a") && list.isRevoked("gr_c") && !list.isRevoked("gr_z"));

  const bad = new RevocationList(async () => ({ epoch: "1", revoked: [] }) as unknown as
                                 RevocationPage);
  assert.equal(await codeOf(bad.refresh()), "invalid_response");

  let calls = 0;
  let t = 0;
  const lazy = new RevocationList(async () => { calls += 1; return { epoch: 0, revoked: [] }; },
                                  { clock: () => t, pollIntervalS: 1, maxStalenessS: 5 });
  await Promise.all([lazy.refreshIfDue(), lazy.refreshIfDue()]);
  await lazy.refreshIfDue();
  assert.equal(calls, 1);
  t = 1;
  await lazy.refreshIfDue();
  assert.equal(calls, 2);
});

test("the JWKS cache refetches for an unknown key id, at most every minRefetchS", async () => {
  const { jwks } = await issuer("k1");
  let fetches = 0;
  let now = 0;
  const cache = new JwksCache(async () => { fetches += 1; return jwks; },
                              { minRefetchS: 30, clock: () => now });
  await cache.get();
  await cache.get("k1");
  await cache.get("k9");
  assert.equal(fetches, 1);
  now = 30;
  await cache.get("k1");
  assert.equal(fetches, 1);
  await cache.get("k9");
  assert.equal(fetches, 2);
  const broken = new JwksCache(async () => ({}) as Jwks);
  assert.equal(await codeOf(broken.get()), "invalid_response");
});
