// Answering a consent request: see the scope, prove identity (liveness), agree or refuse.
"use strict";

let challenge = null;

function showView(view) {
  document.getElementById("scope").replaceChildren(
    ...view.scope.map((line) => Gate.el("li", { text: line })));
  document.getElementById("expires").textContent = Gate.when(view.expires_at);
  document.getElementById("scope-panel").hidden = false;
  document.getElementById("name-block").hidden = !view.needs_name;
  document.getElementById("prove-panel").hidden = view.verified;
  document.getElementById("decide-panel").hidden = !view.verified;
}

async function newChallenge() {
  challenge = await Gate.api("POST", "/portal/api/request/challenge");
  const words = { front: "look straight at the camera", left: "turn your head to your left",
                  right: "turn your head to your right" };
  document.getElementById("challenge-text").textContent =
    "Asked: " + challenge.poses.map((p) => words[p]).join(", then ") + ".";
}

async function verify(frames) {
  try {
    const data = Burst.form(frames, {
      challenge_id: challenge.challenge_id,
      display_name: document.getElementById("display-name").value || null,
      guardian: document.getElementById("guardian").checked ? "true" : "false",
    });
    await Gate.api("POST", "/portal/api/request/proof", data);
    Gate.say("Thank you, it is you. Now decide.", "ok");
    document.getElementById("prove-panel").hidden = true;
    document.getElementById("decide-panel").hidden = false;
    document.getElementById("accept").focus();
  } catch (e) {
    Gate.say(`Not verified: ${e.message}`, "error");
    await newChallenge().catch(() => null);
  } finally { Burst.stopCamera(); }
}

async function decide(accept) {
  try {
    const result = await Gate.api("POST", "/portal/api/request/decision", { accept });
    document.getElementById("decide-panel").hidden = true;
    Gate.say(result.state === "granted" ? "You agreed. You can revoke it in your portal at any time."
      : "You refused. The app has been told.", "ok");
  } catch (e) { Gate.say(`Could not record your answer: ${e.message}`, "error"); }
}

async function start() {
  const token = Gate.takeLinkToken();
  try {
    const view = token ? await Gate.api("POST", "/portal/api/request/session", { token })
      : await Gate.api("GET", "/portal/api/request");
    showView(view);
    if (!view.verified) await newChallenge();
  } catch (e) { Gate.say(`This link cannot be used: ${e.message}`, "error"); }
}

document.addEventListener("DOMContentLoaded", () => {
  Burst.wire("verify", () => challenge.poses, verify);
  document.getElementById("accept").addEventListener("click", () => decide(true));
  document.getElementById("refuse").addEventListener("click", () => decide(false));
  start();
});
