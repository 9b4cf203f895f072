// ctibridge dashboard. Plain JavaScript, no build step, no network fetch beyond this bridge.
//
// Data sources (all on the bridge itself):
// - GET /api/v1/phones, /api/v1/calls, /api/v1/calls.csv, /api/v1/dial/{id} (bearer token);
// - GET /api/v1/events (SSE; `access_token` in the query because EventSource cannot set
//   headers) for live calls, phone state and dial status;
// - GET /readyz (no token) every few seconds, for the "AMI link down" banner.
// The token lives in sessionStorage: it is gone when the browser tab closes.
"use strict";

const TOKEN_KEY = "ctibridge.token";
const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  phones: new Map(), // extension -> phone (API view)
  calls: new Map(), // call id -> {call, state, since, answeredAt}
  dials: new Map(), // request id -> dial status
  source: null,
};

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
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
  const res = await fetch(path, Object.assign({}, options, { headers }));
  if (res.status === 401 || res.status === 403) {
    const body = await res.json().catch(() => ({}));
    showMessage(`${res.status}: ${body.message || body.error || "token refused"} — enter a token with the needed scope.`, true);
    throw new Error("unauthorized");
  }
  return res;
}

// ----- phones -----

function phoneDnd(p) {
  const s = p.state || {};
  if (s.dnd !== null && s.dnd !== undefined) return s.dnd;
  if (s.pbx && s.pbx.dnd !== null && s.pbx.dnd !== undefined) return s.pbx.dnd;
  return null;
}

function phoneRegistered(p) {
  const s = p.state || {};
  if (s.registered !== null && s.registered !== undefined) return s.registered;
  if (s.pbx && s.pbx.registered !== null && s.pbx.registered !== undefined) return s.pbx.registered;
  return null;
}

function phoneCall(p) {
  const s = p.state || {};
  if (s.call) return `${s.call.state}${s.call.remote ? " with " + s.call.remote : ""}`;
  if (s.pbx && s.pbx.call) {
    const c = s.pbx.call;
    return `${c.state}${c.remote ? " with " + c.remote : ""}`;
  }
  return "";
}

function yesNo(v) {
  if (v === true) return el("span", { class: "on" }, "yes");
  if (v === false) return el("span", { class: "off" }, "no");
  return el("span", { class: "off" }, "?");
}

function renderPhones() {
  const body = $("#phones tbody");
  body.replaceChildren();
  const select = $("#dial-from");
  const chosen = select.value;
  select.replaceChildren();
  for (const p of [...state.phones.values()].sort((a, b) => a.extension.localeCompare(b.extension))) {
    const dnd = phoneDnd(p);
    const toggle = el("button", {
      class: "dnd-toggle" + (dnd ? " dnd-on" : ""),
      "data-ext": p.extension,
      title: "Switch DND on the phone (and the PBX, when configured)",
      onclick: () => setDnd(p.extension, !dnd),
    }, dnd ? "DND on" : "DND off");
    const s = p.state || {};
    body.append(el("tr", { "data-ext": p.extension },
      el("td", {}, p.extension),
      el("td", {}, p.vendor || (p.configured ? "" : "discovered")),
      el("td", {}, yesNo(phoneRegistered(p))),
      el("td", {}, toggle),
      el("td", { class: "phone-call" }, phoneCall(p)),
      el("td", {}, s.auth_failed ? el("span", { class: "bad" }, "auth failed") : shortTime(s.last_seen)),
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
  try {
    const res = await api(`/api/v1/phones/${encodeURIComponent(ext)}/dnd`, {
      method: "PUT",
      body: JSON.stringify({ enabled }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      showMessage(`DND for ${ext}: ${body.message || res.status}`, true);
      return;
    }
    showMessage(`DND ${enabled ? "on" : "off"} sent to ${ext}.`);
    await loadPhones();
  } catch (e) {
    if (e.message !== "unauthorized") showMessage(`DND for ${ext}: ${e.message}`, true);
  }
}

// ----- live calls -----

function party(p) {
  if (!p) return "";
  const n = p.number || p.extension || "";
  return p.name && p.name !== n ? `${p.name} <${n}>` : n;
}

function seconds(from) {
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(from)) / 1000));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}

function shortTime(t) {
  if (!t) return "";
  return t.replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/Z$/, "");
}

function renderCalls() {
  const body = $("#live-calls tbody");
  body.replaceChildren();
  for (const [id, c] of state.calls) {
    body.append(el("tr", { "data-call": id, class: c.fresh ? "fresh" : "" },
      el("td", {}, party(c.call.from)),
      el("td", {}, party(c.call.to)),
      el("td", {}, c.call.direction || ""),
      el("td", { class: "call-state" }, c.state),
      el("td", { class: "timer" }, seconds(c.answeredAt || c.call.started_at)),
    ));
    c.fresh = false;
  }
  $("#live-count").textContent = String(state.calls.size);
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
  let c = state.calls.get(call.id);
  if (type === "call.ended") {
    state.calls.delete(call.id);
    renderCalls();
    loadRecords();
    return;
  }
  if (!c) {
    c = { call, state: "started", fresh: true };
    state.calls.set(call.id, c);
  }
  c.call = call;
  if (type === "call.ringing") c.state = c.answeredAt ? c.state : "ringing";
  if (type === "call.answered") {
    c.state = "talking";
    c.answeredAt = call.answered_at || ev.at;
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
  const recent = [...state.dials.values()].slice(-8).reverse();
  for (const d of recent) {
    list.append(el("li", { "data-request": d.request_id },
      `${d.from} → ${d.to} via ${d.via}: `,
      el("span", { class: "dial-state state-" + d.state }, d.state),
      d.message ? ` (${d.message})` : "",
      d.call_id ? ` · call ${d.call_id}` : "",
    ));
  }
}

function trackDial(status) {
  if (!status || !status.request_id) return;
  state.dials.set(status.request_id, Object.assign(state.dials.get(status.request_id) || {}, status));
  renderDials();
}

async function pollDial(id) {
  for (let i = 0; i < 60; i++) {
    await new Promise((r) => setTimeout(r, 2000));
    const d = state.dials.get(id);
    if (d && (d.state === "answered" || d.state === "failed")) return;
    const res = await api(`/api/v1/dial/${encodeURIComponent(id)}`).catch(() => null);
    if (res && res.ok) trackDial(await res.json());
  }
}

async function submitDial(e) {
  e.preventDefault();
  const body = { from: $("#dial-from").value, to: $("#dial-to").value, via: $("#dial-via").value };
  try {
    const res = await api("/api/v1/dial", { method: "POST", body: JSON.stringify(body) });
    const answer = await res.json().catch(() => ({}));
    if (!res.ok) {
      showMessage(`Call not placed (${res.status}): ${answer.message || answer.error || ""}`, true);
      return;
    }
    showMessage(`Request ${answer.request_id} accepted (${answer.via}).`);
    trackDial(answer);
    pollDial(answer.request_id);
  } catch (err) {
    if (err.message !== "unauthorized") showMessage(`Call not placed: ${err.message}`, true);
  }
}

// ----- records -----

function recordFilters() {
  const q = new URLSearchParams();
  if ($("#search-ext").value) q.set("ext", $("#search-ext").value);
  if ($("#search-number").value) q.set("number", $("#search-number").value);
  if ($("#search-direction").value) q.set("direction", $("#search-direction").value);
  return q;
}

async function loadRecords() {
  const q = recordFilters();
  q.set("limit", "25");
  const res = await api("/api/v1/calls?" + q).catch(() => null);
  if (!res || !res.ok) return;
  const page = await res.json();
  const body = $("#records tbody");
  body.replaceChildren();
  for (const r of page.records || []) {
    body.append(el("tr", { "data-record": r.id },
      el("td", {}, shortTime(r.started_at)),
      el("td", {}, party(r.from)),
      el("td", {}, party(r.to)),
      el("td", {}, r.direction),
      el("td", {}, r.disposition + (r.missed ? " (missed)" : "")),
      el("td", {}, r.answered_by || ""),
      el("td", {}, r.talk_s !== undefined && r.talk_s !== null ? Number(r.talk_s).toFixed(0) : ""),
      el("td", {}, r.dial_request_id || ""),
    ));
  }
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
  "stream.reset",
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
      else if (type === "stream.reset") loadPhones();
    });
  }
}

async function checkHealth() {
  const banner = $("#ami-banner");
  try {
    const res = await fetch("/readyz", { cache: "no-store" });
    if (res.ok || res.status === 404) {
      banner.hidden = true;
      return;
    }
    const body = await res.json().catch(() => ({}));
    const checks = Array.isArray(body.checks) ? body.checks : [];
    const failing = checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail || c.message || "failing"}`);
    banner.textContent = "Not ready — " + (failing.join("; ") || `status ${res.status}`);
    banner.hidden = false;
  } catch (e) {
    banner.textContent = "The bridge does not answer.";
    banner.hidden = false;
  }
}

function tick() {
  for (const td of document.querySelectorAll("#live-calls td.timer")) {
    const id = td.parentElement.dataset.call;
    const c = state.calls.get(id);
    if (c) td.textContent = seconds(c.answeredAt || c.call.started_at);
  }
}

async function start() {
  showMessage("");
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
    history.replaceState(null, "", location.pathname);
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
