// The subject portal: sign in with a one-time link, see and revoke grants.
"use strict";

const OPS = {
  txt2img: "new pictures of you", img2img: "new pictures from a picture of you",
  inpaint: "editing parts of a picture of you", face_swap: "face swaps",
  face_restore: "face restoration", avatar_train: "training an avatar on your face",
  video_face_swap: "face swaps in videos", edit: "edits", nudify: "nude pictures",
};

const CONTENT = {
  general: "ordinary pictures", sexual: "sexual or nude pictures",
  violent: "violent pictures", political: "political pictures",
};

function grantRow(g) {
  const who = g.user_id ? `${g.app_id} (user ${g.user_id})` : `${g.app_id} (any user)`;
  const what = g.operations.map((o) => OPS[o] || o).join(", ") + " — "
    + g.content.map((c) => CONTENT[c] || c).join(", ")
    + (g.purpose ? ` — purpose: ${g.purpose}` : "");
  const uses = g.max_uses ? `${g.uses} of ${g.max_uses}` : `${g.uses} (no limit)`;
  const state = g.revoked_at ? "Revoked" : (g.active ? "Active" : "Not active");
  const button = Gate.el("button", { type: "button", class: "danger",
    "aria-label": `Revoke permission for ${g.app_id}`, "data-grant": g.grant_id,
    text: "Revoke" });
  if (g.revoked_at) button.disabled = true;
  button.addEventListener("click", () => revoke(g.grant_id, g.app_id));
  return Gate.el("tr", { "data-grant-row": g.grant_id },
    Gate.el("td", { text: who }), Gate.el("td", { text: what }),
    Gate.el("td", { text: g.expires_at ? Gate.when(g.expires_at) : "No end date" }),
    Gate.el("td", { text: uses }),
    Gate.el("td", {}, Gate.el("span", { class: "badge " + (state === "Active" ? "active" : "inactive"),
                                       text: state })),
    Gate.el("td", {}, button));
}

function render(me) {
  document.getElementById("signed-out").hidden = true;
  document.getElementById("signed-in").hidden = false;
  document.getElementById("who-name").textContent = me.subject.display_name;
  const protectedNow = me.subject.status === "protected";
  document.getElementById("who-status").textContent = protectedNow
    ? "Protected (no use of your face is allowed)" : "Consenting (the uses you granted are allowed)";
  document.getElementById("status-help").textContent = protectedNow
    ? "While protected, even your active permissions are not honoured."
    : "Protecting yourself blocks every use at once, whatever you granted.";
  document.getElementById("protect").disabled = protectedNow;
  document.getElementById("consenting").disabled = !protectedNow;

  const body = document.querySelector("#grants tbody");
  body.replaceChildren(...me.grants.map(grantRow));
  document.getElementById("no-grants").hidden = me.grants.length > 0;
  document.getElementById("grants").hidden = me.grants.length === 0;

  const uses = document.querySelector("#uses tbody");
  uses.replaceChildren(...me.decisions.map((d) => Gate.el("tr", {},
    Gate.el("td", { text: Gate.when(d.at) }), Gate.el("td", { text: d.app_id || "—" }),
    Gate.el("td", { text: OPS[d.operation] || d.operation || "—" }),
    Gate.el("td", { text: d.verdict }), Gate.el("td", { text: d.grant_id }))));
  document.getElementById("no-uses").hidden = me.decisions.length > 0;
  document.getElementById("uses").hidden = me.decisions.length === 0;

  const attempts = me.attempts || [];
  const VERDICTS = { deny: "Refused", needs_consent: "Held for your consent" };
  document.querySelector("#attempts tbody").replaceChildren(...attempts.map((a) =>
    Gate.el("tr", {},
      Gate.el("td", { text: Gate.when(a.at) }), Gate.el("td", { text: a.app_id || "—" }),
      Gate.el("td", { text: OPS[a.operation] || a.operation || "—" }),
      Gate.el("td", { text: VERDICTS[a.verdict] || a.verdict }))));
  document.getElementById("no-attempts").hidden = attempts.length > 0;
  document.getElementById("attempts").hidden = attempts.length === 0;
}

async function load() {
  render(await Gate.api("GET", "/portal/api/me"));
}

async function revoke(grantId, appId) {
  try {
    await Gate.api("POST", `/portal/api/grants/${encodeURIComponent(grantId)}/revoke`);
    Gate.say(`Permission for ${appId} revoked. It no longer allows anything.`, "ok");
    await load();
  } catch (e) { Gate.say(`Could not revoke: ${e.message}`, "error"); }
}

async function setStatus(status) {
  try {
    await Gate.api("POST", "/portal/api/status", { status });
    Gate.say(status === "protected" ? "You are protected now." : "Your grants apply again.", "ok");
    await load();
  } catch (e) { Gate.say(`Could not change your status: ${e.message}`, "error"); }
}

async function report(event) {
  event.preventDefault();
  const form = document.getElementById("report-form");
  const result = document.getElementById("report-result");
  try {
    const r = await Gate.api("POST", "/portal/api/report", new FormData(form));
    result.textContent = `Reported (${r.report_id}). The image is blocked from now on; ` +
      `the operator must act by ${Gate.when(r.deadline)}. The image itself was not kept.`;
    result.hidden = false;
    form.reset();
    Gate.say("Report received.", "ok");
  } catch (e) { Gate.say(`Could not report the image: ${e.message}`, "error"); }
}

async function start() {
  const token = Gate.takeLinkToken();
  try {
    if (token) await Gate.api("POST", "/portal/api/session", { token });
    await load();
  } catch (e) {
    document.getElementById("signed-out").hidden = false;
    if (token || e.status !== 401) Gate.say(`Sign-in failed: ${e.message}`, "error");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("protect").addEventListener("click", () => setStatus("protected"));
  document.getElementById("report-form").addEventListener("submit", report);
  document.getElementById("consenting").addEventListener("click", () => setStatus("consenting"));
  const confirm = document.getElementById("erase-confirm");
  const erase = document.getElementById("erase");
  confirm.addEventListener("change", () => { erase.disabled = !confirm.checked; });
  erase.addEventListener("click", async () => {
    try {
      await Gate.api("POST", "/portal/api/erase");
      document.getElementById("signed-in").hidden = true;
      Gate.say("You have been erased. Nothing of your face remains here.", "ok");
    } catch (e) { Gate.say(`Could not erase: ${e.message}`, "error"); }
  });
  document.getElementById("logout").addEventListener("click", async () => {
    await Gate.api("POST", "/portal/api/logout").catch(() => null);
    document.getElementById("signed-in").hidden = true;
    document.getElementById("signed-out").hidden = false;
    Gate.say("Signed out.", "ok");
  });
  start();
});
