// Answering a consent request: see the scope, prove identity (liveness), agree or refuse.
"use strict";

let challenge = null;
let current = null;  // the view shown: its locale and the sha256 of its consent text

function showView(view) {
  current = view;
  document.documentElement.lang = view.locale;
  document.getElementById("scope").replaceChildren(
    ...view.scope.map((line) => Gate.el("li", { text: line })));
  document.getElementById("consent-text").textContent = view.consent_text;
  document.getElementById("signature-block").hidden = !view.signature_required;
  document.getElementById("expires").textContent = Gate.when(view.expires_at);
  document.getElementById("scope-panel").hidden = false;
  document.getElementById("name-block").hidden = !view.needs_name;
  document.getElementById("prove-panel").hidden = view.verified;
  document.getElementById("decide-panel").hidden = !view.verified;
}

async function switchLanguage(locale) {
  try {
    showView(await Gate.api("GET", `/portal/api/request?locale=${encodeURIComponent(locale)}`));
  } catch (e) { Gate.say(`Could not switch language: ${e.message}`, "error"); }
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
    await switchLanguage(current ? current.locale : "en");
    document.getElementById("accept").focus();
  } catch (e) {
    Gate.say(`Not verified: ${e.message}`, "error");
    await newChallenge().catch(() => null);
  } finally { Burst.stopCamera(); }
}

async function decide(accept) {
  try {
    const body = { accept, locale: current.locale, text_sha256: current.text_sha256 };
    const signature = document.getElementById("signature").value.trim();
    if (signature) body.signature = signature;
    const result = await Gate.api("POST", "/portal/api/request/decision", body);
    document.getElementById("decide-panel").hidden = true;
    Gate.say(result.state === "granted" ? "You agreed. You can revoke it in your portal at any time."
      : "You refused. The app has been told.", "ok");
  } catch (e) { Gate.say(`Could not record your answer: ${e.message}`, "error"); }
}

async function start() {
  const token = Gate.takeLinkToken();
  const locale = (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
  try {
    const view = token
      ? await Gate.api("POST", "/portal/api/request/session", { token, locale })
      : await Gate.api("GET", `/portal/api/request?locale=${locale}`);
    showView(view);
    if (!view.verified) await newChallenge();
  } catch (e) { Gate.say(`This link cannot be used: ${e.message}`, "error"); }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button.lang")) {
    button.addEventListener("click", () => switchLanguage(button.dataset.locale));
  }
  Burst.wire("verify", () => challenge.poses, verify);
  document.getElementById("accept").addEventListener("click", () => decide(true));
  document.getElementById("refuse").addEventListener("click", () => decide(false));
  start();
});
