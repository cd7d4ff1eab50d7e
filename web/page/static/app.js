// hubd page: live updates by Server-Sent Events, forms sent as JSON, ages that tick.
// Without JavaScript (or SSE) every form still posts and every page reloads.
"use strict";
(function () {
  const body = document.body;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const liveEl = document.getElementById("live");
  const partial = body.dataset.live;
  let lastSeq = body.dataset.seq || "";
  let refreshTimer = null;
  let pollTimer = null;
  let postponed = 0;

  function toast(text, kind, ms) {
    const box = document.getElementById("toasts");
    const t = document.createElement("div");
    t.className = "toast " + (kind || "ok");
    t.textContent = text;
    box.appendChild(t);
    setTimeout(() => t.remove(), ms || 4000);
  }
  document.querySelectorAll("#toasts .toast").forEach((t) => setTimeout(() => t.remove(), 4000));

  function ago(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 120) return s + " s";
    if (s < 7200) return Math.floor(s / 60) + " min";
    return Math.floor(s / 3600) + " h";
  }
  function tick() {
    const now = Date.now() / 1000;
    document.querySelectorAll("[data-ts]").forEach((el) => {
      el.textContent = ago(now - parseFloat(el.dataset.ts));
    });
  }
  setInterval(tick, 1000);

  async function refresh() {
    if (!partial) return;
    try {
      const r = await fetch(partial, {headers: {Accept: "text/html"}, credentials: "same-origin"});
      if (r.status === 401 || r.redirected) { location.reload(); return; }
      if (!r.ok) return;
      const html = await r.text();
      const root = document.getElementById("live-root");
      // Do not yank an outcome list from under a finger (a few times at most).
      const ae = document.activeElement;
      if (ae && ae.tagName === "SELECT" && root.contains(ae) && postponed < 5) {
        postponed += 1; scheduleRefresh(1500); return;
      }
      postponed = 0;
      root.innerHTML = html;
      tick();
      body.dataset.refreshed = String(Date.now());
    } catch (e) { /* offline: the next event or poll tries again */ }
  }
  function scheduleRefresh(delay) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, delay === undefined ? 150 : delay);
  }

  function setLive(on, text) {
    if (!liveEl) return;
    liveEl.className = "live " + (on ? "on" : "off");
    liveEl.textContent = text;
  }

  function poll() {
    clearInterval(pollTimer);
    pollTimer = setInterval(refresh, 15000);
  }

  // Every page follows the stream: the badge tells whether the hub is reachable live, and a new
  // alert pops up wherever the manager is; only pages with a live part redraw it.
  function connect() {
    if (!liveEl) return;  // not logged in (the login page)
    if (!window.EventSource) { if (partial) { setLive(false, "refreshing"); poll(); } return; }
    const url = "/api/stream" + (lastSeq ? "?after=" + encodeURIComponent(lastSeq) : "");
    const es = new EventSource(url);
    es.onopen = () => { setLive(true, "live"); clearInterval(pollTimer); };
    es.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      lastSeq = m.lastEventId || lastSeq;
      if (ev.type === "alert.raised" && ev.alert) {
        const where = ev.alert.zone || ev.alert.source;
        const other = ev.alert.hub !== liveEl.dataset.hub;  // a neighbour's (heard over MQTT or the mesh)
        toast("ALERT " + ev.alert.kind.toUpperCase() + " · " + where + (other ? " (hub " + ev.alert.hub + ")" : ""),
              "alarm", 10000);
        if (navigator.vibrate) navigator.vibrate([300, 100, 300]);
      }
      scheduleRefresh();
    };
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        // Refused (e.g. too many streams): fall back to polling, retry live later.
        setLive(false, partial ? "refreshing" : "offline");
        if (partial) poll();
        setTimeout(connect, 60000);
      } else {
        setLive(false, "reconnecting");
      }
    };
  }

  async function sendForm(form, submitter) {
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const data = {};
    new FormData(form).forEach((v, k) => { if (k !== "csrf_token" && k !== "next") data[k] = v; });
    form.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    try {
      const r = await fetch(form.dataset.api, {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "application/json"},
        body: JSON.stringify(data),
      });
      let reply = {};
      try { reply = await r.json(); } catch (e) { /* not JSON */ }
      if (r.ok) {
        toast(((submitter && submitter.textContent) || "Done").trim() + ": done", "ok");
      } else {
        toast((reply.error && reply.error.message) || ("refused: HTTP " + r.status), "err", 8000);
        if (r.status === 401) setTimeout(() => location.reload(), 1500);
      }
    } catch (e) {
      toast("No answer from the hub: " + e, "err", 8000);
    } finally {
      form.querySelectorAll("button").forEach((b) => { b.disabled = false; });
      scheduleRefresh(0);
    }
  }

  document.addEventListener("submit", (e) => {
    const form = e.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.api || !window.fetch) return;
    e.preventDefault();
    sendForm(form, e.submitter);
  });

  window.hubdLoadedAt = Date.now();  // lets tests tell an in-place update from a reload
  connect();
})();
