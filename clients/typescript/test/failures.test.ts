/** Failures on the way to the sidecar are `GateError`s with their own codes, never an
 * allow; and what the client sends (local HTTP servers stand in for the sidecar). */

import assert from "node:assert/strict";
import { test } from "node:test";

import { CLIENT_ERROR_CODES, GateClient, GateError } from "consent-gate-client";

import { closedPortUrl, localServer } from "./support.js";

const FACE_FREE = { operation: "img2img" as const,
                    images: [{ role: "init" as const, data: new Uint8Array([1, 2, 3]) }] };
const ALLOW = JSON.stringify({ verdict: "allow", request_id: "r1", policy_version: "p",
                               reasons: [], faces: [] });

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    const value = await promise;
    assert.fail(`expected a GateError, got ${JSON.stringify(value)}`);
  } catch (error) {
    assert.ok(error instanceof GateError, `not a GateError: ${String(error)}`);
    assert.equal(error.name, "GateError");
    return error.code;
  }
}

test("the client's own codes are listed", () => {
  assert.deepEqual([...CLIENT_ERROR_CODES].sort(), [
    "aborted", "invalid_request", "invalid_response", "network_error", "timeout"]);
});

test("an unreachable sidecar is a network_error", async () => {
  const gate = new GateClient({ baseUrl: await closedPortUrl(), apiKey: "gk_x" });
  assert.equal(await codeOf(gate.check(FACE_FREE)), "network_error");
});

test("a sidecar that does not answer in time is a timeout", async () => {
  const silent = await localServer(() => { /* never answers */ });
  const stalls = await localServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.write(ALLOW.slice(0, 10)); // headers and half a body, then nothing
  });
  try {
    const gate = new GateClient({ baseUrl: silent.url, apiKey: "gk_x", timeoutMs: 200 });
    assert.equal(await codeOf(gate.check(FACE_FREE)), "timeout");
    const slowBody = new GateClient({ baseUrl: stalls.url, apiKey: "gk_x" });
    assert.equal(await codeOf(slowBody.check(FACE_FREE, { timeoutMs: 200 })), "timeout");
  } finally {
    await silent.close();
    await stalls.close();
  }
});

test("a caller's abort is aborted", async () => {
  const silent = await localServer(() => { /* never answers */ });
  try {
    const gate = new GateClient({ baseUrl: silent.url, apiKey: "gk_x" });
    const controller = new AbortController();
    const call = gate.check(FACE_FREE, { signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    assert.equal(await codeOf(call), "aborted");
    assert.equal(await codeOf(gate.check(FACE_FREE, { signal: AbortSignal.abort() })), "aborted");
  } finally {
    await silent.close();
  }
});

test("answers that are not the API's are errors, never an allow", async () => {
  const answers: Record<string, [number, string, string]> = {
    "/html-502/v1/check": [502, "text/html", "<h1>Bad gateway</h1>"],
    "/garbage/v1/check": [200, "text/plain", "allow"],
    "/not-a-decision/v1/check": [200, "application/json", '{"verdict": "yes"}'],
    "/list/v1/check": [200, "application/json", "[]"],
    "/empty/v1/check": [200, "application/json", ""],
  };
  const server = await localServer((req, res) => {
    const [status, type, body] = answers[req.url ?? ""] ?? [404, "text/plain", "?"];
    res.writeHead(status, { "content-type": type, "x-request-id": "req_proxy" });
    res.end(body);
  });
  try {
    const at = (prefix: string): GateClient =>
      new GateClient({ baseUrl: `${server.url}/${prefix}/`, apiKey: "gk_x" });
    try {
      await at("html-502").check(FACE_FREE);
      assert.fail("no error");
    } catch (error) {
      assert.ok(error instanceof GateError);
      assert.deepEqual([error.code, error.status, error.requestId], ["http_502", 502, "req_proxy"]);
    }
    for (const prefix of ["garbage", "not-a-decision", "list", "empty"]) {
      assert.equal(await codeOf(at(prefix).check(FACE_FREE)), "invalid_response", prefix);
    }
  } finally {
    await server.close();
  }
});

test("the sidecar's error shape gives code, status and request id", async () => {
  const server = await localServer((_req, res) => {
    res.writeHead(429, { "content-type": "application/json", "x-request-id": "req_h" });
    res.end(JSON.stringify({ error: { code: "rate_limited", message: "slow down",
                                      request_id: "req_b" } }));
  });
  try {
    const gate = new GateClient({ baseUrl: server.url, apiKey: "gk_x" });
    try {
      await gate.check(FACE_FREE);
      assert.fail("no error");
    } catch (error) {
      assert.ok(error instanceof GateError);
      assert.deepEqual([error.code, error.status, error.requestId, error.message],
                       ["rate_limited", 429, "req_b", "slow down"]);
    }
  } finally {
    await server.close();
  }
});

test("what check sends: the key, the body, each form of image bytes", async () => {
  const seen: { url: string; auth: string; body: Record<string, unknown> }[] = [];
  const server = await localServer((req, res, body) => {
    seen.push({ url: req.url ?? "", auth: req.headers.authorization ?? "",
                body: JSON.parse(body.toString("utf-8")) as Record<string, unknown> });
    res.writeHead(200, { "content-type": "application/json" });
    res.end(ALLOW);
  });
  try {
    const gate = new GateClient({ baseUrl: `${server.url}/gate`, apiKey: "gk_secret" });
    const bytes = new Uint8Array(70_000).map((_, i) => (i * 7) % 256);
    const expected = Buffer.from(bytes).toString("base64");
    await gate.check({
      operation: "face_swap", prompt: "p", negativePrompt: "n", content: ["general", "violent"],
      userId: "u9", purpose: "fun", requestId: "rq-1",
      images: [{ role: "target", data: bytes }, { role: "source", data: new Blob([bytes]) },
               { role: "reference", data: expected }] });
    // without Buffer (browsers, edge runtimes) the btoa path gives the same base64; a
    // stand-in `fetch` (the `fetch` option) because Node's own needs Buffer
    const sent: string[] = [];
    const standIn = async (_url: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
      sent.push(String(init?.body));
      return { ok: true, status: 200, headers: new Headers(), text: async () => ALLOW } as
        unknown as Response;
    };
    const bare = new GateClient({ baseUrl: server.url, apiKey: "gk_x", fetch: standIn });
    const saved = globalThis.Buffer;
    Reflect.set(globalThis, "Buffer", undefined);
    try {
      assert.equal((await bare.check({ operation: "img2img",
                                       images: [{ role: "init", data: bytes }] })).verdict,
                   "allow");
    } finally {
      Reflect.set(globalThis, "Buffer", saved);
    }
    assert.deepEqual((JSON.parse(sent[0] ?? "{}") as Record<string, unknown>)["images"],
                     [{ role: "init", data_b64: expected }]);
    await gate.check({ operation: "img2img", images: [{ role: "init", data: bytes }] });
    assert.equal(seen[0]?.url, "/gate/v1/check");
    assert.equal(seen[0]?.auth, "Bearer gk_secret");
    assert.deepEqual(seen[0]?.body, {
      operation: "face_swap", prompt: "p", negative_prompt: "n",
      content: ["general", "violent"], purpose: "fun", user_id: "u9", request_id: "rq-1",
      images: [{ role: "target", data_b64: expected }, { role: "source", data_b64: expected },
               { role: "reference", data_b64: expected }] });
    assert.deepEqual(seen[1]?.body["images"], [{ role: "init", data_b64: expected }]);
    assert.equal(seen.length, 2);
    assert.deepEqual(seen[1]?.body["content"], ["general"]);
    assert.ok(!("app_id" in (seen[0]?.body ?? {})));
  } finally {
    await server.close();
  }
});

test("bytes of another type are refused before anything is sent", async () => {
  let calls = 0;
  const server = await localServer((_req, res) => { calls += 1; res.end(ALLOW); });
  try {
    const gate = new GateClient({ baseUrl: server.url, apiKey: "gk_x" });
    const data = 42 as unknown as Uint8Array;
    assert.equal(await codeOf(gate.check({ operation: "img2img", images: [{ role: "init", data }] })),
                 "invalid_request");
    assert.equal(await codeOf(gate.getSubject("")), "invalid_request");
    assert.equal(calls, 0);
  } finally {
    await server.close();
  }
});

test("a malformed configuration is refused at construction", () => {
  assert.throws(() => new GateClient({ baseUrl: "not a url", apiKey: "gk_x" }), TypeError);
  assert.throws(() => new GateClient({ baseUrl: "ftp://h", apiKey: "gk_x" }), TypeError);
  assert.throws(() => new GateClient({ baseUrl: "http://h", apiKey: "" }), TypeError);
  assert.throws(() => new GateClient({ baseUrl: "http://h", apiKey: "k", timeoutMs: 0 }),
                RangeError);
  assert.equal(new GateClient({ baseUrl: "http://h:1/a/", apiKey: "k" }).baseUrl, "http://h:1/a");
});
