// Live view of the softswitch: polls api/live and redraws. No framework, no build step.
// Every value from the server goes through textContent: user agents and display names
// come from phones on the network and must never be interpreted as HTML.
"use strict";

(() => {
  const POLL_MS = 1500;
  const STALE_AFTER_MS = 6000;
  const STORAGE_KEY = "softswitch-admin-token";

  const $ = (id) => document.getElementById(id);
  let token = takeToken();
  let clockOffset = 0; // server wall clock minus ours, in seconds
  let lastOk = 0;
  let timer = null;
  let inFlight = false;

  // The token arrives in the fragment (#token=...), which is never sent to a server; it is
  // moved to sessionStorage and removed from the address bar, history and bookmarks.
  function takeToken() {
    const match = /(?:^|&)token=([^&]*)/.exec(location.hash.slice(1));
    if (match) {
      sessionStorage.setItem(STORAGE_KEY, decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(STORAGE_KEY) || "";
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, String(value));
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined || child === "") continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function formatDuration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = String(s % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
  }

  function setState(text, kind) {
    const state = $("state");
    state.textContent = text;
    state.className = `state ${kind}`;
  }

  function showLogin(refused) {
    $("login").hidden = false;
    $("login-error").hidden = !refused;
    $("tenants").replaceChildren();
    setState("token needed", "error");
    $("token").focus();
  }

  function phoneItem(p) {
    return el(
      "li",
      { class: "phone", "data-user": p.user, "data-tenant": p.tenant },
      el("span", { class: "ext" }, p.user),
      el("span", { class: "name" }, p.name),
      el("span", { class: "detail" }, [p.user_agent || "unknown phone", p.source].join(" · ")),
    );
  }

  function callItem(c) {
    const since = c.answered_at !== null ? c.answered_at : c.started_at;
    return el(
      "li",
      { class: "call", "data-call-id": c.id },
      el("span", { class: "ext" }, `${c.caller} → ${c.callee}`),
      c.state !== "answered" ? el("span", { class: "detail" }, c.state) : null,
      c.codec ? el("span", { class: "codec" }, c.codec) : null,
      el("span", { class: "duration", "data-since": since }, formatDuration(c.duration)),
    );
  }

  function roomItem(r) {
    return el(
      "li",
      { class: "room", "data-room": r.room },
      el("span", { class: "ext" }, r.room),
      el("span", { class: "detail" }, r.participants.join(", ") || "empty"),
      el("span", { class: "duration" }, plural(r.participants.length, "participant")),
    );
  }

  function list(title, items, render, emptyText) {
    const nodes = [el("h3", {}, title)];
    nodes.push(
      items.length
        ? el("ul", { class: title.toLowerCase().replace(/\s+/g, "-") }, ...items.map(render))
        : el("p", { class: "none" }, emptyText),
    );
    return nodes;
  }

  function tenantSection(t) {
    const registered = new Set(t.phones.map((p) => p.user)).size;
    return el(
      "section",
      { class: "tenant", "data-tenant": t.domain },
      el("h2", {}, t.name, t.name !== t.domain ? el("small", {}, t.domain) : null),
      el(
        "p",
        { class: "summary" },
        `${registered} of ${plural(t.extensions, "extension")} registered · ` +
          `${plural(t.calls.length, "call")} · ${plural(t.conferences.length, "room")} in use`,
      ),
      ...list("Calls", t.calls, callItem, "No calls"),
      ...list("Phones", t.phones, phoneItem, "No phone registered"),
      ...(t.conferences.length ? list("Conference rooms", t.conferences, roomItem, "") : []),
    );
  }

  function render(data) {
    clockOffset = data.now - Date.now() / 1000;
    $("tenants").replaceChildren(...data.tenants.map(tenantSection));
    setState(data.state === "stopping" ? "stopping" : "live", data.state);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  // Durations move every second between polls, from the server's clock.
  function tick() {
    const now = Date.now() / 1000 + clockOffset;
    for (const node of document.querySelectorAll(".duration[data-since]")) {
      node.textContent = formatDuration(now - Number(node.dataset.since));
    }
    if (lastOk && Date.now() - lastOk > STALE_AFTER_MS) setState("no answer from the daemon", "stale");
  }

  async function poll() {
    timer = null;
    if (!token) {
      showLogin(false);
      return;
    }
    inFlight = true;
    try {
      const response = await fetch("api/live", {
        headers: { Authorization: `Bearer ${token}` },
        cache: "no-store",
      });
      if (response.status === 401) {
        sessionStorage.removeItem(STORAGE_KEY);
        token = "";
        showLogin(true);
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      render(await response.json());
      lastOk = Date.now();
    } catch (err) {
      setState(`cannot reach the daemon (${err.message})`, "error");
    } finally {
      inFlight = false;
    }
    schedule();
  }

  function schedule() {
    if (timer === null && !document.hidden) timer = setTimeout(poll, POLL_MS);
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem(STORAGE_KEY, token);
    $("login").hidden = true;
    if (!inFlight) poll();
  });

  // A phone in a pocket should not keep polling: stop while hidden, refresh on return.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
    } else if (token && timer === null && !inFlight) {
      poll();
    }
  });

  setInterval(tick, 1000);
  poll();
})();
