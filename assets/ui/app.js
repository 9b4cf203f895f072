// ctibridge dashboard. Plain JavaScript, no build step, no network fetch beyond this bridge.
//
// Data sources (all on the bridge itself):
// - GET /api/v1/phones, /api/v1/calls, /api/v1/calls.csv, /api/v1/dial/{id} (bearer token);
// - GET /api/v1/events (SSE; `access_token` in the query because EventSource cannot set
//   headers) for live calls, phone state and dial status;
// - GET /readyz (no token) every few seconds, for the "AMI link down" banner.
// The token lives in sessionStorage: it is gone when the browser tab closes. A link such as
// `/ui#token=demo-token` (what `ctibridge demo` prints) hands it over once; the fragment never
// reaches the server and is removed from the address bar right away.
//
// Element ids and classes that scripts and tests rely on: #phones (rows data-ext), the DND
// buttons `.dnd-toggle[data-ext]` (data-dnd on|off|unknown), #live-calls (rows data-call,
// data-request), #dial-form, #dial-requests (items data-request, data-state), #records (rows
// data-record, data-request).
"use strict";

const TOKEN_KEY = "ctibridge.token";
const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  phones: new Map(), // extension -> phone (API view)
  calls: new Map(), // call id -> {call, state, answeredAt, fresh}
  dials: new Map(), // request id -> dial status
  pendingDnd: new Set(), // extensions with a DND change in flight
  source: null,
  recordsTimer: null,
};

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === null || c === undefined || c === "") continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function showMessage(text, isError) {
  const m = $("#message");
  m.textContent = text;
  m.classList.toggle("error", !!isError);
  m.hidden = !text;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  if (options.body && !headers["Content-Type"]) headers["Content-Type"] = "application/json";
  const res = await fetch(path, Object.assign({ cache: "no-store" }, options, { headers }));
  if (res.status === 401 || res.status === 403) {
    const body = await res.json().catch(() => ({}));
    showMessage(`${res.status}: ${body.message || body.error || "token refused"} — enter a token with the needed scope.`, true);
    throw new Error("unauthorized");
  }
  return res;
}

// ----- formatting -----

// `sip:101@pbx.example` / `"Bob" <sip:102@host>` / `102` → the number.
function number(v) {
  if (!v) return "";
  let s = String(v).trim();
  const angle = s.match(/<([^>]*)>/);
  if (angle) s = angle[1];
  s = s.replace(/^sips?:/i, "");
  const at = s.indexOf("@");
  return at > 0 ? s.slice(0, at) : s;
}

function party(p) {
  if (!p) return "";
  const n = p.number || p.extension || "";
  return p.name && p.name !== n ? `${p.name} <${n}>` : n;
}

// A party as a table cell: the name, and the number in grey beside it.
function partyCell(p) {
  if (!p) return el("td", { class: "party" });
  const n = p.number || p.extension || "";
  // PBX caller names often carry the extension already ("Alice 101").
  if (!p.name || p.name === n || (n && p.name.endsWith(" " + n))) {
    return el("td", { class: "party", title: party(p) }, p.name || n);
  }
  return el("td", { class: "party", title: party(p) }, p.name, " ", el("span", { class: "muted" }, n));
}

function elapsed(from) {
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(from)) / 1000));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}

function shortTime(t) {
  if (!t) return "";
  return t.replace("T", " ").replace(/\.\d+/, "").replace(/(Z|[+-]00:?00)$/, "");
}

// The time of day of an RFC 3339 UTC time, the whole time in the tooltip.
function clock(t) {
  if (!t) return "";
  const m = String(t).match(/T(\d\d:\d\d:\d\d)/);
  return el("span", { title: shortTime(t) + " UTC" }, m ? m[1] : shortTime(t));
}

// A request id, shortened for tables (the whole id in the tooltip).
function requestBadge(id) {
  if (!id) return "";
  const short = id.length > 9 ? id.slice(0, 8) + "…" : id;
  return el("span", { class: "badge", title: "click-to-call request " + id }, short);
}

function secs(v) {
  return v === undefined || v === null ? "" : Number(v).toFixed(0);
}

function yesNo(v) {
  if (v === true) return el("span", { class: "on" }, "yes");
  if (v === false) return el("span", { class: "off" }, "no");
  return el("span", { class: "off" }, "?");
}

// ----- phones -----

function pick(p, key) {
  const s = p.state || {};
  if (s[key] !== null && s[key] !== undefined) return s[key];
  if (s.pbx && s.pbx[key] !== null && s.pbx[key] !== undefined) return s.pbx[key];
  return null;
}

// Asterisk's channel states in the phone's words.
const PBX_STATES = { up: "talking", ring: "dialing", ringing: "ringing", down: "dialing", busy: "busy" };

// The call on a phone: the state as the phone reported it (it knows about hold), else as the
// PBX sees its channel; the other party as the PBX sees it (every vendor fills that), else as
// the phone reported it (some leave it out).
function phoneCall(p) {
  const s = p.state || {};
  const own = s.call;
  const pbx = s.pbx && s.pbx.call;
  if (!own && !pbx) return null;
  const pbxState = pbx ? String(pbx.state || "").toLowerCase() : "";
  const st = own ? String(own.state || "").toLowerCase() : PBX_STATES[pbxState] || pbxState;
  const remote = number((pbx && pbx.remote) || (own && own.remote));
  return { state: st, text: `${st}${remote ? " with " + remote : ""}` };
}

function renderPhones() {
  const body = $("#phones tbody");
  body.replaceChildren();
  const select = $("#dial-from");
  const chosen = select.value;
  select.replaceChildren();
  for (const p of [...state.phones.values()].sort((a, b) => a.extension.localeCompare(b.extension))) {
    const dnd = pick(p, "dnd");
    const pending = state.pendingDnd.has(p.extension);
    const toggle = el("button", {
      type: "button",
      class: "dnd-toggle" + (dnd === true ? " dnd-on" : dnd === null ? " dnd-unknown" : ""),
      "data-ext": p.extension,
      "data-dnd": dnd === true ? "on" : dnd === false ? "off" : "unknown",
      disabled: pending,
      title: "Switch DND on the phone (and the PBX, when configured)",
      onclick: () => setDnd(p.extension, !dnd),
    }, pending ? "DND …" : dnd === true ? "DND on" : dnd === false ? "DND off" : "DND ?");
    if (dnd === null && !pending) toggle.title = "The phone has not reported DND yet; click to switch it on";
    const s = p.state || {};
    const call = phoneCall(p);
    const model = el("span", { title: [p.vendor, p.model, p.mac].filter(Boolean).join(" · ") }, p.vendor || p.model || "");
    body.append(el("tr", { "data-ext": p.extension },
      el("td", {}, p.extension),
      el("td", {}, p.vendor || p.model ? model : p.configured ? "" : "discovered"),
      el("td", {}, yesNo(pick(p, "registered"))),
      el("td", {}, toggle),
      el("td", { class: "phone-call", "data-state": call ? call.state : "idle" }, call ? call.text : ""),
      el("td", {}, s.auth_failed ? el("span", { class: "bad" }, "auth failed") : clock(s.last_seen)),
    ));
    if (p.configured) select.append(el("option", { value: p.extension }, p.extension));
  }
  if (chosen) select.value = chosen;
}

async function loadPhones() {
  const res = await api("/api/v1/phones");
  if (!res.ok) return;
  state.phones.clear();
  for (const p of await res.json()) state.phones.set(p.extension, p);
  renderPhones();
}

async function setDnd(ext, enabled) {
  state.pendingDnd.add(ext);
  renderPhones();
  try {
    const res = await api(`/api/v1/phones/${encodeURIComponent(ext)}/dnd`, {
      method: "PUT",
      body: JSON.stringify({ enabled }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      showMessage(`DND for ${ext}: ${body.message || res.status}`, true);
    } else {
      showMessage(`DND ${enabled ? "on" : "off"} sent to ${ext}.`);
    }
  } catch (e) {
    if (e.message !== "unauthorized") showMessage(`DND for ${ext}: ${e.message}`, true);
  } finally {
    state.pendingDnd.delete(ext);
    await loadPhones().catch(() => renderPhones());
  }
}

// ----- live calls -----

function renderCalls() {
  const body = $("#live-calls tbody");
  body.replaceChildren();
  const sorted = [...state.calls.entries()].sort((a, b) => a[1].call.started_at.localeCompare(b[1].call.started_at));
  for (const [id, c] of sorted) {
    const req = c.call.dial_request_id || "";
    body.append(el("tr", { "data-call": id, "data-request": req || null, class: c.fresh ? "fresh" : "" },
      partyCell(c.call.from),
      partyCell(c.call.to),
      el("td", {}, c.call.direction || ""),
      el("td", { class: "call-state", "data-state": c.state }, c.state),
      el("td", { class: "timer num" }, elapsed(c.answeredAt || c.call.started_at)),
      el("td", {}, requestBadge(req)),
    ));
    c.fresh = false;
  }
  $("#live-count").textContent = String(state.calls.size);
  $("#live-empty").hidden = state.calls.size > 0;
}

function onCallEvent(type, ev) {
  const d = ev.data || {};
  if (type === "call.merged") {
    state.calls.delete(d.id);
    renderCalls();
    return;
  }
  const call = d.call;
  if (!call) return;
  if (type === "call.ended") {
    state.calls.delete(call.id);
    renderCalls();
    scheduleRecords();
    return;
  }
  let c = state.calls.get(call.id);
  if (!c) {
    c = { call, state: "started", fresh: true };
    state.calls.set(call.id, c);
  }
  c.call = call;
  if (type === "call.ringing" && !c.answeredAt) c.state = "ringing";
  if (type === "call.answered") {
    c.state = "talking";
    c.answeredAt = c.answeredAt || call.answered_at || ev.at;
  }
  if (type === "call.held") c.state = "on hold";
  if (type === "call.unheld") c.state = "talking";
  if (type === "call.transferred") c.state = "transferred";
  renderCalls();
}

// ----- click-to-call -----

function renderDials() {
  const list = $("#dial-requests");
  list.replaceChildren();
  const recent = [...state.dials.values()]
    .sort((a, b) => String(b.created_at || "").localeCompare(String(a.created_at || "")))
    .slice(0, 8);
  for (const d of recent) {
    const done = d.ended_at ? " · ended" : "";
    list.append(el("li", { "data-request": d.request_id, "data-state": d.state },
      `${d.from} → ${d.to} via ${d.via || d.via_requested || "?"}: `,
      el("span", { class: "dial-state state-" + d.state }, d.state),
      d.state === "failed" && (d.message || d.reason) ? ` (${d.message || d.reason})` : "",
      done,
      " ",
      el("span", { class: "badge", title: "request id" }, d.request_id),
    ));
  }
}

function trackDial(status) {
  if (!status || !status.request_id) return;
  state.dials.set(status.request_id, Object.assign(state.dials.get(status.request_id) || {}, status));
  renderDials();
}

function dialOver(d) {
  return d && (d.state === "failed" || (d.state === "answered" && d.ended_at));
}

// The live stream carries `dial.status`; polling is the fallback while it is down.
async function pollDial(id) {
  for (let i = 0; i < 90; i++) {
    await new Promise((r) => setTimeout(r, 2000));
    if (dialOver(state.dials.get(id))) return;
    if (state.source && state.source.readyState === EventSource.OPEN) continue;
    const res = await api(`/api/v1/dial/${encodeURIComponent(id)}`).catch(() => null);
    if (res && res.ok) trackDial(await res.json());
  }
}

async function submitDial(e) {
  e.preventDefault();
  const body = { from: $("#dial-from").value, to: $("#dial-to").value.trim(), via: $("#dial-via").value };
  const button = $("#dial-form button[type=submit]");
  button.disabled = true;
  try {
    const res = await api("/api/v1/dial", { method: "POST", body: JSON.stringify(body) });
    const answer = await res.json().catch(() => ({}));
    if (!res.ok) {
      showMessage(`Call not placed (${res.status}): ${answer.message || answer.error || ""}`, true);
      return;
    }
    showMessage(`Request ${answer.request_id} accepted (via ${answer.via}).`);
    trackDial(answer);
    pollDial(answer.request_id);
  } catch (err) {
    if (err.message !== "unauthorized") showMessage(`Call not placed: ${err.message}`, true);
  } finally {
    button.disabled = false;
  }
}

// ----- records -----

function recordFilters() {
  const q = new URLSearchParams();
  if ($("#search-ext").value) q.set("ext", $("#search-ext").value.trim());
  if ($("#search-number").value) q.set("number", $("#search-number").value.trim());
  if ($("#search-direction").value) q.set("direction", $("#search-direction").value);
  return q;
}

function matchedPhones(r) {
  const phones = new Set((r.correlation || []).map((c) => c.phone).filter(Boolean));
  return [...phones].sort().join(", ");
}

async function loadRecords() {
  const q = recordFilters();
  q.set("limit", "25");
  const res = await api("/api/v1/calls?" + q).catch(() => null);
  if (!res || !res.ok) return;
  const page = await res.json();
  const body = $("#records tbody");
  body.replaceChildren();
  $("#records-empty").hidden = (page.records || []).length > 0;
  for (const r of page.records || []) {
    body.append(el("tr", { "data-record": r.id, "data-request": r.dial_request_id || null },
      el("td", {}, shortTime(r.started_at)),
      partyCell(r.from),
      partyCell(r.to),
      el("td", {}, r.direction),
      el("td", { class: "disp-" + r.disposition }, r.disposition + (r.missed ? " (missed)" : "")),
      el("td", {}, r.answered_by || ""),
      el("td", { class: "num" }, secs(r.ring_s)),
      el("td", { class: "num" }, secs(r.talk_s)),
      el("td", { class: "num" }, r.hold_s ? secs(r.hold_s) : ""),
      el("td", {}, matchedPhones(r)),
      el("td", {}, requestBadge(r.dial_request_id)),
    ));
  }
}

// Several calls can end at once: one reload for the burst.
function scheduleRecords() {
  clearTimeout(state.recordsTimer);
  state.recordsTimer = setTimeout(() => loadRecords(), 300);
}

async function downloadCsv() {
  const res = await api("/api/v1/calls.csv?" + recordFilters()).catch(() => null);
  if (!res || !res.ok) return;
  const url = URL.createObjectURL(await res.blob());
  const a = el("a", { href: url, download: "calls.csv" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ----- live stream and health -----

const EVENT_TYPES = [
  "call.started", "call.ringing", "call.answered", "call.held", "call.unheld",
  "call.transferred", "call.merged", "call.ended", "phone.state", "dial.status", "gap",
  "stream.reset", "stream.closed",
];

function setStreamState(s, text) {
  const pill = $("#stream-state");
  pill.dataset.state = s;
  pill.textContent = "live: " + text;
}

function connectStream() {
  if (state.source) state.source.close();
  if (!state.token) {
    setStreamState("off", "no token");
    return;
  }
  const src = new EventSource("/api/v1/events?access_token=" + encodeURIComponent(state.token));
  state.source = src;
  src.onopen = () => setStreamState("on", "connected");
  src.onerror = () => setStreamState("error", "reconnecting");
  for (const type of EVENT_TYPES) {
    src.addEventListener(type, (msg) => {
      let ev;
      try { ev = JSON.parse(msg.data); } catch { return; }
      if (type.startsWith("call.")) onCallEvent(type, ev);
      else if (type === "phone.state" && ev.data && ev.data.phone) {
        state.phones.set(ev.data.phone.extension, ev.data.phone);
        renderPhones();
      } else if (type === "dial.status") trackDial(ev.data);
      else if (type === "gap") showMessage(`AMI gap on ${ev.data.pbx}: ${ev.data.reason}`, true);
      else if (type === "stream.reset") {
        // Some events were missed: what is known of live calls may be stale.
        state.calls.clear();
        renderCalls();
        loadPhones().catch(() => {});
        scheduleRecords();
      } else if (type === "stream.closed") setStreamState("error", "cut off, reconnecting");
    });
  }
}

// `/readyz` answers 503 with the failing checks (`{"checks": {"ami": {"ok": false, …}}}`).
async function checkHealth() {
  const banner = $("#ami-banner");
  try {
    const res = await fetch("/readyz", { cache: "no-store" });
    if (res.ok || res.status === 404) {
      banner.hidden = true;
      return;
    }
    const body = await res.json().catch(() => ({}));
    const raw = body.checks || {};
    const checks = Array.isArray(raw) ? raw : Object.entries(raw).map(([name, c]) => Object.assign({ name }, c));
    const failing = checks.filter((c) => !c.ok);
    const text = failing.map((c) => `${c.name}: ${c.detail || c.message || "failing"}`).join("; ");
    const amiDown = failing.some((c) => c.name === "ami");
    banner.textContent = (amiDown ? "AMI link down — calls are not seen. " : "Not ready — ") + (text || `status ${res.status}`);
    banner.dataset.check = amiDown ? "ami" : "other";
    banner.hidden = false;
  } catch (e) {
    banner.textContent = "The bridge does not answer.";
    banner.dataset.check = "unreachable";
    banner.hidden = false;
  }
}

function tick() {
  for (const td of document.querySelectorAll("#live-calls td.timer")) {
    const id = td.parentElement.dataset.call;
    const c = state.calls.get(id);
    if (c) td.textContent = elapsed(c.answeredAt || c.call.started_at);
  }
}

async function start() {
  showMessage("");
  renderCalls();
  if (!state.token) {
    showMessage("Enter an API token (the demo prints one) to see phones and calls.");
    setStreamState("off", "no token");
    return;
  }
  try {
    await loadPhones();
    await loadRecords();
  } catch (e) {
    if (e.message !== "unauthorized") showMessage(e.message, true);
    return;
  }
  connectStream();
}

function init() {
  // `#token=…` in the address (the demo prints such a link) is taken once and removed.
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    state.token = decodeURIComponent(m[1]);
    sessionStorage.setItem(TOKEN_KEY, state.token);
    history.replaceState(null, "", location.pathname + location.search);
  }
  $("#token").value = state.token;
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("#token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    start();
  });
  $("#forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = "";
    $("#token").value = "";
    if (state.source) state.source.close();
    state.source = null;
    start();
  });
  $("#dial-form").addEventListener("submit", submitDial);
  $("#search-form").addEventListener("submit", (e) => { e.preventDefault(); loadRecords(); });
  $("#csv").addEventListener("click", downloadCsv);
  setInterval(tick, 1000);
  setInterval(checkHealth, 3000);
  checkHealth();
  start();
}

init();
