// fleetd console: refreshes the daemon's health from /console/status and,
// with an API key pasted into the page, shows that workspace's devices,
// sessions and usage from the REST API. No framework, no build step.
//
// Every value from the API is put in the page as text (textContent, text
// nodes), never parsed as HTML: device names and statuses come from
// webhook senders. The key lives in this tab's sessionStorage only and
// travels as the x-api-key header, never in a URL.
"use strict";

(function () {
  const KEY_STORE = "fleetd.apiKey";
  const refreshMs = 1000 * (Number(document.body.dataset.refreshSeconds) || 3);
  const $ = (id) => document.getElementById(id);

  let apiKey = "";
  let workspace = ""; // of apiKey, once a device has told it
  let timer = 0;
  let busy = false;
  let again = false;
  // Device paging: a page starts at {phase, cursor}; "online first" walks
  // the online listing, then the offline one.
  const filter = { status: "", os: "", size: 25 };
  let pageStart = null;
  let nextStart = null;
  const history = [];

  function storedKey() {
    try { return sessionStorage.getItem(KEY_STORE) || ""; } catch (e) { return ""; }
  }
  function storeKey(k) {
    try {
      if (k) sessionStorage.setItem(KEY_STORE, k); else sessionStorage.removeItem(KEY_STORE);
    } catch (e) { /* storage disabled: the key lives in memory only */ }
  }

  // el builds an element; string children become text nodes.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  function fmtTime(rfc) {
    if (typeof rfc !== "string" || rfc === "") return "—";
    const t = Date.parse(rfc);
    const abs = rfc.replace("T", " ").replace(/Z$/, " UTC");
    if (Number.isNaN(t)) return abs;
    return abs + " (" + fmtAgo((Date.now() - t) / 1000) + ")";
  }
  function fmtAgo(s) {
    if (s < 0) return "in the future";
    if (s < 60) return Math.floor(s) + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }
  // fmtPeriod shows [from, to) as dates when both are midnights (UTC).
  function fmtPeriod(from, to) {
    const day = (s) => typeof s === "string" && /T00:00:00Z$/.test(s) ? s.slice(0, 10) : fmtTime(s).split(" (")[0];
    return day(from) + " – " + day(to) + (/T00:00:00Z$/.test(String(from)) ? " (UTC, end excluded)" : "");
  }
  function fmtDuration(sec) {
    sec = Math.max(0, Math.floor(Number(sec) || 0));
    const h = Math.floor(sec / 3600), m = Math.floor(sec % 3600 / 60), s = sec % 60;
    if (h > 0) return h + "h " + String(m).padStart(2, "0") + "m";
    if (m > 0) return m + "m " + String(s).padStart(2, "0") + "s";
    return s + "s";
  }

  // apiError carries the REST API's JSON error body.
  class apiError extends Error {
    constructor(status, body) {
      const msg = body && typeof body.message === "string" ? body.message : "HTTP " + status;
      super(msg);
      this.status = status;
      this.code = body && typeof body.error === "string" ? body.error : "";
    }
  }

  async function getJSON(path, key) {
    const headers = { "accept": "application/json" };
    if (key) headers["x-api-key"] = key;
    const res = await fetch(path, { headers, cache: "no-store", credentials: "omit", redirect: "error" });
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) throw new apiError(res.status, body);
    return body;
  }

  // Health ------------------------------------------------------------

  function showHealth(st) {
    const text = (st && st.text) || {};
    for (const node of document.querySelectorAll("[data-health]")) {
      const v = text[node.dataset.health];
      if (typeof v === "string") node.textContent = v;
    }
    const badge = $("ready-badge");
    badge.className = "badge " + (st && st.ready ? "ok" : "bad");
  }

  async function refreshHealth() {
    try {
      showHealth(await getJSON("/console/status"));
    } catch (e) {
      for (const node of document.querySelectorAll('[data-health="ready"]')) node.textContent = "unreachable";
      for (const node of document.querySelectorAll('[data-health="ready_cause"]')) node.textContent = "fleetd did not answer: " + e.message;
      $("ready-badge").className = "badge bad";
    }
  }

  // Workspace ---------------------------------------------------------

  function showError(e) {
    const box = $("ws-error");
    box.textContent = "";
    box.append(el("span", {}, e.message), " ", el("span", { class: "muted small" }, e.status ? "(HTTP " + e.status + (e.code ? ", " + e.code : "") + ")" : ""));
    box.hidden = false;
  }
  function clearError() { $("ws-error").hidden = true; $("ws-error").textContent = ""; }

  function fill(tableId, rows, emptyId) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren(...rows);
    $(emptyId).hidden = rows.length > 0;
  }

  function deviceRow(d) {
    const on = d.online === true;
    return el("tr", {},
      el("td", {}, el("span", { class: on ? "st-online" : "st-offline" }, on ? "online" : "offline")),
      el("td", { class: "name" }, String(d.name ?? "")),
      el("td", { class: "mono" }, String(d.id ?? "")),
      el("td", {}, String(d.os ?? "")),
      el("td", { class: "when" }, fmtTime(d.last_seen)));
  }

  function phases() {
    if (filter.status === "true") return ["true"];
    if (filter.status === "false") return ["false"];
    return ["true", "false"];
  }

  function devicesURL(phase, cursor, limit) {
    const q = new URLSearchParams({ limit: String(limit), online: phase });
    if (filter.os) q.set("os", filter.os);
    if (cursor) q.set("cursor", cursor);
    return "/api/v1/devices?" + q.toString();
  }

  // loadDevices reads the page that starts at start, up to filter.size
  // devices, crossing from the online to the offline listing.
  async function loadDevices(start) {
    const order = phases();
    let phase = start.phase, cursor = start.cursor;
    const items = [];
    let next = null;
    for (;;) {
      const page = await getJSON(devicesURL(phase, cursor, filter.size - items.length), apiKey);
      items.push(...(page.items || []));
      if (page.next_cursor) { next = { phase, cursor: page.next_cursor }; break; }
      const i = order.indexOf(phase);
      if (i + 1 >= order.length) { next = null; break; }
      phase = order[i + 1]; cursor = null;
      if (items.length >= filter.size) { next = { phase, cursor: null }; break; }
    }
    return { items, next };
  }

  async function refreshWorkspace() {
    if (!apiKey) return;
    const [devices, live, recent, usage] = await Promise.all([
      loadDevices(pageStart),
      getJSON("/api/v1/sessions?status=live&limit=50", apiKey),
      getJSON("/api/v1/sessions?limit=10", apiKey),
      getJSON("/api/v1/usage", apiKey),
    ]);
    nextStart = devices.next;
    fill("devices", devices.items.map(deviceRow), "devices-empty");
    $("devices-empty").textContent = history.length === 0 ? "No devices match." : "No more devices.";
    $("prev").disabled = history.length === 0;
    $("next").disabled = nextStart === null;
    $("page-label").textContent = "Page " + (history.length + 1);
    fill("live", (live.items || []).map((s) => el("tr", {},
      el("td", { class: "mono" }, String(s.device_id ?? "")),
      el("td", { class: "when" }, fmtTime(s.at)),
      el("td", {}, fmtDuration(s.duration_sec)))), "live-empty");
    fill("recent", (recent.items || []).map((s) => el("tr", {},
      el("td", { class: "mono" }, String(s.device_id ?? "")),
      el("td", {}, String(s.status ?? "")),
      el("td", {}, fmtDuration(s.duration_sec)),
      el("td", { class: "when" }, fmtTime(s.at)))), "recent-empty");
    $("usage-minutes").textContent = String(usage.session_minutes ?? "—");
    $("usage-active").textContent = String(usage.active_devices ?? "—");
    $("usage-devices").textContent = String(usage.devices ?? "—");
    $("usage-period").textContent = fmtPeriod(usage.from, usage.to);
    if (!workspace && devices.items.length > 0) {
      // The key's workspace is not in the listings; a device's detail has it.
      const one = await getJSON("/api/v1/devices/" + encodeURIComponent(devices.items[0].id), apiKey);
      workspace = String(one.workspace_id ?? "");
    }
    $("ws-name").textContent = workspace ? "Workspace " + workspace : "This workspace";
    $("ws-updated").textContent = new Date().toLocaleTimeString();
    $("ws-data").hidden = false;
    clearError();
  }

  // tick refreshes everything once; a tick asked for while one runs
  // (a key pasted during a refresh) runs right after it.
  async function tick() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do {
        again = false;
        await refreshHealth();
        if (apiKey) {
          try {
            await refreshWorkspace();
          } catch (e) {
            showError(e);
            if (e.status === 401) forget(false); // unknown or revoked: asking again will not help
          }
        }
      } while (again);
    } finally {
      busy = false;
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (!document.hidden) await tick();
      schedule();
    }, refreshMs);
  }

  function resetPaging() {
    history.length = 0;
    pageStart = { phase: phases()[0], cursor: null };
    nextStart = null;
  }

  function useKey(k) {
    apiKey = k;
    workspace = "";
    storeKey(k);
    $("forget").hidden = !k;
    resetPaging();
  }

  // forget drops the key; clearError is false when the error that made
  // the key useless must stay on screen.
  function forget(clear) {
    apiKey = "";
    storeKey("");
    $("forget").hidden = true;
    $("ws-data").hidden = true;
    if (clear) clearError();
  }

  function init() {
    $("workspace").hidden = false;
    $("health-live").hidden = false;
    $("key-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const k = $("api-key").value.trim();
      $("api-key").value = "";
      if (!k) {
        showError({ message: "Paste an API key (sk_live_…) first.", status: 0 });
        return;
      }
      useKey(k);
      await tick();
    });
    $("forget").addEventListener("click", () => { forget(true); $("api-key").focus(); });
    $("device-filter").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      filter.status = $("f-status").value;
      filter.os = $("f-os").value.trim();
      filter.size = Number($("f-size").value) || 25;
      resetPaging();
      await tick();
    });
    $("next").addEventListener("click", async () => {
      if (!nextStart) return;
      history.push(pageStart);
      pageStart = nextStart;
      await tick();
    });
    $("prev").addEventListener("click", async () => {
      if (history.length === 0) return;
      pageStart = history.pop();
      await tick();
    });
    const k = storedKey();
    if (k) useKey(k);
    tick();
    schedule();
  }

  init();
})();
