// app/api/generate/route.ts: the gate decides before the image model sees the photo.
import { GateClient, GateError, type Decision } from "consent-gate-client";

const gate = new GateClient({
  baseUrl: process.env.GATE_URL ?? "http://127.0.0.1:8080",
  apiKey: process.env.GATE_API_KEY ?? "", // a key with the `check` scope
  timeoutMs: 10_000,
});

export async function POST(request: Request): Promise<Response> {
  const form = await request.formData();
  const photo = form.get("photo");
  const prompt = String(form.get("prompt") ?? "");
  if (!(photo instanceof Blob)) {
    return Response.json({ error: "send a photo" }, { status: 400 });
  }
  const userId = request.headers.get("x-user-id") ?? undefined; // your signed-in user
  try {
    const decision = await gate.check({
      operation: "img2img", images: [{ role: "init", data: photo }], prompt, userId,
    });
    if (decision.verdict !== "allow") return refused(decision);
    const image = await imageModel(photo, prompt);
    const output = await gate.checkOutput({
      image, requestId: decision.request_id, operation: "img2img", prompt, userId,
    });
    if (output.verdict !== "allow") return refused(output);
    return new Response(image, { headers: { "content-type": image.type || "image/png" } });
  } catch (error) {
    if (!(error instanceof GateError)) throw error;
    // Fail closed: without a decision, nothing is generated.
    const badPhoto = [413, 415, 422].includes(error.status);
    return Response.json(
      { verdict: "deny", reasons: [{ rule: error.code, message: error.message }] },
      { status: badPhoto ? 422 : 503 },
    );
  }
}

/** The decision's reasons, for the person who asked. */
function refused(decision: Decision): Response {
  const reasons = decision.reasons.map((r) => ({ rule: r.rule_id, message: r.message }));
  return Response.json(
    { verdict: decision.verdict, reasons, requestId: decision.request_id },
    { status: 403 },
  );
}

/** Your image model; here, an image API over HTTP. */
async function imageModel(photo: Blob, prompt: string): Promise<Blob> {
  const body = new FormData();
  body.set("image", photo);
  body.set("prompt", prompt);
  const response = await fetch(process.env.IMAGE_MODEL_URL ?? "", { method: "POST", body });
  if (!response.ok) throw new Error(`the image model answered ${response.status}`);
  return response.blob();
}
