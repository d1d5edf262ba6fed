/** The README's Next.js route handler is `examples/nextjs/app/api/generate/route.ts`, and it
 * runs: called with a `Request` as Next.js would, against the real sidecar, with a local
 * HTTP server standing in for the image model. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { closedPortUrl, localServer, needsSidecar, theSidecar } from "./support.js";

type Route = typeof import("../examples/nextjs/app/api/generate/route.js");

const PACKAGE = new URL("../../", import.meta.url); // build-test/test/ -> the package
const EXAMPLE = "examples/nextjs/app/api/generate/route.ts";
let loads = 0;

test("the README's route handler is the example file, verbatim", () => {
  const readme = readFileSync(new URL("README.md", PACKAGE), "utf-8");
  const section = readme.split("\n## Next.js route handler\n")[1] ?? assert.fail("no section");
  const block = /```ts\n([\s\S]*?)```/.exec(section)?.[1] ?? assert.fail("no ts block");
  assert.equal(block, readFileSync(new URL(EXAMPLE, PACKAGE), "utf-8"));
});

/** A fresh copy of the route module, configured by `env` as a deployment would be. */
async function route(env: Record<string, string>): Promise<Route> {
  Object.assign(process.env, env);
  loads += 1;
  const url = new URL(`../examples/nextjs/app/api/generate/route.js?load=${loads}`,
                      import.meta.url);
  return (await import(url.href)) as Route;
}

function upload(photo: Uint8Array | null, prompt = "a watercolour portrait"): Request {
  const form = new FormData();
  if (photo !== null) form.set("photo", new Blob([Uint8Array.from(photo)]), "photo.jpg");
  form.set("prompt", prompt);
  return new Request("http://localhost/api/generate", {
    method: "POST", body: form, headers: { "x-user-id": "u1" } });
}

interface Refusal {
  verdict: string;
  reasons: { rule: string; message: string }[];
  requestId?: string;
}

test("the route handler checks before the image model runs", { skip: needsSidecar },
     async () => {
  const s = theSidecar();
  const prompts: string[] = [];
  const model = await localServer((_req, res, body) => {
    prompts.push(/name="prompt"\r\n\r\n([^\r]*)/.exec(body.toString("latin1"))?.[1] ?? "");
    res.writeHead(200, { "content-type": "image/png" });
    res.end(Buffer.from(s.faceFreePhoto)); // the "generated" image: no face in it
  });
  try {
    const { POST } = await route({ GATE_URL: s.url, GATE_API_KEY: s.checkKey,
                                   IMAGE_MODEL_URL: model.url });

    const refused = await POST(upload(s.protectedPhoto));
    assert.equal(refused.status, 403);
    const body = (await refused.json()) as Refusal;
    assert.equal(body.verdict, "deny");
    assert.ok(body.reasons.length > 0);
    assert.ok(body.reasons.every((r) => r.rule.length > 0 && r.message.length > 0));
    assert.match(body.requestId ?? "", /\S/);
    assert.equal(prompts.length, 0, "the image model must not run for a refused request");

    const allowed = await POST(upload(s.faceFreePhoto));
    assert.equal(allowed.status, 200);
    assert.equal(allowed.headers.get("content-type"), "image/png");
    assert.deepEqual(new Uint8Array(await allowed.arrayBuffer()), s.faceFreePhoto);
    assert.deepEqual(prompts, ["a watercolour portrait"]);

    const notAPhoto = await POST(upload(new TextEncoder().encode("not an image")));
    assert.equal(notAPhoto.status, 422);
    assert.equal(((await notAPhoto.json()) as Refusal).verdict, "deny");
    assert.equal((await POST(upload(null))).status, 400);
    assert.equal(prompts.length, 1);
  } finally {
    await model.close();
  }
});

test("the route handler fails closed when the gate is unreachable", async () => {
  let calls = 0;
  const model = await localServer((_req, res) => { calls += 1; res.end("image"); });
  try {
    const { POST } = await route({ GATE_URL: await closedPortUrl(), GATE_API_KEY: "gk_x",
                                   IMAGE_MODEL_URL: model.url });
    const response = await POST(upload(new Uint8Array([1, 2, 3])));
    assert.equal(response.status, 503);
    const body = (await response.json()) as Refusal;
    assert.equal(body.verdict, "deny");
    assert.equal(body.reasons[0]?.rule, "network_error");
    assert.equal(calls, 0);
  } finally {
    await model.close();
  }
});
