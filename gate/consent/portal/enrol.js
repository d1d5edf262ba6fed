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
  document.getElementById("camera").addEventListener("click", async () => {
    const video = document.getElementById("video");
    const prompt = document.getElementById("prompt");
    try {
      video.hidden = false; prompt.hidden = false;
      await Burst.startCamera(video);
      await submit(await Burst.capture(video, challenge.poses, prompt));
    } catch (e) { Gate.say(`The camera could not be used: ${e.message}`, "error"); }
  });
  document.getElementById("submit").addEventListener("click", () => {
    const files = Array.from(document.getElementById("files").files);
    if (!files.length) { Gate.say("Choose your photos first, or use the camera.", "error"); return; }
    submit(files);
  });
});
