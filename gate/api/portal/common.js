// Shared helpers of the portal pages. No third-party code; same-origin requests only.
"use strict";

const Gate = {
  csrf: null,

  /** The one-time token from the link's fragment (#t=...), removed from the address bar. */
  takeLinkToken() {
    const params = new URLSearchParams(window.location.hash.slice(1));
    const token = params.get("t");
    if (token) history.replaceState(null, "", window.location.pathname);
    return token;
  },

  async api(method, path, body) {
    const headers = { "X-Gate-Portal": "1" };
    if (Gate.csrf) headers["X-CSRF-Token"] = Gate.csrf;
    let payload;
    if (body instanceof FormData) payload = body;
    else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(path, { method, headers, body: payload,
                                         credentials: "same-origin" });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const message = data && data.error ? data.error.message : `HTTP ${response.status}`;
      const err = new Error(message);
      err.status = response.status;
      throw err;
    }
    if (data && data.csrf) Gate.csrf = data.csrf;
    return data;
  },

  say(text, kind) {
    const box = document.getElementById("status");
    box.textContent = text;
    box.className = "status " + (kind || "");
    box.hidden = false;
  },

  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  },

  when(iso) {
    if (!iso) return "—";
    return new Date(iso).toLocaleString();
  },
};

/**
 * A burst for the liveness check: from the camera (frames every 350 ms while the person
 * follows the spoken/written prompts) or, without a camera, from chosen files.
 */
const Burst = {
  stream: null,

  async startCamera(video) {
    Burst.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640 } });
    video.srcObject = Burst.stream;
    await video.play();
  },

  stopCamera() {
    if (Burst.stream) Burst.stream.getTracks().forEach((t) => t.stop());
    Burst.stream = null;
  },

  async capture(video, poses, prompt) {
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    const ctx = canvas.getContext("2d");
    const frames = [];
    const words = { front: "Look straight at the camera", left: "Turn your head to your LEFT",
                    right: "Turn your head to your RIGHT" };
    for (const pose of poses) {
      prompt.textContent = words[pose] || pose;
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 350));
        ctx.drawImage(video, 0, 0);  // unmirrored, as the camera sees you
        frames.push(await new Promise((r) => canvas.toBlob(r, "image/jpeg", 0.92)));
      }
    }
    prompt.textContent = "Done.";
    return frames;
  },

  /**
   * Wire a page's two ways to give a burst: the "camera" button (live frames following
   * the challenged poses) and the button `fileButtonId` (photos chosen in `#files`).
   * Both end in `onFrames(frames)`.
   */
  wire(fileButtonId, poses, onFrames) {
    document.getElementById("camera").addEventListener("click", async () => {
      const video = document.getElementById("video");
      const prompt = document.getElementById("prompt");
      try {
        video.hidden = false; prompt.hidden = false;
        await Burst.startCamera(video);
        await onFrames(await Burst.capture(video, poses(), prompt));
      } catch (e) { Gate.say(`The camera could not be used: ${e.message}`, "error"); }
    });
    document.getElementById(fileButtonId).addEventListener("click", () => {
      const files = Array.from(document.getElementById("files").files);
      if (!files.length) { Gate.say("Choose your photos first, or use the camera.", "error"); return; }
      onFrames(files);
    });
  },

  form(frames, fields) {
    const data = new FormData();
    frames.forEach((f, i) => data.append("frames", f, `frame${i}.jpg`));
    for (const [k, v] of Object.entries(fields)) if (v !== null && v !== undefined) data.append(k, v);
    return data;
  },
};
