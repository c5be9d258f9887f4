// streamproc central station: signs in (/api/me, /api/login), reads /events (Server-Sent
// Events), renders beds and alarms, posts acknowledgements to /api/ack as the signed-in user.
// ES modules, no framework, no build step, nothing external; the alarm kinds are the
// server's (/api/kinds). This module applies the server's events to the page.
// Decision support only, not an order: confirm at the bedside.
import * as api from "./api.js";
import { setupSignin, showSignin, whoami } from "./account.js";
import { alarmsOf, announce, loadKinds, renderAlarms } from "./alarms.js";
import { $ } from "./dom.js";
import { dropTile, renderBanners, renderConn, renderStrip, renderVitals, tick, tile } from "./render.js";
import { S, bedKey } from "./state.js";

let es = null;

function applyAlarm(entry, quiet) {
  if (entry.alarm) S.alarms.set(entry.topic, entry);
  else S.alarms.delete(entry.topic);
  const key = bedKey(entry.unit, entry.bed);
  if (!entry.alarm && !S.summaries.has(key) && !alarmsOf(key).length) {
    dropTile(key);
    renderStrip();
    return;
  }
  const t = tile(entry.unit, entry.bed);
  if (entry.alarm && entry.alarm.state === "acknowledged") t.note.textContent = "";
  if (!quiet) {
    renderAlarms(t);
    renderStrip();
    announce(entry);
  }
}

function applySummary(entry, quiet) {
  const key = bedKey(entry.unit, entry.bed);
  if (entry.summary) S.summaries.set(key, entry);
  else S.summaries.delete(key);
  if (!entry.summary && !alarmsOf(key).length) {
    dropTile(key);
    return;
  }
  const t = tile(entry.unit, entry.bed);
  if (!quiet) renderVitals(t);
}

function applyStatus(entry) {
  if (entry.status) S.statuses.set(entry.instance, entry);
  else S.statuses.delete(entry.instance);
  renderBanners();
}

function applySnapshot(snap) {
  S.haveSnapshot = true;
  S.serverStation = snap.station || S.serverStation;
  if (typeof snap.ts === "number") S.offset = snap.ts - Date.now() / 1000;
  S.bridge = snap.bridge || S.bridge;
  S.alarms.clear();
  S.summaries.clear();
  S.statuses.clear();
  for (const key of [...S.tiles.keys()]) dropTile(key);
  for (const e of snap.summaries || []) applySummary(e, true);
  for (const e of snap.alarms || []) applyAlarm(e, true);
  for (const e of snap.statuses || []) if (e.status) S.statuses.set(e.instance, e);
  for (const t of S.tiles.values()) {
    renderVitals(t);
    renderAlarms(t);
  }
  for (const e of S.alarms.values()) announce(e);
  renderStrip();
  renderBanners();
  renderConn();
  $("empty").hidden = S.tiles.size > 0;
  $("empty").textContent = "No beds yet: waiting for the processor's summaries and alarms.";
}

function handle(name, fn) {
  es.addEventListener(name, (ev) => {
    S.lastEvent = Date.now();
    let data;
    try {
      data = JSON.parse(ev.data);
    } catch (_e) {
      return;
    }
    fn(data);
    renderConn();
  });
}

async function connect() {
  await loadKinds();
  if (es) es.close();
  es = api.events();
  S.feedOpen = false;
  es.onopen = () => {
    S.feedOpen = true;
    S.lastEvent = Date.now();
    renderConn();
  };
  es.onerror = () => {
    S.feedOpen = false;
    renderConn();
    renderBanners();
    if (es.readyState === EventSource.CLOSED) {
      // refused (signed out, session over) or the server went away: ask who we are first
      window.setTimeout(async () => {
        await whoami();
        if (S.me && S.me.can_read) connect();
        else showSignin("Your sign-in has ended: sign in again.");
      }, 3000);
    }
  };
  handle("snapshot", applySnapshot);
  handle("alarm", (d) => applyAlarm(d, false));
  handle("summary", (d) => applySummary(d, false));
  handle("status", applyStatus);
  handle("bridge", (d) => {
    S.bridge = d;
    renderBanners();
  });
  handle("heartbeat", (d) => {
    if (typeof d.ts === "number") S.offset = d.ts - Date.now() / 1000;
    if (typeof d.connected === "boolean" && d.connected !== S.bridge.connected) {
      S.bridge = { ...S.bridge, connected: d.connected };
      renderBanners();
    }
  });
}

function rerenderAlarms() {
  for (const t of S.tiles.values()) renderAlarms(t);
}

document.addEventListener("DOMContentLoaded", async () => {
  setupSignin(() => {
    rerenderAlarms();
    if (!es || es.readyState === EventSource.CLOSED) connect();
  });
  tick();
  window.setInterval(tick, 1000);
  await whoami();
  if (S.me && S.me.can_read) connect();
  else showSignin(null);
});
