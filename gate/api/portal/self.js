// An app's invitation to enrol the user's own face, with a liveness challenge.
"use strict";

let challenge = null;
const words = { front: "look straight at the camera", left: "turn your head to your left",
                right: "turn your head to your right" };

function showChallenge() {
  document.getElementById("challenge-text").textContent =
    "Asked: " + challenge.poses.map((p) => words[p]).join(", then ") + ".";
}

async function submit(frames) {
  try {
    await Gate.api("POST", "/portal/api/self", Burst.form(frames, {
      challenge_id: challenge.challenge_id,
      display_name: document.getElementById("display-name").value,
    }));
    Gate.say("Done: the app now recognises your face as yours. You can close this page.",
             "ok");
    document.getElementById("submit").disabled = true;
  } catch (e) {
    Gate.say(`Not enrolled: ${e.message}`, "error");
  } finally { Burst.stopCamera(); }
}

document.addEventListener("DOMContentLoaded", async () => {
  const token = Gate.takeLinkToken();
  try {
    challenge = await Gate.api("POST", "/portal/api/self/session", { token });
    document.getElementById("app-name").textContent = challenge.app_id;
    showChallenge();
  } catch (e) {
    Gate.say(`This link cannot be used: ${e.message}`, "error");
    return;
  }
  Burst.wire("submit", () => challenge.poses, submit);
});
