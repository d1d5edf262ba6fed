// Self-enrolment with a liveness challenge; ends signed in to the portal.
"use strict";

let challenge = null;

async function newChallenge() {
  challenge = await Gate.api("POST", "/portal/api/enrol/start");
  const words = { front: "look straight at the camera", left: "turn your head to your left",
                  right: "turn your head to your right" };
  document.getElementById("challenge-text").textContent =
    "Asked: " + challenge.poses.map((p) => words[p]).join(", then ") + ".";
}

async function submit(frames) {
  const status = document.querySelector("input[name=status]:checked").value;
  try {
    await Gate.api("POST", "/portal/api/enrol", Burst.form(frames, {
      challenge_id: challenge.challenge_id,
      display_name: document.getElementById("display-name").value,
      guardian: document.getElementById("guardian").checked ? "true" : "false",
      status,
    }));
    window.location.assign("/portal/");
  } catch (e) {
    Gate.say(`Not enrolled: ${e.message}`, "error");
    await newChallenge().catch(() => null);
  } finally { Burst.stopCamera(); }
}

document.addEventListener("DOMContentLoaded", () => {
  newChallenge().catch((e) => Gate.say(`Enrolment is not available: ${e.message}`, "error"));
  Burst.wire("submit", () => challenge.poses, submit);
});
