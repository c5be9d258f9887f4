// The page around the alarms: bed tiles, vitals and trend, the strip of open alarms,
// banners, the connection line and the clock.
import { badge, isOpen, isTechnical, kindName, sortAlarms } from "./alarms.js";
import { $, clockTime, domId, duration, h, neeText, num, s, spokenDuration } from "./dom.js";
import { DATA_STALE_S, STALL_MS, S, bedKey, now } from "./state.js";

export function tile(unit, bed) {
  const key = bedKey(unit, bed);
  let t = S.tiles.get(key);
  if (t) return t;
  const headingId = domId("bed-title", key);
  const flag = h("p", { class: "tile-flag" });
  const vitals = h("div", { class: "vitals" });
  const alarms = h("div", { class: "tile-alarms" });
  const note = h("p", { class: "ack-note", role: "status" });
  const el = h(
    "article",
    { class: "tile", id: domId("bed", key), "aria-labelledby": headingId, "data-bed": key },
    h(
      "header",
      { class: "tile-head" },
      h("h2", { id: headingId }, h("span", { class: "unit" }, unit), " / ", h("span", { class: "bedname" }, bed)),
      flag,
    ),
    vitals,
    alarms,
    note,
  );
  t = { key, unit, bed, el, vitals, alarms, flag, note };
  S.tiles.set(key, t);
  placeTile(t);
  return t;
}

function placeTile(t) {
  const main = $("beds");
  $("empty").hidden = true;
  const keys = [...S.tiles.keys()].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  const next = keys[keys.indexOf(t.key) + 1];
  const before = next ? S.tiles.get(next).el : null;
  if (before && before.parentNode === main) main.insertBefore(t.el, before);
  else main.append(t.el);
}

export function dropTile(key) {
  const t = S.tiles.get(key);
  if (!t) return;
  t.el.remove();
  S.tiles.delete(key);
  $("empty").hidden = S.tiles.size > 0;
}

export function renderVitals(t) {
  const entry = S.summaries.get(t.key);
  const sm = entry && entry.summary;
  t.vitals.replaceChildren();
  if (!sm) {
    t.vitals.append(h("p", { class: "muted" }, "No pressure summary yet."));
    return;
  }
  const metric = sm.metric === "sbp" ? "SBP" : "MAP";
  const low = typeof sm.target === "number" && typeof sm[sm.metric] === "number" && sm[sm.metric] < sm.target;
  const stale = typeof sm.ts === "number" ? now() - sm.ts > DATA_STALE_S : true;
  const drugs = Array.isArray(sm.infusions) ? sm.infusions : [];
  t.vitals.append(
    h(
      "div",
      { class: "numbers" + (stale ? " stale" : "") },
      h(
        "p",
        { class: "map" + (low ? " below" : "") },
        h("span", { class: "map-label" }, "MAP"),
        h("span", { class: "map-value" }, num(sm.map)),
        h("span", { class: "map-unit" }, "mmHg"),
        low ? h("span", { class: "below-word" }, `below ${metric} target`) : null,
      ),
      h(
        "dl",
        { class: "facts" },
        h("div", {}, h("dt", {}, "SBP/DBP"), h("dd", {}, `${num(sm.sbp)}/${num(sm.dbp)}`)),
        h("div", {}, h("dt", {}, "HR"), h("dd", {}, `${num(sm.hr)}`, h("span", { class: "u" }, " /min"))),
        h(
          "div",
          { class: "target" },
          h("dt", {}, "Target"),
          h("dd", {}, `${metric} ≥ ${num(sm.target)}`, h("span", { class: "profile" }, String(sm.profile || "").replace(/_/g, " "))),
        ),
      ),
    ),
    sparkline(sm),
    h(
      "div",
      { class: "drugs" },
      h("h3", { class: "mini" }, "Running vasopressors"),
      drugs.length
        ? h(
            "ul",
            {},
            drugs.map((d) => h("li", {}, h("span", { class: "drug" }, d.drug), ` ${d.rate} ${d.unit}`)),
          )
        : h("p", { class: "muted" }, "none"),
      typeof sm.ne_equivalent === "number" ? h("p", { class: "nee" }, neeText(sm.ne_equivalent)) : null,
    ),
    h(
      "p",
      { class: "updated" + (stale ? " stale" : ""), "data-ts": sm.ts ?? "" },
      updatedText(sm.ts),
    ),
  );
}


function updatedText(ts) {
  if (typeof ts !== "number") return "No data time.";
  const age = now() - ts;
  if (age > DATA_STALE_S) return `STALE: last data ${duration(age)} ago`;
  return `Data ${Math.max(0, Math.round(age))} s ago`;
}

function sparkline(sm) {
  const trend = (Array.isArray(sm.trend) ? sm.trend : []).filter((v) => typeof v === "number");
  const step = sm.trend_step_s || 30;
  if (trend.length < 2) {
    return h("p", { class: "spark-empty muted" }, "MAP trend: not enough data yet.");
  }
  const W = 300;
  const H = 64;
  const pad = 4;
  const showTarget = sm.metric === "map" && typeof sm.target === "number";
  const values = showTarget ? [...trend, sm.target] : trend;
  const lo = Math.min(...values) - 5;
  const hi = Math.max(...values) + 5;
  const x = (i) => pad + (i * (W - 2 * pad)) / (trend.length - 1);
  const y = (v) => H - pad - ((v - lo) * (H - 2 * pad)) / (hi - lo);
  const minutes = Math.round(((trend.length - 1) * step) / 60);
  const first = trend[0];
  const last = trend[trend.length - 1];
  const label =
    `MAP trend over the last ${minutes} min, one point every ${step} s: from ${num(first)} to ${num(last)} mmHg, ` +
    `lowest ${num(Math.min(...trend))}, highest ${num(Math.max(...trend))}` +
    (showTarget ? `; target ${num(sm.target)}` : "") +
    ".";
  const points = trend.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  const svg = s(
    "svg",
    { class: "spark", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, preserveAspectRatio: "none" },
    s("title", {}, label),
  );
  if (showTarget) {
    const ty = y(sm.target).toFixed(1);
    svg.append(s("line", { class: "spark-target", x1: pad, x2: W - pad, y1: ty, y2: ty }));
  }
  svg.append(s("polyline", { class: "spark-line", points }));
  svg.append(s("circle", { class: "spark-dot", cx: x(trend.length - 1).toFixed(1), cy: y(last).toFixed(1), r: 3.5 }));
  return h(
    "figure",
    { class: "spark-box" },
    svg,
    h(
      "figcaption",
      { class: "spark-caption", "aria-hidden": "true" },
      `MAP, last ${minutes} min`,
      showTarget ? h("span", { class: "spark-legend" }, ` ┄ target ${num(sm.target)}`) : null,
    ),
  );
}

export function renderStrip() {
  const list = sortAlarms([...S.alarms.values()].filter((e) => e.alarm && isOpen(e.alarm)));
  const ol = $("strip-list");
  ol.replaceChildren();
  if (!list.length) {
    ol.append(h("li", { class: "strip-none" }, "No open alarms."));
    return;
  }
  for (const e of list) {
    const a = e.alarm;
    const tech = isTechnical(e.kind);
    ol.append(
      h(
        "li",
        { class: `chip chip-${a.state} ${tech ? "chip-technical" : `chip-${a.priority}`}` },
        h(
          "a",
          { href: `#${domId("bed", bedKey(e.unit, e.bed))}` },
          badge(a, e.kind),
          h("span", { class: "chip-bed" }, `${e.unit}/${e.bed}`),
          h("span", { class: "chip-kind" }, kindName(e.kind)),
          a.state === "acknowledged" ? h("span", { class: "chip-ack" }, "ack'd") : null,
          h("time", { class: "chip-since", "data-onset": a.onset_ts }, duration(now() - a.onset_ts)),
        ),
      ),
    );
  }
}

function banner(id, level, text) {
  return h("div", { class: `banner banner-${level}`, id, role: "alert" }, h("span", { class: "banner-icon", "aria-hidden": "true" }, "⚠"), h("span", {}, text));
}

let lastBannerText = "";
export function renderBanners() {
  const out = [];
  const quiet = Date.now() - S.lastEvent;
  if (!S.haveSnapshot && S.me && !S.me.can_read) {
    // not signed in yet: the sign-in panel says what to do, no feed is expected
  } else if (!S.haveSnapshot && !S.feedOpen) {
    out.push(banner("banner-feed", "feed", "Not connected to the dashboard server yet: no live data."));
  } else if (quiet > STALL_MS) {
    out.push(
      banner(
        "banner-feed",
        "feed",
        `Live feed stalled: nothing from the dashboard server for ${Math.round(quiet / 1000)} s. What you see may be out of date.`,
      ),
    );
  }
  if (S.haveSnapshot && !S.bridge.connected) {
    out.push(
      banner(
        "banner-broker",
        "feed",
        `Dashboard disconnected from the MQTT broker${S.bridge.error ? ` (${S.bridge.error})` : ""}: alarms shown may be out of date.`,
      ),
    );
  }
  if (S.haveSnapshot && S.bridge.connected) {
    const statuses = [...S.statuses.values()].filter((e) => e.status);
    const offline = statuses.filter((e) => e.status.state !== "online");
    if (!statuses.length) {
      out.push(
        banner("banner-offline", "offline", "Stream processor OFFLINE: no processor has reported its status. Alarms are not being evaluated."),
      );
    }
    for (const e of offline) {
      const when = typeof e.status.ts === "number" ? ` since ${clockTime(e.status.ts)}` : "";
      const units = Array.isArray(e.status.units) && e.status.units.length ? ` (units ${e.status.units.join(", ")})` : "";
      out.push(
        banner(
          domId("banner-offline", e.instance),
          "offline",
          `Stream processor "${e.instance}"${units} is OFFLINE${when}: its alarms are not being evaluated.`,
        ),
      );
    }
  }
  const text = out.map((b) => b.textContent).join("|");
  if (text !== lastBannerText) {
    lastBannerText = text;
    $("banners").replaceChildren(...out);
  }
  document.body.classList.toggle("degraded", out.length > 0);
}

export function renderConn() {
  const el = $("conn");
  let cls;
  let text;
  if (!S.feedOpen) {
    cls = "conn-bad";
    text = "Live feed: reconnecting";
  } else if (!S.bridge.connected) {
    cls = "conn-bad";
    text = "Broker: disconnected";
  } else {
    cls = "conn-ok";
    text = `Live · broker ${S.bridge.broker}`;
  }
  el.className = `conn ${cls}`;
  if (el.textContent !== text) el.textContent = text;
}

export function tick() {
  const t = now();
  $("clock").textContent = clockTime(t);
  for (const el of document.querySelectorAll("[data-onset]")) {
    const onset = Number(el.getAttribute("data-onset"));
    if (Number.isFinite(onset)) {
      el.textContent = duration(t - onset);
      el.setAttribute("aria-label", spokenDuration(t - onset));
    }
  }
  for (const el of document.querySelectorAll(".updated[data-ts]")) {
    const ts = Number(el.getAttribute("data-ts"));
    if (el.getAttribute("data-ts") !== "" && Number.isFinite(ts)) {
      el.textContent = updatedText(ts);
      el.classList.toggle("stale", t - ts > DATA_STALE_S);
    }
  }
  renderBanners();
}
