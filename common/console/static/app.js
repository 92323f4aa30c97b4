// The Sluice console: one page, hash routes, only the public /v1 API.
// No build step and no library: DOM built with h(), charts drawn as SVG here.
"use strict";

const S = { token: sessionStorage.getItem("sluice.token") || "", config: {}, stream: null, kinds: null };

// -- DOM ---------------------------------------------------------------------------------
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (k === "style") el.style.cssText = v; // CSSOM: allowed by the page's CSP, unlike a style attribute
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined && kid !== false) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}
const SVGNS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}
const main = () => document.getElementById("main");
function show(title, ...nodes) {
  stopStream();
  document.title = `${title} · Sluice`;
  const m = main();
  m.replaceChildren(h("h1", { id: "page-title", tabindex: "-1" }, title), ...nodes.filter((n) => n));
  for (const a of document.querySelectorAll(".top nav a")) {
    const here = location.hash.startsWith(a.getAttribute("href"));
    if (here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
}
function say(text) { document.getElementById("status").textContent = text; }
function clearAlert() { const a = document.getElementById("alert"); a.hidden = true; a.replaceChildren(); }
function showError(err) {
  const a = document.getElementById("alert");
  a.replaceChildren(h("strong", {}, err.message || String(err)), err.hint ? h("span", { class: "hint" }, err.hint) : null);
  a.hidden = false;
}
function fmtTime(t) { return t ? new Date(t).toLocaleString() : "—"; }
function fmtDur(sec) {
  if (sec === null || sec === undefined) return "—";
  sec = Math.round(sec);
  if (sec < 60) return `${sec} s`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min ${sec % 60} s`;
  return `${Math.floor(sec / 3600)} h ${Math.floor((sec % 3600) / 60)} min`;
}
const badge = (st) => h("span", { class: `badge ${st}` }, String(st).replace("_", " "));

// -- the API -------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `the request failed (HTTP ${status})`);
    this.status = status; this.code = e.code || "http_error";
    const d = e.details || {};
    this.hint = d.hint || (d.errors ? d.errors.map((x) => `${x.loc.join(".")}: ${x.msg}`).join("; ") : "") ||
      (status === 401 ? "Sign in again." : "");
  }
}
function headers(extra) {
  const hd = Object.assign({}, extra || {});
  if (S.token) hd.Authorization = `Bearer ${S.token}`;
  return hd;
}
async function api(method, path, opts) {
  opts = opts || {};
  const init = { method, headers: headers(opts.headers) };
  if (opts.json !== undefined) { init.body = JSON.stringify(opts.json); init.headers["Content-Type"] = "application/json"; }
  if (opts.form) init.body = opts.form;
  if (method === "POST" && opts.idempotent !== false) init.headers["Idempotency-Key"] = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2) + Date.now();
  let res;
  try { res = await fetch(path, init); } catch (e) { throw Object.assign(new Error("the server did not answer"), { hint: "Check that sluice serve (or the API) is running." }); }
  if (opts.raw) { if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null)); return res; }
  if (res.status === 204) return null;
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}
async function guarded(fn) {
  clearAlert();
  try { return await fn(); } catch (err) { showError(err); return undefined; }
}

// Server-Sent Events over fetch: EventSource cannot send a bearer token.
function stopStream() { if (S.stream) { S.stream.abort(); S.stream = null; } }
async function follow(path, onEvent) {
  stopStream();
  const ctl = new AbortController();
  S.stream = ctl;
  while (!ctl.signal.aborted) {
    let finished = false;
    try {
      const res = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal: ctl.signal });
      if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i); buf = buf.slice(i + 2);
          let name = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (data) { const stop = onEvent(name, JSON.parse(data)); if (name === "done" || stop) finished = true; }
        }
        if (finished) { ctl.abort(); break; }
      }
    } catch (err) {
      if (ctl.signal.aborted) return;
      if (err instanceof ApiError) { showError(err); return; }
    }
    if (finished) return;
    await new Promise((r) => setTimeout(r, 1000)); // the server ends a stream after a while: reconnect
  }
}

// -- sign-in -------------------------------------------------------------------------------
function renderWho() {
  const who = document.getElementById("who");
  const out = [];
  if (S.token) {
    out.push(h("span", {}, "Signed in"), h("button", { type: "button", onclick: () => { S.token = ""; sessionStorage.removeItem("sluice.token"); renderWho(); route(); } }, "Sign out"));
  } else if (S.config.dev_identity) {
    out.push(h("span", {}, "Local development identity"));
  } else {
    if (S.config.google_client_id) out.push(h("div", { id: "gsi" }));
    const field = h("input", { type: "password", id: "token", "aria-label": "Bearer token", placeholder: "paste an ID token", size: 18 });
    out.push(h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); setToken(field.value.trim()); } }, field, h("button", { type: "submit" }, "Use token")));
  }
  who.replaceChildren(...out);
  if (!S.token && S.config.google_client_id) loadGoogle();
}
function setToken(t) { S.token = t; if (t) sessionStorage.setItem("sluice.token", t); renderWho(); route(); }
function loadGoogle() {
  // Google Identity Services is Google's sign-in itself (not a library copy): it can only come from Google.
  const init = () => {
    google.accounts.id.initialize({ client_id: S.config.google_client_id, callback: (r) => setToken(r.credential) });
    const el = document.getElementById("gsi");
    if (el) google.accounts.id.renderButton(el, { theme: "outline", size: "medium" });
  };
  if (window.google && window.google.accounts) return init();
  const tag = h("script", { src: "https://accounts.google.com/gsi/client", async: true });
  tag.onload = init;
  document.head.append(tag);
}

// -- jobs ------------------------------------------------------------------------------------
async function kinds() {
  if (S.kinds) return S.kinds;
  try {
    const body = await api("GET", "/v1/kinds");
    S.kinds = (body.items || body.kinds || []).map((k) => (typeof k === "string" ? { name: k } : k));
  } catch (e) { S.kinds = [{ name: "extract", summary: "Extract fields from documents" }]; }
  if (!S.kinds.length) S.kinds = [{ name: "extract" }];
  return S.kinds;
}

// One input per property of a kind's settings schema; read() gives the settings object (only what was set).
function settingsForm(schema) {
  const props = schema.properties || {};
  const inputs = [], readers = [];
  for (const [key, raw] of Object.entries(props)) {
    const p = (raw.anyOf || []).find((x) => x.type && x.type !== "null") || raw;
    const id = `setting-${key}`, label = raw.title || key.replace(/_/g, " ");
    const hint = raw.description ? ` (${raw.description})` : "";
    let el, read;
    if (p.enum) {
      el = h("select", { id }, h("option", { value: "" }, "default"), p.enum.map((v) => h("option", { value: String(v) }, String(v))));
      read = () => (el.value === "" ? undefined : p.enum.find((v) => String(v) === el.value));
    } else if (p.type === "boolean") {
      el = h("input", { id, type: "checkbox" });
      if (raw.default === true) el.checked = true;
      read = () => (el.checked === Boolean(raw.default) ? undefined : el.checked);
    } else if (p.type === "integer" || p.type === "number") {
      el = h("input", { id, type: "number", step: p.type === "integer" ? 1 : "any", placeholder: raw.default ?? "" });
      if (p.minimum !== undefined) el.min = p.minimum;
      if (p.maximum !== undefined) el.max = p.maximum;
      read = () => (el.value === "" ? undefined : Number(el.value));
    } else if (p.type === "string") {
      el = h("input", { id, placeholder: raw.default ?? "" });
      read = () => (el.value === "" ? undefined : el.value);
    } else {
      el = h("textarea", { id, rows: 2, placeholder: "JSON" });
      read = () => {
        if (el.value.trim() === "") return undefined;
        try { return JSON.parse(el.value); } catch (e) { throw Object.assign(new Error(`${label}: not valid JSON`), { hint: "Write the value as JSON." }); }
      };
    }
    inputs.push(h("label", { for: id, title: raw.description || "" }, `${label}${hint}`, el));
    readers.push([key, read]);
  }
  return { inputs, read: () => Object.fromEntries(readers.map(([k, r]) => [k, r()]).filter(([, v]) => v !== undefined)) };
}

async function unitOf(kind) {
  const k = (await kinds()).find((x) => x.name === (kind || "extract"));
  return (k && k.unit) || "items";
}

async function jobsPage() {
  const list = h("tbody");
  const more = h("button", { type: "button", hidden: true }, "Show more");
  let cursor = null;
  const load = async () => {
    const q = new URLSearchParams({ limit: "50", sort: "-created_at" });
    if (cursor) q.set("cursor", cursor);
    const body = await guarded(() => api("GET", `/v1/jobs?${q}`));
    if (!body) return;
    for (const j of body.items) {
      const lr = j.latest_run;
      list.append(h("tr", {},
        h("td", {}, h("a", { href: `#/jobs/${j.id}` }, j.name)),
        h("td", {}, j.kind || "extract"),
        h("td", {}, lr ? h("a", { href: `#/runs/${lr.id}` }, badge(lr.status), ` run ${lr.run_number}`) : h("span", { class: "muted" }, "no run yet")),
        h("td", { class: "hide-sm" }, fmtTime(j.created_at))));
    }
    if (!body.items.length && !cursor) list.append(h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No jobs yet: create one above.")));
    cursor = body.next_cursor; more.hidden = !cursor;
  };
  more.addEventListener("click", load);
  // The list and the kinds load together: the form needs the kinds, the table the list.
  const loading = load();
  // Kinds the platform makes jobs of (a collection's ingest job) are not offered.
  const ks = (await kinds()).filter((k) => k.user_created !== false);
  const name = h("input", { id: "job-name", name: "name", required: true, maxlength: 200, placeholder: "Invoices March" });
  // Extraction is the default kind (the list is alphabetical).
  const kind = h("select", { id: "job-kind", name: "kind" }, ks.map((k) => h("option", { value: k.name, selected: k.name === "extract" }, k.name)));
  const preset = h("input", { id: "job-preset", name: "preset", value: "invoice" });
  const review = h("input", { id: "job-review", name: "review_below", type: "number", min: 0, max: 1, step: 0.05, placeholder: "none" });
  // Extraction's own inputs; every kind's settings come from its JSON Schema (GET /v1/kinds).
  const extractOnly = [h("label", { for: "job-preset" }, "Fields preset", preset), h("label", { for: "job-review" }, "Review below confidence", review)];
  const settingsBox = h("fieldset", { id: "kind-settings", class: "inline" });
  let readSettings = () => ({});
  const renderSettings = () => {
    const k = ks.find((x) => x.name === kind.value) || {};
    for (const el of extractOnly) el.hidden = kind.value !== "extract";
    const built = settingsForm(k.settings_schema || {});
    readSettings = built.read;
    settingsBox.replaceChildren(h("legend", {}, `${kind.value} settings`), k.summary ? h("p", { class: "muted", style: "width:100%;margin:0" }, k.summary) : null, ...built.inputs);
    settingsBox.hidden = !built.inputs.length;
  };
  kind.addEventListener("change", renderSettings);
  const form = h("form", { class: "inline card", "aria-labelledby": "new-job", onsubmit: async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim() };
    if (kind.value && kind.value !== "extract") body.kind = kind.value;
    if (kind.value === "extract") body.preset = preset.value.trim() || "invoice";
    if (kind.value === "extract" && review.value !== "") body.review_below = Number(review.value);
    let settings;
    try { settings = readSettings(); } catch (err) { showError(err); return; }
    if (Object.keys(settings).length) body.settings = settings;
    const job = await guarded(() => api("POST", "/v1/jobs", { json: body }));
    if (job) { say(`Job ${job.name} created`); location.hash = `#/jobs/${job.id}`; }
  } },
  h("h2", { id: "new-job", style: "width:100%;margin:0" }, "New job"),
  h("label", { for: "job-name" }, "Name", name), h("label", { for: "job-kind" }, "Kind", kind),
  ...extractOnly, settingsBox,
  h("button", { class: "primary", type: "submit" }, "Create job"));
  renderSettings();
  show("Jobs", form, h("div", { class: "scroll" }, h("table", { "aria-label": "Jobs" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Kind"), h("th", { scope: "col" }, "Latest run"), h("th", { scope: "col", class: "hide-sm" }, "Created"))),
    list)), more);
  await loading;
}

async function jobPage(id) {
  const job = await guarded(() => api("GET", `/v1/jobs/${id}`));
  if (!job) return show("Job not found");
  const files = h("ul", { id: "files", "aria-label": "Files" });
  const runs = h("tbody");
  const loadFiles = async () => {
    const body = await guarded(() => api("GET", `/v1/jobs/${id}/files?limit=100`));
    if (!body) return;
    files.replaceChildren(...body.items.map((f) => h("li", {}, `${f.name} `, badge(f.status), f.size ? h("span", { class: "muted" }, ` ${Math.round(f.size / 1024)} KB`) : null)));
    if (!body.items.length) files.append(h("li", { class: "muted" }, "No files yet."));
  };
  const loadRuns = async () => {
    const body = await guarded(() => api("GET", `/v1/jobs/${id}/runs?limit=20`));
    if (!body) return;
    runs.replaceChildren(...body.items.map((r) => h("tr", {},
      h("td", {}, h("a", { href: `#/runs/${r.id}` }, `Run ${r.run_number}`)), h("td", {}, badge(r.status)),
      h("td", {}, `${r.counters.completed + r.counters.failed}/${r.counters.total}`), h("td", { class: "hide-sm" }, fmtTime(r.created_at)))));
  };
  const upload = async (list) => {
    if (!list.length) return;
    const form = new FormData();
    for (const f of list) form.append("file", f, f.name);
    say(`Uploading ${list.length} file(s)…`);
    const body = await guarded(() => api("POST", `/v1/jobs/${id}/files`, { form }));
    if (body) { say(`Uploaded ${body.items.length} file(s)`); await Promise.all([loadFiles(), loadEstimate()]); }
  };
  const input = h("input", { type: "file", id: "file-input", multiple: true, accept: ".pdf,.png,.jpg,.jpeg,.tif,.tiff,.xml,.zip", onchange: (e) => upload([...e.target.files]) });
  const drop = h("div", { class: "drop", id: "drop" }, h("p", {}, "Drop documents here, or "), h("label", { for: "file-input", class: "button" }, "Choose files", input));
  input.style.position = "absolute"; input.style.opacity = "0"; input.style.width = "1px";
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); upload([...e.dataTransfer.files]); });
  const start = async (schedule) => {
    const body = schedule ? { schedule_time: new Date(schedule).toISOString() } : {};
    const run = await guarded(() => api("POST", `/v1/jobs/${id}/runs`, { json: body }));
    if (run) { say(schedule ? `Run ${run.run_number} scheduled` : `Run ${run.run_number} started`); location.hash = `#/runs/${run.id}`; }
  };
  const when = h("input", { type: "datetime-local", id: "schedule-at" });
  // The estimate is shown before any run starts, and again after each upload.
  const estimate = h("div", { id: "estimate", "aria-live": "polite" });
  const loadEstimate = async () => {
    try {
      estimate.replaceChildren(estimateView(await api("POST", `/v1/jobs/${id}/estimate`, { json: {} }), await unitOf(job.kind)));
    } catch (err) {
      estimate.replaceChildren(h("p", { class: "err" }, h("strong", {}, err.message), err.hint ? h("span", { class: "muted" }, ` ${err.hint}`) : null));
    }
  };
  show(job.name,
    h("p", { class: "muted" }, `Kind ${job.kind || "extract"} · ${job.fields.length} fields · review below ${job.review_below ?? "—"} · created ${fmtTime(job.created_at)}`),
    h("section", { "aria-labelledby": "h-files" }, h("h2", { id: "h-files" }, "Files"), drop, files),
    h("section", { "aria-labelledby": "h-start", class: "card" }, h("h2", { id: "h-start" }, "Run"),
      h("div", { class: "row" }, h("button", { class: "primary", type: "button", id: "start-run", onclick: () => start(null) }, "Start run"),
        h("label", { for: "schedule-at" }, "Or at", when), h("button", { type: "button", onclick: () => when.value ? start(when.value) : showError({ message: "Pick a time first", hint: "Choose when the run should start." }) }, "Schedule")),
      estimate),
    h("section", { "aria-labelledby": "h-runs" }, h("h2", { id: "h-runs" }, "Runs"),
      h("div", { class: "scroll" }, h("table", { "aria-label": "Runs" }, h("thead", {}, h("tr", {}, ["Run", "Status", "Done", "Created"].map((t) => h("th", { scope: "col" }, t)))), runs))));
  await Promise.all([loadFiles(), loadRuns(), loadEstimate()]);
}

// -- cost: figures from the API's estimate, a run's usage and /v1/stats ---------------------------------
const num = (v) => (v === null || v === undefined ? "—" : Number(v).toLocaleString("en-US"));
function money(v, cur) {
  if (v === null || v === undefined) return "—";
  const n = Number(v);
  return `${n < 0.01 && n > 0 ? n.toFixed(4) : n.toFixed(2)} ${cur || "USD"}`;
}
const figure = (id, value, label) => h("div", {}, h("b", { "data-cost": id }, value), label);
function estimateView(e, unit) {
  const b = e.budget || {};
  const left = b.limit === null || b.limit === undefined ? "no budget set" : money(b.remaining, b.currency);
  return h("div", { class: "card", id: "estimate-card" }, h("h3", {}, "Estimate before the run"),
    h("div", { class: "stats" }, figure("items", num(e.items), unit || "items"), figure("pages", num(e.pages), "pages"),
      figure("tokens", num(e.input_tokens + e.output_tokens), `tokens (${num(e.input_tokens)} in, ${num(e.output_tokens)} out)`),
      figure("cost", money(e.cost, e.currency), `expected with ${e.model}`), figure("remaining", left, "budget left this month")),
    b.allowed === false ? h("p", { class: "err" }, "A run started now would go over the monthly budget.") : null,
    e.assumptions && e.assumptions.length ? h("details", {}, h("summary", {}, "What the estimate assumes"), h("ul", {}, e.assumptions.map((a) => h("li", {}, a)))) : null);
}
function runCostView(run) {
  const u = run.usage, e = run.estimate;
  const actual = u ? [figure("input_tokens", num(u.input_tokens), "input tokens"), figure("output_tokens", num(u.output_tokens), "output tokens"),
    figure("pages", num(u.pages), "pages"), figure("cost", money(u.cost, u.currency), "actual cost")]
    : [h("p", { class: "muted" }, ["completed", "failed", "cancelled", "needs_review"].includes(run.status) ? "No usage was recorded for this run." : "The actual cost is summed when the run finishes.")];
  return h("section", { class: "card", "aria-labelledby": "h-cost" }, h("h2", { id: "h-cost" }, "Cost"),
    h("div", { class: "stats" }, ...actual,
      e ? figure("estimate", money(e.cost, e.currency), `estimated at start (${num(e.input_tokens + e.output_tokens)} tokens)`) : null));
}

// -- a run -------------------------------------------------------------------------------------
// An enrich run's items are row ranges: count rows. The run's outputs (the fan-in's totals) are the API's own figures
// once it finishes; while it runs, the rows of the completed ranges ("rows 2-101") against the job's row_count.
function rowCounts(run, tasks, total) {
  const o = run.outputs;
  if (o && o.rows_written !== undefined) {
    return { done: o.rows_written + o.rows_failed + o.rows_skipped, written: o.rows_written, failed: o.rows_failed, skipped: o.rows_skipped, total };
  }
  let done = 0;
  for (const t of tasks) {
    const m = /rows (\d+)-(\d+)/.exec(t.file_name || "");
    if (m && t.status === "completed") done += Number(m[2]) - Number(m[1]) + 1;
  }
  return { done, total };
}

// An item's size in its kind's unit when the kind measures it (an enrich range: "20 of 20 rows");
// else what extraction found in it.
function itemMeasure(t) {
  if (t.units_total !== null && t.units_total !== undefined) return `${num(t.units_done)} of ${num(t.units_total)} ${t.unit}`;
  return t.rows !== null && t.rows !== undefined ? `${t.rows} row(s), ${t.pages || 0} page(s)` : "";
}

// A failed item shows why; an item the kind measures shows how far it got (a paused range's last attempt
// ended on purpose, so its note is secondary); others show their last error, else what they found.
function itemOutcome(t) {
  const err = t.error ? h("span", { class: "err" }, `${t.error.code || ""}: ${t.error.message || ""}`, t.error.hint ? h("span", { class: "muted" }, ` — ${t.error.hint}`) : null) : null;
  const measured = t.units_total !== null && t.units_total !== undefined;
  if (!measured || t.status === "failed") return err || h("span", { class: "muted" }, itemMeasure(t));
  return h("span", {}, h("span", { class: "measure" }, itemMeasure(t)), t.error ? h("span", { class: "muted" }, ` · last attempt: ${t.error.code || t.error.message || ""}`) : null);
}

function rowsText(r) {
  const parts = r.written === undefined ? [`${num(r.done)} done`]
    : [`${num(r.written)} written`, `${num(r.failed)} failed`, `${num(r.skipped)} skipped`];
  return `${parts.join(" · ")} · ${r.total === null ? "?" : num(r.total)} total`;
}

const SEVERITY_ORDER = ["error", "warning", "info"];
const severityText = (counts) => SEVERITY_ORDER.filter((s) => counts && counts[s]).map((s) => `${counts[s]} ${s}`).join(" · ") || "no findings";

function findingItem(f) {
  return h("li", { class: `finding ${f.severity}`, "data-auditor": f.auditor, "data-page": f.page || "" },
    h("span", { class: `sev ${f.severity}` }, f.severity), " ",
    h("b", {}, f.page ? `Page ${f.page}` : "Whole document"), `: ${f.message}`,
    f.quote ? h("span", { class: "muted" }, ` “${f.quote}”`) : null,
    f.suggestion ? h("span", {}, ` → ${f.suggestion}`) : null);
}

// The audit kind's merged report (Run.outputs): a verdict per document, then each auditor's findings by page.
function auditReport(rep) {
  return h("section", { "aria-labelledby": "h-report", id: "audit-report" }, h("h2", { id: "h-report" }, "Audit report"),
    h("p", { id: "audit-verdict" }, "Overall verdict ", badge(rep.verdict), ` · ${severityText(rep.by_severity)}`),
    ...rep.documents.map((d, i) => h("article", { class: "card audit-doc", "aria-labelledby": `doc-${i}`, "data-document": d.document },
      h("h3", { id: `doc-${i}` }, `${d.document} `, h("span", { class: "verdict" }, "verdict ", badge(d.verdict))),
      h("p", { class: "muted" }, severityText(d.by_severity)),
      ...Object.entries(d.auditors).map(([name, a]) => {
        const hid = `doc-${i}-${name}`;
        const findings = [...a.findings].sort((x, y) => (x.page || 0) - (y.page || 0) || SEVERITY_ORDER.indexOf(x.severity) - SEVERITY_ORDER.indexOf(y.severity));
        return h("section", { class: "auditor", "aria-labelledby": hid, "data-auditor": name },
          h("h4", { id: hid }, `${name} `, badge(a.status)),
          a.reason ? h("p", { class: "muted" }, a.reason) : null,
          findings.length ? h("ul", { class: "findings", "aria-label": `${name} findings for ${d.document}` }, ...findings.map(findingItem))
            : h("p", { class: "muted" }, "No findings."));
      }))));
}

// The research kind's report (Run.outputs, written by its finish): the summary, each sub-question's answer with
// its sources (document, page), the sub-questions that failed, and the Markdown and PDF to download.
function researchReport(out, files) {
  const cite = (c) => h("li", { class: "citation", "data-document": c.document, "data-page": c.page },
    `${c.document}, page ${c.page}${c.page_end && c.page_end !== c.page ? `-${c.page_end}` : ""}`);
  return h("section", { "aria-labelledby": "h-report", id: "research-report" }, h("h2", { id: "h-report" }, "Research report"),
    h("h3", { id: "research-title" }, out.title || ""),
    h("p", { id: "research-summary" }, out.summary || ""),
    h("ul", { class: "downloads", "aria-label": "Report files" }, ...files.map((f) =>
      h("li", {}, h("a", { href: f.url, download: "", class: "download", "data-name": f.name }, `Download ${f.name}`)))),
    ...(out.subquestions || []).map((q, i) => h("article", { class: "card subquestion", "aria-labelledby": `sq-${i}`, "data-status": q.status },
      h("h4", { id: `sq-${i}` }, `${q.subquestion} `, badge(q.status)),
      q.answer ? h("p", {}, q.answer) : h("p", { class: "err" }, q.error || "No answer."),
      q.citations && q.citations.length ? h("ul", { class: "citations", "aria-label": `Sources for ${q.subquestion}` }, ...q.citations.map(cite)) : null)),
    out.failed_subquestions && out.failed_subquestions.length
      ? h("section", { "aria-labelledby": "h-failed", id: "research-failed" }, h("h3", { id: "h-failed" }, "Sub-questions that failed"),
        h("ul", {}, ...out.failed_subquestions.map((q) => h("li", {}, q))))
      : null);
}

async function runPage(id) {
  let run = await guarded(() => api("GET", `/v1/runs/${id}`));
  if (!run) return show("Run not found");
  const unit = run.unit || await unitOf(run.kind);
  const byRows = unit === "rows";
  const rowTotal = byRows ? (((await guarded(() => api("GET", `/v1/jobs/${run.job_id}`))) || {}).settings || {}).row_count ?? null : null;
  let lastTasks = [];
  const report = h("div", { id: "report" });
  const bar = h("span", { style: "width:0%" });
  const progress = h("div", { class: "bar", role: "progressbar", "aria-label": "Run progress", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": 0, id: "progress" }, bar);
  const pct = h("b", { id: "pct" }, "0%"), counts = h("b", { id: "counts" }, "—"), eta = h("b", { id: "eta" }, "—"), stage = h("b", { id: "stage" }, run.status);
  // The kind's own figures from its progress (an ingest run: pages read, chunks made, embedded, indexed).
  const figures = h("p", { id: "kind-counts", class: "muted" });
  const statusEl = h("span", { id: "run-status" }, badge(run.status));
  const tasks = h("tbody", { id: "tasks" });
  const exportsEl = h("ul", { id: "exports", "aria-label": "Exports" });
  const controls = h("div", { class: "row", role: "group", "aria-label": "Run controls" });
  const fmt = h("select", { id: "export-format", "aria-label": "Export format" }, h("option", { value: "xlsx" }, "XLSX"), h("option", { value: "csv" }, "CSV"));
  const newExport = h("form", { class: "inline", onsubmit: async (e) => {
    e.preventDefault();
    const out = await guarded(() => api("POST", `/v1/runs/${id}/exports`, { json: { format: fmt.value } }));
    if (out) { say(`${fmt.value.toUpperCase()} export requested`); pollExports(); }
  } }, fmt, h("button", { type: "submit", id: "new-export" }, "Export again"));
  const pollExports = async () => {
    for (let i = 0; i < 60 && location.hash === `#/runs/${id}`; i++) {
      await loadExports();
      if (!exportsEl.querySelector(".badge.pending, .badge.running")) return;
      await new Promise((r) => setTimeout(r, 500));
    }
  };
  const cost = h("div", { id: "cost" });
  const loadTasks = async () => {
    const body = await guarded(() => api("GET", `/v1/runs/${id}/tasks?limit=200`));
    if (!body) return;
    lastTasks = body.items;
    tasks.replaceChildren(...body.items.map((t) => h("tr", {},
      h("td", {}, t.file_name), h("td", {}, badge(t.status)), h("td", {}, t.attempts),
      h("td", {}, itemOutcome(t)))));
  };
  const loadExports = async () => {
    const body = await guarded(() => api("GET", `/v1/runs/${id}/exports`));
    if (!body) return;
    exportsEl.replaceChildren(...body.items.map((e) => h("li", {}, `${e.format.toUpperCase()} `, badge(e.status), " ",
      e.url ? h("a", { href: e.url, download: "", class: "download", "data-format": e.format }, `Download ${e.format.toUpperCase()}`) : null)));
    if (!body.items.length) exportsEl.append(h("li", { class: "muted" }, run.status === "needs_review" ? "Exports wait for the review." : "No exports yet."));
  };
  const act = (verb, label, json) => h("button", { type: "button", id: `run-${verb}`, onclick: async () => {
    const body = await guarded(() => api("POST", `/v1/runs/${id}/${verb}`, json ? { json } : {}));
    if (body) { say(`${label}: done`); await refresh(); }
  } }, label);
  const renderControls = () => {
    const st = run.status;
    controls.replaceChildren(...[
      ["pending", "running"].includes(st) ? act("pause", "Pause") : null,
      st === "paused" ? act("resume", "Resume") : null,
      ["pending", "running", "paused", "needs_review"].includes(st) ? act("cancel", "Cancel") : null,
      ["completed", "failed"].includes(st) && (run.counters.failed + run.counters.cancelled) > 0 ? act("retry", "Retry failed", { scope: "failed" }) : null,
      run.kind === "extract" ? h("a", { class: "button", href: `#/runs/${id}/review`, id: "open-review" }, st === "needs_review" ? "Review values (required)" : "Review values") : null,
    ].filter(Boolean));
  };
  const renderCost = () => cost.replaceChildren(runCostView(run));
  const setPct = (p) => { bar.style.width = `${p}%`; progress.setAttribute("aria-valuenow", p); pct.textContent = `${p}%`; };
  const renderRows = () => {
    const r = rowCounts(run, lastTasks, rowTotal);
    counts.textContent = rowsText(r);
    if (r.total) setPct(Math.min(100, Math.round((100 * r.done) / r.total)));
  };
  const renderReport = async () => {
    if (run.kind === "research" && run.outputs && run.outputs.files) {
      const files = ((await guarded(() => api("GET", `/v1/runs/${id}/files`))) || {}).items || [];
      return report.replaceChildren(researchReport(run.outputs, files));
    }
    report.replaceChildren(run.kind === "audit" && run.outputs && run.outputs.documents ? auditReport(run.outputs) : "");
  };
  const onOp = (op) => {
    setPct(Math.round(op.pct || 0));
    counts.textContent = `${op.done} done · ${op.failed} failed · ${op.total} total`;
    if (byRows) renderRows();
    eta.textContent = op.final ? "finished" : fmtDur(op.eta_seconds);
    stage.textContent = run.phase && op.stage === "running" ? run.phase : op.stage;
    figures.textContent = op.counts ? Object.entries(op.counts).map(([k, v]) => `${k.replace(/_/g, " ")} ${num(v)}`).join(" · ") : "";
  };
  const refresh = async () => {
    run = (await guarded(() => api("GET", `/v1/runs/${id}`))) || run;
    statusEl.replaceChildren(badge(run.status));
    renderControls(); renderCost();
    await Promise.all([loadTasks(), loadExports(), renderReport()]);
    if (byRows) renderRows();
  };
  show(`Run ${run.run_number}`,
    h("p", {}, h("a", { href: `#/jobs/${run.job_id}` }, "← the job"), " · status ", statusEl),
    h("section", { "aria-labelledby": "h-progress", class: "card" }, h("h2", { id: "h-progress" }, "Progress"), progress,
      h("div", { class: "stats", "aria-live": "polite" }, h("div", {}, pct, "complete"), h("div", { id: "unit" }, counts, unit), h("div", {}, eta, "ETA"), h("div", {}, stage, "stage")), figures),
    controls, cost, report,
    h("section", { "aria-labelledby": "h-exports" }, h("h2", { id: "h-exports" }, "Exports"), exportsEl, newExport),
    h("section", { "aria-labelledby": "h-tasks" }, h("h2", { id: "h-tasks" }, "Items"),
      h("div", { class: "scroll" }, h("table", { "aria-label": "Items" }, h("thead", {}, h("tr", {}, [unit === "documents" ? "File" : "Item", "Status", "Attempts", "Result or failure"].map((t) => h("th", { scope: "col" }, t)))), tasks))));
  await refresh();
  let last = 0;
  follow(`/v1/operations/${run.operation_id}/events`, (name, op) => {
    onOp(op);
    const now = Date.now();
    if (name === "done" || op.stage === "needs_review" || now - last > 1500) { last = now; refresh(); }
    if (op.stage === "exporting" || op.stage === "needs_review") setTimeout(refresh, 1200);
    return op.stage === "needs_review";
  });
}

// -- review ---------------------------------------------------------------------------------------
async function reviewPage(id) {
  const data = await guarded(() => api("GET", `/v1/runs/${id}/review`));
  if (!data) return show("Review not found");
  const names = [];
  for (const t of data.tasks) for (const f of t.fields) if (!names.includes(f.name)) names.push(f.name);
  const side = h("section", { id: "detail", "aria-labelledby": "h-detail" }, h("h2", { id: "h-detail" }, "Select a value"), h("p", { class: "muted" }, "Choose a value in the grid to see it on its page."));
  const summary = h("p", { id: "review-summary" });
  const renderSummary = (pending, status) => summary.replaceChildren(badge(status), ` ${pending} value(s) wait for review`,
    data.review_below !== null ? h("span", { class: "muted" }, ` · threshold ${data.review_below}`) : null);
  renderSummary(data.pending, data.status);
  const cellOf = (t, f) => {
    const cls = ["cell", f.flagged && !f.review ? "flagged" : "", f.review ? "reviewed" : ""].join(" ");
    return h("td", { class: cls }, h("button", { type: "button", "data-task": t.task_id, "data-field": f.name, onclick: () => select(t, f) },
      f.value === null || f.value === undefined ? "—" : String(f.value)),
      " ", h("span", { class: `conf ${f.flagged ? "low" : "muted"}`, title: "confidence" }, `${Math.round(f.confidence * 100)}%`),
      f.review ? h("span", { class: "muted" }, ` ✓ ${f.review}`) : null);
  };
  const select = async (t, f) => {
    side.replaceChildren(h("h2", { id: "h-detail" }, `${f.name} — ${t.file_name}`), h("p", {}, "Loading the page…"));
    const detail = await guarded(() => api("GET", `/v1/tasks/${t.task_id}/review`));
    if (!detail) return;
    const fd = detail.fields.find((x) => x.name === f.name) || f;
    const figure = h("figure", { class: "page", id: "page-view" });
    if (fd.page) {
      const res = await guarded(() => api("GET", `/v1/tasks/${t.task_id}/pages/${fd.page}?width=1000`, { raw: true }));
      if (res) {
        const url = URL.createObjectURL(await res.blob());
        figure.append(h("img", { src: url, alt: `Page ${fd.page} of ${t.file_name}` }));
        if (fd.box) {
          const b = fd.box, pad = 0.004;
          figure.append(h("div", { class: "hl", id: "highlight", role: "img", "aria-label": `where ${f.name} was read`,
            style: `left:${(b.left - pad) * 100}%;top:${(b.top - pad) * 100}%;width:${(b.width + 2 * pad) * 100}%;height:${(b.height + 2 * pad) * 100}%` }));
        }
      }
    } else figure.append(h("p", { class: "muted" }, "No page is known for this value."));
    const input = h("input", { id: "correct-value", value: fd.value ?? "", "aria-label": `Corrected ${f.name}` });
    const decide = async (action) => {
      const json = action === "corrected" ? { field: f.name, action, value: input.value } : { field: f.name, action };
      const out = await guarded(() => api("POST", `/v1/tasks/${t.task_id}/review`, { json }));
      if (out) { say(`${f.name} ${action}`); renderSummary(out.pending, out.run_status); await reviewPage(id); }
    };
    side.replaceChildren(h("h2", { id: "h-detail" }, `${f.name} — ${t.file_name}`),
      h("p", {}, `Read: `, h("code", {}, String(fd.read ?? "—")), ` · confidence ${Math.round(fd.confidence * 100)}% · page ${fd.page ?? "—"}`),
      fd.snippet ? h("p", { class: "muted" }, "Snippet: ", h("q", {}, fd.snippet)) : null,
      h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); decide("corrected"); } },
        h("label", { for: "correct-value" }, "Value", input),
        h("button", { type: "submit", class: "primary", id: "save-correction" }, "Save correction"),
        h("button", { type: "button", id: "confirm-value", onclick: () => decide("confirmed") }, "Confirm as read")),
      fd.history && fd.history.length ? h("ol", { "aria-label": "History" }, fd.history.map((e) => h("li", {}, `${e.action} by ${e.by} at ${fmtTime(e.at)}: ${e.old ?? "—"} → ${e.new ?? "—"}`))) : null,
      figure);
    input.focus();
  };
  const grid = h("table", { "aria-label": "Extracted values", id: "grid" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "File"), names.map((n) => h("th", { scope: "col" }, n)))),
    h("tbody", {}, data.tasks.map((t) => h("tr", {}, h("th", { scope: "row" }, t.file_name, t.error ? h("div", { class: "err" }, t.error.message) : null),
      names.map((n) => { const f = t.fields.find((x) => x.name === n); return f ? cellOf(t, f) : h("td", { class: "muted" }, "—"); })))));
  show("Review", h("p", {}, h("a", { href: `#/runs/${id}` }, "← the run")), summary,
    h("div", { class: "review" }, h("div", { class: "scroll" }, grid), side));
}

// -- automations and integrations -----------------------------------------------------------------
async function automationsPage() {
  const [autos, integ] = await Promise.all([guarded(() => api("GET", "/v1/automations")), guarded(() => api("GET", "/v1/integrations"))]);
  const connect = async () => {
    const out = await guarded(() => api("POST", "/v1/integrations/google", { json: {} }));
    if (out) location.href = out.authorization_url;
  };
  show("Automations",
    h("section", { "aria-labelledby": "h-int" }, h("h2", { id: "h-int" }, "Google accounts"),
      h("ul", { id: "integrations" }, ((integ && integ.items) || []).map((i) => h("li", {}, `${i.account} `, badge(i.status),
        i.status === "reconnect_required" ? h("button", { type: "button", onclick: connect }, "Reconnect") : null))),
      integ && !integ.items.length ? h("p", { class: "muted" }, "No Google account connected.") : null,
      h("button", { type: "button", onclick: connect }, "Connect a Google account")),
    h("section", { "aria-labelledby": "h-auto" }, h("h2", { id: "h-auto" }, "Automations"),
      h("div", { class: "scroll" }, h("table", { "aria-label": "Automations" },
        h("thead", {}, h("tr", {}, ["Name", "Enabled", "Account", "Query", "Job"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, ((autos && autos.items) || []).map((a) => h("tr", {}, h("td", {}, a.name), h("td", {}, a.enabled ? "yes" : "no"),
          h("td", {}, a.account || "—"), h("td", {}, h("code", {}, a.query || "")), h("td", {}, h("a", { href: `#/jobs/${a.job_id}` }, a.job_id)))))))));
}

// -- dead letters -----------------------------------------------------------------------------------
async function deadLettersPage() {
  const body = await guarded(() => api("GET", "/v1/dead-letters"));
  const items = (body && body.items) || [];
  show("Dead letters", ...[
    h("p", { class: "muted" }, "Messages a stage gave up on. Replaying sends one again to its stage."),
    h("div", { class: "scroll" }, h("table", { "aria-label": "Dead letters", id: "dead-letters" },
      h("thead", {}, h("tr", {}, ["#", "Kind", "Run", "Attempts", "Last error", "When", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, items.map((d) => h("tr", {}, h("td", {}, d.seq), h("td", {}, d.kind || "—"),
        h("td", {}, d.run_id ? h("a", { href: `#/runs/${d.run_id}` }, d.run_id) : "—"), h("td", {}, d.attempts),
        h("td", { class: "err" }, d.last_error || ""), h("td", {}, fmtTime(d.dead_lettered_at)),
        h("td", {}, d.replayed_at ? h("span", { class: "muted" }, `replayed ${fmtTime(d.replayed_at)}`)
          : h("button", { type: "button", "data-seq": d.seq, "aria-label": `Replay dead letter ${d.seq}`, onclick: async () => {
            const out = await guarded(() => api("POST", `/v1/dead-letters/${d.seq}/replay`));
            if (out) { say(`Dead letter ${d.seq} replayed`); deadLettersPage(); }
          } }, "Replay"))))))),
    !items.length && body ? h("p", { class: "muted", id: "no-dead-letters" }, "No dead letters.") : null].filter(Boolean));
}

// -- stats: charts drawn here as SVG ------------------------------------------------------------------
function lineChart(title, series, opts) {
  const W = 720, H = 240, L = 44, B = 28, T = 12, R = 12;
  const xs = series.flatMap((se) => se.points.map((p) => p[0]));
  const ys = series.flatMap((se) => se.points.map((p) => p[1]));
  // Whole-number gridlines: the top is a multiple of the 4 intervals drawn.
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y1 = Math.max(4, Math.ceil(Math.max(...ys) / 4) * 4);
  const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R), Y = (y) => H - B - (y / y1) * (H - B - T);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}: ${series.map((se) => `${se.name} total ${se.points.reduce((a, p) => a + p[1], 0)}`).join(", ")}` });
  for (let i = 0; i <= 4; i++) {
    const v = (y1 * i) / 4;
    svg.append(s("line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: "#e3e7ec" }), s("text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6470" }, Math.round(v)));
  }
  for (const [t, anchor] of [[x0, "start"], [(x0 + x1) / 2, "middle"], [x1, "end"]]) svg.append(s("text", { x: X(t), y: H - 8, "text-anchor": anchor, "font-size": 11, fill: "#5b6470" }, new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
  for (const se of series) {
    if (!se.points.length) continue;
    svg.append(s("polyline", { fill: "none", stroke: se.color, "stroke-width": 2, points: se.points.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ") }));
    for (const p of se.points) svg.append(s("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: se.color }));
  }
  return h("figure", { class: "chart card", id: opts && opts.id }, h("figcaption", {}, h("strong", {}, title), opts && opts.note ? h("span", { class: "muted" }, ` — ${opts.note}`) : null),
    svg, h("div", { class: "legend" }, series.map((se) => h("span", {}, h("i", { style: `background:${se.color}` }), se.name))));
}
async function statsPage(span) {
  span = span === "1h" ? "1h" : "24h";
  const st = await guarded(() => api("GET", `/v1/stats?window=${span}`));
  const nodes = [];
  if (st) {
    nodes.push(h("div", { class: "stats" }, h("div", {}, h("b", {}, st.jobs), "jobs"), h("div", {}, h("b", {}, st.pages), "pages read"),
      h("div", {}, h("b", {}, st.input_tokens + st.output_tokens), "tokens"),
      Object.entries(st.tasks || {}).map(([k, v]) => h("div", {}, h("b", {}, v), `items ${k}`))));
    const m = st.month || {};
    nodes.push(h("section", { class: "card", id: "usage", "aria-labelledby": "h-usage" }, h("h2", { id: "h-usage" }, "Your usage and budget"),
      h("div", { class: "stats" }, figure("month_tokens", num((m.input_tokens || 0) + (m.output_tokens || 0)), `tokens this month (${num(m.runs)} runs)`),
        figure("month_cost", money(m.cost, m.currency), "spent this month"),
        figure("budget", m.budget === null || m.budget === undefined ? "none" : money(m.budget, m.currency), "monthly budget"),
        figure("remaining", m.remaining === null || m.remaining === undefined ? "no limit" : money(m.remaining, m.currency), "budget left"),
        figure("total_cost", money(st.cost, st.currency), "spent all time"))));
  }
  // Over time, per stage: completed and failed per interval, from the API's series (by items' finish times).
  const se = st && st.series;
  if (se) {
    const pick = (w, label) => h("a", { class: "button", href: `#/stats/${w}`, "aria-current": w === span ? "true" : null }, label);
    nodes.push(h("h2", {}, "Over time"), h("div", { class: "row", role: "group", "aria-label": "Time window" }, pick("1h", "Last hour (5 min)"), pick("24h", "Last 24 hours (1 h)")));
    const charts = h("div", { id: "charts" });
    for (const stage of se.stages) {
      const at = (b) => Date.parse(b.start);
      const done = stage.buckets.reduce((a, b) => a + b.completed, 0), failed = stage.buckets.reduce((a, b) => a + b.failed, 0);
      const every = se.interval_s >= 3600 ? `${se.interval_s / 3600} h` : `${se.interval_s / 60} min`;
      charts.append(lineChart(`${stage.stage}: ${stage.unit} per ${every}`, [
        { name: "completed", color: "#0b5cad", points: stage.buckets.map((b) => [at(b), b.completed]) },
        { name: "failed", color: "#b42318", points: stage.buckets.map((b) => [at(b), b.failed]) },
      ], { note: `${done} completed, ${failed} failed`, id: `chart-${stage.stage}` }));
    }
    nodes.push(charts);
  }
  if (st && st.queues && st.queues.length) {
    nodes.push(h("h2", {}, "Queues"), h("div", { class: "scroll" }, h("table", { "aria-label": "Queues" },
      h("thead", {}, h("tr", {}, ["Subscription", "Depth", "Oldest", "Dead letters"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, st.queues.map((q) => h("tr", {}, h("td", {}, h("code", {}, q.subscription)), h("td", {}, q.depth), h("td", {}, fmtDur(q.oldest_age_s)), h("td", {}, q.dead_lettered)))))));
  }
  show("Stats", ...nodes.filter(Boolean));
}

// -- API reference: /v1/openapi.json rendered here ------------------------------------------------------
function schemaName(ref) { return ref ? ref.split("/").pop() : ""; }
function describeSchema(doc, sch, depth) {
  if (!sch || depth > 2) return null;
  if (sch.$ref) {
    const name = schemaName(sch.$ref);
    const target = doc.components && doc.components.schemas && doc.components.schemas[name];
    return h("details", {}, h("summary", {}, h("code", {}, name)), describeSchema(doc, target, depth + 1));
  }
  if (sch.properties) {
    return h("ul", {}, Object.entries(sch.properties).map(([k, v]) => h("li", {}, h("code", {}, k), " ",
      h("span", { class: "muted" }, v.type || schemaName(v.$ref) || (v.anyOf ? v.anyOf.map((a) => a.type || schemaName(a.$ref)).join(" | ") : "")),
      (sch.required || []).includes(k) ? " (required)" : "", v.description ? h("span", { class: "muted" }, ` — ${v.description}`) : null)));
  }
  return null;
}
async function apiPage() {
  let doc;
  try { doc = await (await fetch("/v1/openapi.json")).json(); } catch (e) { return show("API reference", h("p", { class: "err" }, "The API description could not be loaded.")); }
  const byTag = {};
  for (const [path, ops] of Object.entries(doc.paths || {})) {
    for (const [method, op] of Object.entries(ops)) {
      if (typeof op !== "object" || !op.responses) continue;
      const tag = (op.tags && op.tags[0]) || "other";
      (byTag[tag] = byTag[tag] || []).push({ path, method: method.toUpperCase(), op });
    }
  }
  const sections = Object.keys(byTag).sort().map((tag) => h("section", { "aria-labelledby": `tag-${tag}` }, h("h2", { id: `tag-${tag}` }, tag),
    byTag[tag].map(({ path, method, op }) => {
      const body = op.requestBody && op.requestBody.content && (op.requestBody.content["application/json"] || {}).schema;
      const ok = Object.entries(op.responses).find(([c]) => c.startsWith("2"));
      const okSchema = ok && ok[1].content && ok[1].content["application/json"] && ok[1].content["application/json"].schema;
      return h("div", { class: "api-op" }, h("div", {}, h("span", { class: "method" }, method), h("code", { class: "route" }, path)),
        h("div", {}, op.summary || ""),
        (op.parameters || []).length ? h("div", { class: "muted" }, "Parameters: ", op.parameters.map((p) => `${p.name} (${p.in})`).join(", ")) : null,
        body ? h("div", {}, "Body: ", describeSchema(doc, body, 0)) : null,
        okSchema ? h("div", {}, `Answer ${ok[0]}: `, describeSchema(doc, okSchema, 0)) : null,
        h("div", { class: "muted" }, "Errors: ", Object.keys(op.responses).filter((c) => !c.startsWith("2")).join(", ") || "—"));
    })));
  show("API reference", h("p", {}, `${doc.info ? doc.info.title + " " + doc.info.version : ""} · `, h("a", { href: "/v1/openapi.json" }, "openapi.json")),
    h("p", { class: "muted" }, "Send a bearer token (Authorization: Bearer …) from one of the configured issuers; errors come as {error: {code, message, details: {hint}}}."),
    ...sections);
}

// -- search: a collection's chunks for a query (GET /v1/collections/{id}/search) ------------------------
async function searchPage(collectionId) {
  const body = await guarded(() => api("GET", "/v1/collections"));
  const colls = (body && body.items) || [];
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const chosen = collectionId || (colls[0] && colls[0].id) || "";
  const results = h("ol", { id: "search-results", class: "hits", "aria-label": "Search results" });
  const select = h("select", { id: "search-collection", name: "collection" },
    colls.map((c) => h("option", { value: c.id, selected: c.id === chosen }, `${c.name} (${c.documents} documents, ${c.chunks} chunks)`)));
  const input = h("input", { id: "search-q", name: "q", type: "search", required: true, maxlength: 1000, value: params.get("q") || "", placeholder: "invoice number 12345" });
  async function run(ev) {
    if (ev) ev.preventDefault();
    const q = input.value.trim();
    if (!q || !select.value) return;
    const out = await guarded(() => api("GET", `/v1/collections/${encodeURIComponent(select.value)}/search?q=${encodeURIComponent(q)}&k=10`));
    if (!out) return;
    results.replaceChildren(...out.items.map((hit) => h("li", { class: "card" },
      h("div", {}, h("strong", {}, hit.document), h("span", { class: "muted" }, ` · page ${hit.page}${hit.page_end !== hit.page ? `–${hit.page_end}` : ""} · score ${hit.score.toFixed(3)}`)),
      h("p", { class: "snippet" }, hit.snippet))));
    say(out.items.length ? `${out.items.length} results for “${q}”` : `No results for “${q}”`);
    if (!out.items.length) results.replaceChildren(h("li", { id: "no-results", class: "muted" }, "No chunk matches."));
  }
  show("Search", ...[
    colls.length ? h("form", { id: "search-form", class: "row", role: "search", onsubmit: run },
      h("label", { for: "search-collection" }, "Collection"), select,
      h("label", { for: "search-q" }, "Query"), input,
      h("button", { type: "submit" }, "Search")) : h("p", { class: "muted", id: "no-collections" },
      "No collections yet: create one with POST /v1/collections (or sluice ingest), then add documents."),
    results]);
  if (input.value) await run();
}

// -- routing ------------------------------------------------------------------------------------------
async function route() {
  clearAlert();
  const parts = (location.hash || "#/jobs").slice(2).split("/");
  const [a, b, c] = parts;
  if (!S.token && !S.config.dev_identity && a !== "api") {
    return show("Sign in", h("p", {}, "Sign in to use the console: with Google when a client id is configured, or paste an ID token from a configured issuer."));
  }
  try {
    if (a === "jobs" && b) await jobPage(b);
    else if (a === "runs" && b && c === "review") await reviewPage(b);
    else if (a === "runs" && b) await runPage(b);
    else if (a === "automations") await automationsPage();
    else if (a === "dead-letters") await deadLettersPage();
    else if (a === "stats") await statsPage(b);
    else if (a && a.split("?")[0] === "search") await searchPage(b && b.split("?")[0]);
    else if (a === "api") await apiPage();
    else await jobsPage();
  } catch (err) { showError(err); }
  const t = document.getElementById("page-title");
  if (t && document.activeElement === document.body) t.focus({ preventScroll: true });
  document.body.dataset.readyAt = String(Math.round(performance.now()));
  document.body.dataset.ready = location.hash || "#/jobs";
}

async function boot() {
  try { S.config = await (await fetch("/console/config.json")).json(); } catch (e) { S.config = {}; }
  renderWho();
  window.addEventListener("hashchange", route);
  await route();
}
boot();
