// The operator console. No third-party code. Every datum comes from the JSON API
// (/v1/reports, /v1/trace, /v1/blocklist, /v1/audit), called same-origin with the
// operator's admin key, which lives in sessionStorage only: never in an address, a
// cookie or a log. Text is always set with textContent (never parsed as HTML).
"use strict";

const KEY_STORE = "consent-gate.console.key";
const PAGE = 50;
const TABS = ["reports", "trace", "blocklist", "audit"];
const ID_RE = /^[A-Za-z0-9._:-]{1,64}$/;
const REASONS = {
  ncii: "Intimate image without consent (NCII)", impersonation: "Impersonation",
  minor: "A minor", other: "Other",
};
const EXPORT_FILES = {  // te-simple readers take the indicator type from the file name
  "te-csv": ["blocklist.csv", "text/csv"], "te-file": ["blocklist.txt", "text/plain"],
  "te-simple": ["simple.HASH_PDQ.te", "text/csv"],
};

const state = { reports: 0, blocklist: 0, tick: null };

// -- plumbing ---------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
    this.handled = false;
  }
}

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function say(text, kind) {
  const box = $("status");
  box.textContent = text;
  box.className = "status " + (kind || "");
  box.hidden = false;
}

function fail(what, e) {
  if (e && e.handled) return;  // already explained (e.g. signed out on a 401)
  say(`${what}: ${e && e.message ? e.message : e}`, "error");
}

function plural(n, one, many) { return `${n} ${n === 1 ? one : (many || one + "s")}`; }

function when(iso) {
  if (!iso) return "—";
  return el("time", { datetime: iso, text: new Date(iso).toLocaleString() });
}

function badge(kind, text) { return el("span", { class: `badge ${kind}`, text }); }

function fields(pairs) {
  const dl = el("dl", { class: "fields" });
  for (const [name, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    dl.append(el("dt", { text: name }), el("dd", {}, value));
  }
  return dl;
}

function code(text) { return el("code", { text }); }

function duration(ms) {
  // hours up to three days (the legal clocks are in hours), then days and hours
  const minutes = Math.floor(Math.abs(ms) / 60000);
  const h = Math.floor(minutes / 60), m = minutes % 60;
  if (h >= 72) return `${Math.floor(h / 24)} d ${h % 24} h`;
  if (h) return `${h} h ${m} min`;
  return `${m} min`;
}

/** Run ``fn`` with the form's submit button disabled (no double submissions). */
async function busy(form, fn) {
  const buttons = form.querySelectorAll("button[type=submit]");
  buttons.forEach((b) => { b.disabled = true; });
  form.setAttribute("aria-busy", "true");
  try { await fn(); } finally {
    buttons.forEach((b) => { b.disabled = false; });
    form.removeAttribute("aria-busy");
  }
}

const Api = {
  key() { return sessionStorage.getItem(KEY_STORE); },

  /** One call of the JSON API; errors become ApiError with the API's code and message. */
  async call(method, path, opts) {
    const { json, form, text, contentType, raw, signingIn } = opts || {};
    const key = Api.key();
    if (!key) throw Object.assign(new ApiError(401, "unauthorized", "not signed in"),
                                  { handled: !signingIn });
    const headers = { Authorization: `Bearer ${key}` };
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) body = form;
    else if (text !== undefined) {
      headers["Content-Type"] = contentType || "text/plain";
      body = text;
    }
    const response = await fetch(path, { method, headers, body, credentials: "omit",
                                         cache: "no-store", redirect: "error" });
    if (!response.ok) {
      let data = null;
      try { data = await response.json(); } catch (e) { data = null; }
      const detail = (data && data.error) || {};
      const err = new ApiError(response.status, detail.code || `http_${response.status}`,
                               detail.message || `HTTP ${response.status}`);
      if (response.status === 401 && !signingIn) {
        signOut(`Your key is no longer accepted (${err.message}). Sign in again.`, "error");
        err.handled = true;
      }
      throw err;
    }
    if (response.status === 204) return null;
    return raw ? response.text() : response.json();
  },
};

// -- signing in and out ------------------------------------------------------------------
function keyLabel(token) {
  const m = /^gk_([0-9a-f]{12})_/.exec(token);
  return m ? `gk_${m[1]}_…` : "(unrecognised format)";
}

async function signIn(token) {
  sessionStorage.setItem(KEY_STORE, token);
  try {
    await Api.call("GET", "/v1/audit?limit=1", { signingIn: true });  // an admin-only read
  } catch (e) {
    sessionStorage.removeItem(KEY_STORE);
    if (e.status === 401) throw new Error("this key is not accepted (invalid or revoked)");
    if (e.status === 403) throw new Error("this key lacks the admin scope; the console needs an operator key");
    throw e;
  }
  enter();
}

function enter() {
  $("signin").hidden = true;
  $("session-bar").hidden = false;
  $("tabs").hidden = false;
  $("key-id").textContent = keyLabel(Api.key());
  showTab(location.hash.slice(1), false);
  if (state.tick === null) state.tick = setInterval(tickClocks, 30000);
}

function signOut(message, kind) {
  sessionStorage.removeItem(KEY_STORE);
  if (state.tick !== null) { clearInterval(state.tick); state.tick = null; }
  for (const id of ["report-list", "audit-list"]) $(id).replaceChildren();
  $("blocklist-table").querySelector("tbody").replaceChildren();
  for (const id of ["report-summary", "blocklist-summary", "audit-result"]) $(id).replaceChildren();
  for (const id of ["trace-result", "verify-result"]) {
    $(id).replaceChildren();
    $(id).className = "result";
  }
  document.querySelectorAll("form").forEach((f) => f.reset());
  $("report-status").disabled = false;
  $("report-more").hidden = true;
  $("blocklist-more").hidden = true;
  for (const t of TABS) $(t).hidden = true;
  $("tabs").hidden = true;
  $("session-bar").hidden = true;
  $("key-id").textContent = "";
  $("signin").hidden = false;
  say(message || "Signed out. This tab no longer holds the key.", kind || "ok");
  $("key").focus();
}

// -- tabs -----------------------------------------------------------------------------
function showTab(name, focus) {
  if (!Api.key()) return;
  if (!TABS.includes(name)) name = "reports";
  for (const t of TABS) $(t).hidden = t !== name;
  document.querySelectorAll("#tabs a").forEach((a) => {
    if (a.dataset.tab === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  if (focus) {  // the person moved on: the last message was about the other section
    $("status").hidden = true;
    $(`${name}-h`).focus();
  }
  if (name === "reports") loadReports(false).catch((e) => fail("Could not load the reports", e));
  if (name === "blocklist") loadBlocklist(false).catch((e) => fail("Could not load the blocklist", e));
}

// -- reports ----------------------------------------------------------------------------
function isOverdue(r) {
  return r.status === "open" && (r.overdue || Date.parse(r.deadline) < Date.now());
}

function clockText(deadline) {
  const left = Date.parse(deadline) - Date.now();
  return left < 0 ? `Overdue by ${duration(left)}` : `Due in ${duration(left)}`;
}

function tickClocks() {
  document.querySelectorAll(".clock[data-deadline]").forEach((p) => {
    const late = Date.parse(p.dataset.deadline) < Date.now();
    p.textContent = clockText(p.dataset.deadline);
    p.classList.toggle("overdue", late);
    p.closest(".card").classList.toggle("overdue", late);
  });
}

function traceView(trace) {
  if (!trace) return el("p", { class: "hint", text: "No trace result is attached." });
  if (!trace.found) {
    return el("p", { class: "trace" }, badge("notfound", "Not traced"),
              " No mark of this gate was found: the image was not labelled here, or its "
              + "marks did not survive.");
  }
  const how = trace.source === "c2pa" ? "from its C2PA manifest"
    : `from its invisible mark (${plural(trace.distance_bits ?? 0, "bit")} from the issued mark)`;
  const box = el("div", { class: "trace" },
    el("p", {}, badge("found", "Traced"), " to request ", code(trace.request_id), ` ${how}.`));
  const rec = trace.record;
  if (rec) {
    const subjects = rec.subject_ids.length ? rec.subject_ids.join(", ")
      : (rec.subject_refs.length ? plural(rec.subject_refs.length, "pseudonymous subject") : "none");
    box.append(fields([
      ["Decision", rec.verdict], ["Operation", rec.operation], ["App", rec.app_id],
      ["User (pseudonymous)", rec.user_ref], ["Decided", when(rec.at)],
      ["Rules", rec.rule_ids.length ? rec.rule_ids.join(", ") : "—"],
      ["Subjects", subjects], ["Grants", rec.grant_ids.length ? rec.grant_ids.join(", ") : "none"],
      ["Policy", rec.policy_version],
      ["Audit record", el("span", {}, `#${rec.seq} `, el("code", { class: "hash", text: rec.hash }))],
      ["Hash chain", rec.chain_verified
        ? badge("verified", "Chain verified")
        : badge("broken", "Chain NOT verified: the record or its neighbours were altered")],
    ]));
  } else {
    box.append(el("p", { class: "hint", text: "The decision's audit record was not found." }));
  }
  const button = el("button", { type: "button", class: "link",
                                text: "Show the audit events of this request" });
  button.addEventListener("click", () => openAudit(trace.request_id));
  box.append(button);
  return box;
}

function resolveForm(r) {
  const id = r.report_id;
  const name = `decision-${id}`;
  const reasonId = `resolve-reason-${id}`;
  const form = el("form", { class: "resolve", "data-resolve": id });
  const choice = (value, label) => el("div", {},
    el("input", { type: "radio", name, value, id: `${name}-${value}`, required: true }),
    el("label", { class: "inline", for: `${name}-${value}`, text: ` ${label}` }));
  form.append(el("fieldset", {},
    el("legend", { text: "Resolve this report" }),
    choice("actioned", "Actioned: taken down; its hashes stay blocked"),
    choice("rejected", "Rejected: not a valid request; its provisional hashes are removed"),
    el("label", { for: reasonId, text: "Reason (recorded and audited)" }),
    el("textarea", { id: reasonId, rows: 2, maxlength: 2000, required: true }),
    el("div", { class: "actions" }, el("button", { type: "submit", text: "Resolve" }))));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(form, () => resolve(id, form.elements[name].value, $(reasonId).value.trim()));
  });
  return form;
}

async function resolve(id, status, reason) {
  if (!status || !reason) { say("Choose actioned or rejected and give a reason.", "error"); return; }
  try {
    const done = await Api.call("POST", `/v1/reports/${encodeURIComponent(id)}/resolve`,
                                { json: { status, reason } });
    say(`Report ${id} is now ${done.status}.`, "ok");
  } catch (e) {
    if (e.status === 409) say(`Report ${id} was already resolved by someone else (${e.message}). The queue is refreshed.`, "error");
    else { fail(`Could not resolve report ${id}`, e); return; }
  }
  await loadReports(false).catch((e) => fail("Could not load the reports", e));
}

function reportCard(r) {
  const overdue = isOverdue(r);
  const card = el("li", { class: `card ${r.status}${overdue ? " overdue" : ""}`,
                          "data-report": r.report_id, "aria-labelledby": `h-${r.report_id}` });
  const title = el("h3", { id: `h-${r.report_id}` }, "Report ", code(r.report_id),
                   badge(r.status, r.status));
  if (overdue) title.append(badge("overdue", "Overdue"));
  card.append(title);
  if (r.status === "open") {
    card.append(el("p", { class: `clock${overdue ? " overdue" : ""}`, "data-deadline": r.deadline,
                          text: clockText(r.deadline) }));
  }
  const blocked = r.status === "rejected" ? "removed from the blocklist"
    : (r.status === "open" ? "blocked provisionally" : "blocked");
  card.append(fields([
    ["Reason", REASONS[r.reason] || r.reason], ["Received", when(r.created_at)],
    ["Deadline", when(r.deadline)], ["Subject", r.subject_id ? code(r.subject_id) : null],
    ["Image hashes", `${plural(r.hashes, "PDQ hash", "PDQ hashes")}, ${blocked}`],
    ["Resolved", r.resolved_at ? el("span", {}, when(r.resolved_at), ` by ${r.resolved_by || "?"}`) : null],
    ["Resolution", r.resolution],
  ]));
  card.append(el("h4", { text: "Trace" }), traceView(r.trace));
  if (r.status === "open") card.append(resolveForm(r));
  return card;
}

async function loadReports(more) {
  const params = new URLSearchParams({ limit: PAGE, offset: more ? state.reports : 0 });
  if ($("report-overdue").checked) params.set("overdue", "true");
  else if ($("report-status").value) params.set("status", $("report-status").value);
  const list = await Api.call("GET", `/v1/reports?${params}`);
  const cards = list.map(reportCard);
  if (more) $("report-list").append(...cards); else $("report-list").replaceChildren(...cards);
  state.reports = (more ? state.reports : 0) + list.length;
  $("report-more").hidden = list.length < PAGE;
  const shown = Array.from($("report-list").children);
  const open = shown.filter((c) => c.classList.contains("open")).length;
  const late = shown.filter((c) => c.classList.contains("overdue")).length;
  $("report-summary").textContent = shown.length
    ? `Showing ${plural(shown.length, "report")}: ${open} open, ${late} overdue.`
    : "No report matches.";
}

// -- trace and intake -------------------------------------------------------------------
async function traceImage() {
  const file = $("trace-file").files[0];
  if (!file) { say("Choose an image first.", "error"); return; }
  const box = $("trace-result");
  box.className = "result";
  box.replaceChildren(el("p", { text: "Tracing…" }));
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const trace = await Api.call("POST", "/v1/trace", { form });
    const preview = el("img", { class: "preview", alt: `The traced image (${file.name})`,
                                src: URL.createObjectURL(file) });
    preview.addEventListener("load", () => URL.revokeObjectURL(preview.src));
    box.className = `result ${trace.found ? "found" : "notfound"}`;
    box.replaceChildren(el("h3", { text: trace.found ? "Found" : "Not found" }), preview,
                        traceView(trace));
  } catch (e) {
    box.replaceChildren();
    fail("Could not trace the image", e);
  }
}

async function fileReport() {
  const file = $("trace-file").files[0];
  if (!file) { say("Choose the image above first.", "error"); return; }
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("reason", $("report-reason").value);
  if ($("report-subject").value.trim()) form.append("subject_id", $("report-subject").value.trim());
  if ($("report-contact").value.trim()) form.append("contact", $("report-contact").value.trim());
  try {
    const r = await Api.call("POST", "/v1/reports", { form });
    say(`Report ${r.report_id} filed: ${plural(r.hashes, "hash", "hashes")} blocked provisionally; `
        + `due ${new Date(r.deadline).toLocaleString()}.`, "ok");
    $("file-report-form").reset();
  } catch (e) { fail("Could not file the report", e); }
}

// -- blocklist ---------------------------------------------------------------------------
function entryRow(e) {
  const source = el("span", {}, e.source);
  if (e.list_name) source.append(" — list ", code(e.list_name));
  if (e.report_id) source.append(" — report ", code(e.report_id));
  const remove = el("button", { type: "button", class: "danger", text: "Remove",
                                "aria-label": `Remove blocklist entry ${e.entry_id}` });
  remove.addEventListener("click", () => removeEntry(e.entry_id));
  return el("tr", { "data-entry": e.entry_id },
    el("td", { "data-label": "Entry" }, code(e.entry_id)),
    el("td", { "data-label": "PDQ hash" }, el("code", { class: "hash", text: e.pdq }),
       e.quality !== null ? el("span", { class: "hint", text: ` (quality ${e.quality})` }) : null),
    el("td", { "data-label": "Source" }, source),
    el("td", { "data-label": "Added" }, when(e.added_at)),
    el("td", { "data-label": "State" }, e.provisional
      ? badge("provisional", "provisional") : badge("verified", "confirmed")),
    el("td", { "data-label": "Action" }, remove));
}

async function loadBlocklist(more) {
  const offset = more ? state.blocklist : 0;
  const page = await Api.call("GET", `/v1/blocklist?limit=${PAGE}&offset=${offset}`);
  const body = $("blocklist-table").querySelector("tbody");
  const rows = page.entries.map(entryRow);
  if (more) body.append(...rows); else body.replaceChildren(...rows);
  state.blocklist = offset + page.entries.length;
  $("blocklist-more").hidden = state.blocklist >= page.total;
  $("blocklist-table").hidden = page.total === 0;
  $("blocklist-summary").textContent = page.total
    ? `${plural(page.total, "entry", "entries")} in the blocklist; showing ${body.children.length}.`
    : "The blocklist is empty.";
}

async function removeEntry(id) {
  if (!window.confirm(`Remove ${id} from the blocklist? Images matching it will no longer `
                      + "be denied by core.known_image.")) return;
  try {
    await Api.call("DELETE", `/v1/blocklist/${encodeURIComponent(id)}`);
    say(`Entry ${id} removed from the blocklist.`, "ok");
  } catch (e) { fail(`Could not remove entry ${id}`, e); }
  await loadBlocklist(false).catch((e) => fail("Could not load the blocklist", e));
}

async function importList() {
  const name = $("import-name").value.trim();
  const format = $("import-format").value;
  const file = $("import-file").files[0];
  const text = $("import-text").value.trim() ? $("import-text").value : (file ? await file.text() : "");
  if (!name || !text.trim()) { say("Give the list a name and a file or pasted list.", "error"); return; }
  const params = new URLSearchParams({ name });
  if (format) params.set("format", format);
  try {
    const r = await Api.call("POST", `/v1/blocklist/import?${params}`, {
      text, contentType: format === "te-file" ? "text/plain" : "text/csv" });
    say(`Imported ${plural(r.added, "entry", "entries")} into list “${name}”.`, "ok");
    $("import-form").reset();
  } catch (e) { fail("Could not import the list", e); return; }
  await loadBlocklist(false).catch((e) => fail("Could not load the blocklist", e));
}

async function exportList() {
  const format = $("export-format").value;
  const [filename, type] = EXPORT_FILES[format];
  try {
    const text = await Api.call("GET", `/v1/blocklist/export?format=${encodeURIComponent(format)}`,
                                { raw: true });
    const url = URL.createObjectURL(new Blob([text], { type }));
    const link = el("a", { href: url, download: filename, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    const lines = text.split("\n").filter((l) => l.trim()).length;
    say(`Downloaded ${filename} (${plural(lines, "line")}).`, "ok");
  } catch (e) { fail("Could not export the blocklist", e); }
}

// -- audit ------------------------------------------------------------------------------
function eventCard(e) {
  const ev = e.event || {};
  const title = el("h3", {}, `Event #${e.seq} `, badge("open", ev.kind || "event"));
  if (ev.verdict) title.append(badge(ev.verdict === "allow" ? "verified" : "overdue", ev.verdict));
  return el("li", { class: "card", "data-seq": e.seq }, title, fields([
    ["At", when(e.at)], ["Stage", ev.stage], ["App", ev.app_id], ["Operation", ev.operation],
    ["Status", ev.status],
    ["Rules", Array.isArray(ev.rule_ids) && ev.rule_ids.length ? ev.rule_ids.join(", ") : null],
    ["Hash", el("code", { class: "hash", text: e.hash })],
    ["Previous", el("code", { class: "hash", text: e.prev_hash })],
  ]), el("details", {}, el("summary", { text: "The whole event (JSON)" }),
         el("pre", { text: JSON.stringify(ev, null, 2) })));
}

async function searchAudit(id) {
  const result = $("audit-result");
  if (!ID_RE.test(id)) {
    say("A request id is 1 to 64 letters, digits or . _ : -", "error");
    return;
  }
  try {
    const page = await Api.call("GET", `/v1/audit/requests/${encodeURIComponent(id)}`);
    $("audit-list").replaceChildren(...page.events.map(eventCard));
    result.replaceChildren(el("p", {}, page.events.length
      ? `${plural(page.events.length, "event")} about request ` : "No audit event is about request ",
      code(id), "."));
  } catch (e) {
    $("audit-list").replaceChildren();
    result.replaceChildren();
    fail("Could not search the audit log", e);
  }
}

function openAudit(requestId) {
  $("audit-request").value = requestId;
  location.hash = "#audit";  // showTab runs on hashchange
  searchAudit(requestId);
}

async function verifyChain() {
  const out = $("verify-result");
  out.className = "result";
  out.textContent = "Verifying…";
  try {
    const v = await Api.call("POST", "/v1/audit/verify");
    out.replaceChildren(v.ok
      ? badge("verified", "Chain verified")
      : badge("broken", "Chain BROKEN"),
      v.ok ? ` ${plural(v.events, "event")}, none edited, missing or out of order.`
        : ` at event #${v.first_bad_seq}: ${v.problem || "mismatch"} (${plural(v.events, "event")} checked).`);
    out.className = `result ${v.ok ? "ok" : "error"}`;
  } catch (e) {
    out.textContent = "";
    fail("Could not verify the chain", e);
  }
}

// -- wiring ---------------------------------------------------------------------------
function onSubmit(id, fn) {
  const form = $(id);
  form.addEventListener("submit", (ev) => { ev.preventDefault(); busy(form, fn); });
}

document.addEventListener("DOMContentLoaded", () => {
  onSubmit("signin-form", async () => {
    const token = $("key").value.trim();
    $("key").value = "";
    try { await signIn(token); say("Signed in.", "ok"); }
    catch (e) { say(`Sign-in failed: ${e.message}`, "error"); $("key").focus(); }
  });
  $("sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", () => showTab(location.hash.slice(1), true));
  onSubmit("report-filter", () => loadReports(false).catch((e) => fail("Could not load the reports", e)));
  $("report-overdue").addEventListener("change", () => {
    $("report-status").disabled = $("report-overdue").checked;
  });
  $("report-more").addEventListener("click", () =>
    loadReports(true).catch((e) => fail("Could not load the reports", e)));
  onSubmit("trace-form", traceImage);
  onSubmit("file-report-form", fileReport);
  $("blocklist-more").addEventListener("click", () =>
    loadBlocklist(true).catch((e) => fail("Could not load the blocklist", e)));
  onSubmit("import-form", importList);
  onSubmit("export-form", exportList);
  onSubmit("audit-form", () => searchAudit($("audit-request").value.trim()));
  $("verify-chain").addEventListener("click", async () => {
    const button = $("verify-chain");
    button.disabled = true;
    try { await verifyChain(); } finally { button.disabled = false; }
  });

  if (Api.key()) {  // a reload of this tab: check the kept key still works
    signIn(Api.key()).catch((e) => signOut(`Sign in again: ${e.message}`, "error"));
  } else {
    $("signin").hidden = false;
  }
});
