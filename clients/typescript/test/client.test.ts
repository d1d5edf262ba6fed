/** `GateClient` against the real sidecar (real YuNet + SFace models, real photos). */

import assert from "node:assert/strict";
import { test } from "node:test";

import { GateClient, GateError, type Decision } from "consent-gate-client";

import { needsSidecar, theSidecar } from "./support.js";

function clients(): { app: GateClient; admin: GateClient } {
  const s = theSidecar();
  return {
    app: new GateClient({ baseUrl: s.url, apiKey: s.checkKey }),
    admin: new GateClient({ baseUrl: s.url, apiKey: s.adminKey }),
  };
}

async function rejection(promise: Promise<unknown>): Promise<GateError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof GateError, `not a GateError: ${String(error)}`);
    return error;
  }
  assert.fail("expected a GateError");
}

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64");
}

test("a protected face is refused, whatever form its bytes take", { skip: needsSidecar },
     async () => {
  const s = theSidecar();
  const { app } = clients();
  const forms = [s.protectedPhoto, new Blob([s.protectedPhoto], { type: "image/jpeg" }),
                 base64(s.protectedPhoto)];
  for (const data of forms) {
    const decision: Decision = await app.check({
      operation: "face_swap", images: [{ role: "target", data }], userId: "u1" });
    assert.equal(decision.verdict, "deny");
    assert.equal(decision.faces.length, 1);
    assert.equal(decision.faces[0]?.identity, "protected");
    assert.equal(decision.faces[0]?.subject_id, s.protectedSubjectId);
    assert.ok(decision.reasons.some((r) => r.effect === "deny" && r.message.length > 0));
  }
});

test("a face-free image is allowed, and so is its output", { skip: needsSidecar }, async () => {
  const s = theSidecar();
  const { app } = clients();
  const decision = await app.check({
    operation: "img2img", images: [{ role: "init", data: s.faceFreePhoto }],
    prompt: "a watercolour landscape", content: ["general"], requestId: "ts-face-free" });
  assert.equal(decision.verdict, "allow");
  assert.deepEqual(decision.faces, []);
  assert.equal(decision.request_id, "ts-face-free");
  const output = await app.checkOutput({
    image: s.faceFreePhoto, requestId: decision.request_id, operation: "img2img" });
  assert.equal(output.verdict, "allow");
});

test("a wrong key is unauthorized", { skip: needsSidecar }, async () => {
  const s = theSidecar();
  const wrong = new GateClient({ baseUrl: s.url, apiKey: "gk_not_a_key" });
  const error = await rejection(wrong.check({
    operation: "img2img", images: [{ role: "init", data: s.faceFreePhoto }] }));
  assert.equal(error.code, "unauthorized");
  assert.equal(error.status, 401);
  assert.match(error.requestId ?? "", /\S/);
});

test("the sidecar's error codes come through", { skip: needsSidecar }, async () => {
  const s = theSidecar();
  const { app, admin } = clients();
  const forbidden = await rejection(app.enroll({ images: [s.strangerPhoto], displayName: "X" }));
  assert.deepEqual([forbidden.code, forbidden.status], ["forbidden", 403]);
  const missing = await rejection(admin.getSubject("sub_nope"));
  assert.deepEqual([missing.code, missing.status], ["not_found", 404]);
  const badBase64 = await rejection(app.check({
    operation: "img2img", images: [{ role: "init", data: "not base64!" }] }));
  assert.deepEqual([badBase64.code, badBase64.status], ["invalid_request", 422]);
  assert.match(badBase64.message, /images\.0\.data_b64/);
  const notAnImage = await rejection(app.check({
    operation: "img2img", images: [{ role: "init", data: new TextEncoder().encode("GIF? no") }],
  }));
  assert.deepEqual([notAnImage.code, notAnImage.status], ["unsupported_media_type", 415]);
});

test("consent requests: a needs_consent face, asked and polled", { skip: needsSidecar },
     async () => {
  const s = theSidecar();
  const { app } = clients();
  const decision = await app.check({
    operation: "face_swap", images: [{ role: "target", data: s.strangerPhoto }], userId: "u1" });
  assert.equal(decision.verdict, "needs_consent");
  const face = decision.faces[0];
  assert.ok(face !== undefined);
  const created = await app.createConsentRequest({
    image: s.strangerPhoto, bbox: face.bbox, operation: "face_swap", userId: "u1",
    decisionRequestId: decision.request_id, faceRef: face.face_ref });
  assert.equal(created.request.state, "pending");
  assert.equal(created.request.app_id, s.appId);
  assert.match(created.link, /^https?:\/\//);
  const polled = await app.getConsentRequest(created.request.request_id);
  assert.equal(polled.state, "pending");
  assert.equal(polled.grant_token ?? null, null);
});

test("subjects, grants, tokens, revocations, audit: the whole lifecycle",
     { skip: needsSidecar }, async () => {
  const s = theSidecar();
  const { app, admin } = clients();
  const subject = await admin.enroll({
    images: [new Blob([s.strangerPhoto])], displayName: "Stranger", status: "consenting" });
  assert.equal(subject.status, "consenting");
  assert.equal(subject.template_count, 1);
  assert.equal((await admin.getSubject(subject.subject_id)).display_name, "Stranger");
  assert.ok((await admin.listSubjects()).some((x) => x.subject_id === subject.subject_id));

  const grant = await admin.grant({
    subjectId: subject.subject_id, appId: s.appId, operations: ["face_swap"], userId: "u1",
    expiresAt: new Date(Date.now() + 3_600_000) });
  assert.equal(grant.app_id, s.appId);
  assert.equal(typeof grant.token, "string");
  const swap = { operation: "face_swap" as const,
                 images: [{ role: "target" as const, data: s.strangerPhoto }], userId: "u1" };
  const allowed = await app.check(swap);
  assert.equal(allowed.verdict, "allow");
  assert.equal(allowed.faces[0]?.grant_id, grant.grant_id);
  const listed = await admin.listGrants({ subjectId: subject.subject_id });
  assert.deepEqual(listed.map((g) => g.grant_id), [grant.grant_id]);
  assert.deepEqual(await admin.listGrants(subject.subject_id), listed);
  assert.ok((await admin.listGrants()).some((g) => g.grant_id === grant.grant_id));
  const fresh = await app.grantToken(grant.grant_id);
  assert.equal(fresh.grant_id, grant.grant_id);
  assert.equal(typeof fresh.token, "string");

  const before = (await app.revocations()).epoch;
  const revoked = await admin.revoke(grant.grant_id);
  assert.equal(typeof revoked.revoked_at, "string");
  assert.notEqual((await app.check(swap)).verdict, "allow");
  const feed = await app.revocations({ sinceEpoch: before });
  assert.ok(feed.revoked.some((r) => r["grant_id"] === grant.grant_id));
  assert.ok(feed.epoch > before);

  assert.equal((await admin.setStatus(subject.subject_id, "protected")).status, "protected");
  assert.equal((await app.check(swap)).verdict, "deny");
  assert.equal(await admin.erase(subject.subject_id), true);
  assert.equal((await rejection(admin.getSubject(subject.subject_id))).code, "not_found");

  const page = await admin.audit({ limit: 1000 });
  assert.ok(page.events.length > 0);
  assert.equal(page.next_since, page.events.at(-1)?.seq);
  assert.deepEqual((await admin.audit({ since: page.next_since })).events, []);
  assert.equal((await admin.verifyAudit()).ok, true);
});

test("public routes: the JWKS and readiness", { skip: needsSidecar }, async () => {
  const { app } = clients();
  const jwks = await app.jwks();
  assert.ok(jwks.keys.length >= 1);
  assert.equal(jwks.keys[0]?.kty, "OKP");
  assert.equal(jwks.keys[0]?.crv, "Ed25519");
  const ready = await app.readiness();
  assert.equal(ready.ready, true);
  assert.equal(ready.checks["models"], true);
});

test("incident response: label an output, trace it back, report it", { skip: needsSidecar },
     async () => {
  const s = theSidecar();
  const { app, admin } = clients();
  const decision = await app.check({
    operation: "img2img", images: [{ role: "init", data: s.faceFreePhoto }],
    prompt: "a watercolour landscape", requestId: "ts-incident" });
  assert.equal(decision.verdict, "allow");
  const labelled = await app.labelOutput({ image: s.faceFreePhoto, requestId: "ts-incident" });
  assert.ok(labelled instanceof Uint8Array && labelled.length > 100);
  assert.notDeepEqual(labelled, s.faceFreePhoto);
  const found = await admin.trace(labelled);
  assert.equal(found.found, true);
  assert.equal(found.request_id, "ts-incident");
  assert.equal(found.record?.app_id, s.appId);
  assert.equal(found.record?.chain_verified, true);
  const plain = await admin.trace(s.strangerPhoto);
  assert.equal(plain.found, false);
  const plainReport = await rejection(app.report({ image: labelled, reason: "ncii" }));
  assert.equal(plainReport.code, "invalid_request"); // too plain to block by hash
  // by hash only (reporting a photo here would block it for the other tests)
  const report = await app.report({ pdq: ["a5".repeat(32)], reason: "impersonation" });
  assert.equal(report.status, "open");
  assert.equal(report.hashes, 1);
  assert.equal(report.trace, null);
  assert.ok(Date.parse(report.deadline) - Date.parse(report.created_at) === 48 * 3600 * 1000);
  const refused = await rejection(app.labelOutput({ image: s.faceFreePhoto,
                                                    requestId: "ts-never-decided" }));
  assert.equal(refused.status, 422);
  const notOperator = await rejection(app.trace(labelled));
  assert.equal(notOperator.status, 403);
});
