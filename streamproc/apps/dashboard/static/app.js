// streamproc central station: signs in (/api/me, /api/login), reads /events (Server-Sent
// Events), renders beds and alarms, posts acknowledgements to /api/ack as the signed-in user.
// No framework, no build step, nothing external.
// Decision support only, not an order: confirm at the bedside.
"use strict";

(() => {
  const STALL_MS = 15000; // no event or heartbeat for this long: the feed has stalled
  const DATA_STALE_S = 60; // a bed's summary older than this is shown as stale
  const CLEARED_SHOWN_S = 900; // cleared alarms stay visible (muted) this long
  const TECHNICAL = new Set(["data_stale", "abp_signal_invalid", "abp_line_damped", "abp_line_ringing", "abp_no_pulse"]);
  const RANK = { high: 3, medium: 2, low: 1 };
  const MARK = { high: "!!!", medium: "!!", low: "!" };
  const WORD = { high: "HIGH", medium: "MEDIUM", low: "LOW" };
  const KIND_NAME = {
    hypotension: "Hypotension",
    data_stale: "No data from this bed",
    abp_signal_invalid: "Arterial signal invalid",
    abp_line_damped: "Arterial line damped",
    abp_line_ringing: "Arterial line ringing",
    abp_no_pulse: "No arterial pulse on the trace",
    advisory_dopamine: "Advisory: dopamine running",
    advisory_phenylephrine: "Advisory: phenylephrine running",
    advisory_vasopressin_dose: "Advisory: vasopressin dose",
    advisory_vasopressin_without_ne: "Advisory: vasopressin without norepinephrine",
    advisory_premature_ne_trauma: "Advisory: premature norepinephrine (trauma)",
    advisory_perfusion: "Advisory: perfusion markers",
    advisory_vasoconstriction: "Advisory: excessive vasoconstriction",
    advisory_dose_unknown: "Advisory: dose cannot be checked",
  };
  const AUDIENCE = { bedside: "bedside", charge_nurse: "charge nurse", physician: "physician" };

  const S = {
    alarms: new Map(), // topic -> {topic, unit, bed, kind, alarm}
    summaries: new Map(), // "unit/bed" -> {topic, unit, bed, summary}
    statuses: new Map(), // instance -> {topic, instance, status}
    bridge: { connected: false, error: null, since: null, broker: "" },
    serverStation: "station-1",
    me: null, // /api/me: {user, method, can_read, can_write, methods, public_read}
    offset: 0, // server clock minus browser clock, seconds
    lastEvent: 0,
    feedOpen: false,
    haveSnapshot: false,
    announced: new Set(),
    tiles: new Map(), // "unit/bed" -> {el, vitals, alarms, flag}
  };
  let es = null;

  // ------------------------------------------------------------------ helpers
  const $ = (id) => document.getElementById(id);

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return el;
  }

  const now = () => Date.now() / 1000 + S.offset;
  const num = (x, digits = 0) =>
    typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "–";
  const bedKey = (unit, bed) => `${unit}/${bed}`;
  const domId = (prefix, text) => `${prefix}-${String(text).replace(/[^A-Za-z0-9_-]/g, "_")}`;

  function duration(seconds) {
    const t = Math.max(0, Math.floor(seconds));
    const hh = Math.floor(t / 3600);
    const mm = Math.floor((t % 3600) / 60);
    const ss = String(t % 60).padStart(2, "0");
    return hh > 0 ? `${hh} h ${String(mm).padStart(2, "0")} min` : `${mm}:${ss}`;
  }
  function spokenDuration(seconds) {
    const t = Math.max(0, Math.floor(seconds));
    if (t < 60) return `${t} seconds`;
    const m = Math.floor(t / 60);
    if (m < 120) return `${m} minute${m === 1 ? "" : "s"}`;
    return `${Math.floor(m / 60)} hours`;
  }
  const clockTime = (ts) =>
    new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const kindName = (kind) =>
    KIND_NAME[kind] ||
    (kind.startsWith("advisory_")
      ? "Advisory: " + kind.slice(9).replace(/_/g, " ")
      : kind.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase()));
  const isOpen = (a) => a.state === "active" || a.state === "acknowledged";
  const isTechnical = (kind) => TECHNICAL.has(kind);
  const isAdvisory = (kind) => kind.startsWith("advisory_");

  // The recommendation paragraph is "step. Check first: ... Caution: ... disclaimer":
  // the step alone, since checks and cautions are shown as lists.
  function stepText(alarm) {
    let text = String(alarm.recommendation || "");
    for (const cut of [" Check first:", " Caution:", " Decision support only"]) {
      const i = text.indexOf(cut);
      if (i >= 0) text = text.slice(0, i);
    }
    return text.trim();
  }

  const canWrite = () => Boolean(S.me && S.me.can_write);

  // open alarms by priority (high first), active before acknowledged, oldest first; cleared last
  function sortAlarms(list) {
    const stateRank = { active: 1, acknowledged: 0, cleared: 0 };
    const open = (e) => (isOpen(e.alarm) ? 1 : 0);
    return list.sort(
      (a, b) =>
        open(b) - open(a) ||
        RANK[b.alarm.priority] - RANK[a.alarm.priority] ||
        stateRank[b.alarm.state] - stateRank[a.alarm.state] ||
        a.alarm.onset_ts - b.alarm.onset_ts ||
        a.topic.localeCompare(b.topic),
    );
  }

  function alarmsOf(key) {
    const out = [];
    for (const entry of S.alarms.values()) {
      if (bedKey(entry.unit, entry.bed) === key && entry.alarm) out.push(entry);
    }
    return sortAlarms(out);
  }

  // ------------------------------------------------------------------ tiles
  function tile(unit, bed) {
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

  function dropTile(key) {
    const t = S.tiles.get(key);
    if (!t) return;
    t.el.remove();
    S.tiles.delete(key);
    $("empty").hidden = S.tiles.size > 0;
  }

  function renderVitals(t) {
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

  // the vasopressors as one norepinephrine-equivalent dose (server-computed; "≥" when a
  // running dose is unknown and left out)
  function neeText(value, unknown) {
    const partial = Array.isArray(unknown) && unknown.length;
    return `NE-equivalent ${partial ? "≥ " : ""}${value.toFixed(2)} mcg/kg/min`;
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

  function badge(alarm, kind) {
    if (isTechnical(kind)) {
      return h(
        "span",
        { class: "badge badge-technical" },
        h("span", { class: "badge-word" }, "TECHNICAL"),
        h("span", { class: "sr-only" }, `, ${alarm.priority} priority`),
      );
    }
    return h(
      "span",
      { class: `badge badge-${alarm.priority}` },
      h("span", { class: "mark", "aria-hidden": "true" }, MARK[alarm.priority]),
      h("span", { class: "badge-word" }, WORD[alarm.priority]),
      h("span", { class: "sr-only" }, " priority"),
    );
  }

  function renderAlarm(entry, t) {
    const a = entry.alarm;
    const kind = entry.kind;
    const titleId = domId("alarm-title", entry.topic);
    const classes = [
      "alarm",
      `alarm-${a.state}`,
      isTechnical(kind) ? "alarm-technical" : `prio-${a.priority}`,
      isAdvisory(kind) ? "alarm-advisory" : "",
    ].join(" ");
    const li = h("li", {
      class: classes,
      tabindex: "-1",
      "data-alarm-id": a.alarm_id,
      "data-state": a.state,
      "data-priority": a.priority,
      "data-kind": kind,
      "aria-labelledby": titleId,
    });
    const stateWord =
      a.state === "acknowledged"
        ? h("span", { class: "state state-ack" }, "ACKNOWLEDGED", a.acknowledged_by ? ` by ${a.acknowledged_by}` : "")
        : a.state === "cleared"
          ? h(
              "span",
              { class: "state state-cleared" },
              `${a.clear_reason === "bed_evicted" ? "CLOSED, NOT MONITORED" : "CLEARED"} ${clockTime(a.ts)}`,
            )
          : h("span", { class: "state state-active" }, "ACTIVE");
    li.append(
      h(
        "div",
        { class: "alarm-head" },
        badge(a, kind),
        h("h3", { class: "alarm-title", id: titleId }, kindName(kind)),
        stateWord,
        a.state !== "cleared"
          ? h(
              "span",
              { class: "since" },
              h("span", { class: "since-label" }, "for "),
              h("time", { "data-onset": a.onset_ts, datetime: new Date(a.onset_ts * 1000).toISOString() }, duration(now() - a.onset_ts)),
            )
          : null,
      ),
    );
    if (kind === "hypotension") {
      const metric = a.metric === "sbp" ? "SBP" : "MAP";
      li.append(
        h(
          "p",
          { class: "alarm-value" },
          `${metric} ${num(a.value)} below target ${num(a.target)} mmHg`,
          a.profile ? ` (${String(a.profile).replace(/_/g, " ")})` : "",
          Array.isArray(a.running) && a.running.length ? ` · on ${a.running.join(", ")}` : " · no vasopressor running",
          typeof a.ne_equivalent === "number" && a.ne_equivalent > 0 ? ` · ${neeText(a.ne_equivalent, a.ne_equivalent_unknown)}` : "",
        ),
      );
      if (a.state !== "cleared") {
        const step = stepText(a);
        if (step) li.append(h("p", { class: "next-step" }, h("strong", {}, "Consider: "), step));
        if (Array.isArray(a.checks) && a.checks.length) {
          li.append(
            h("div", { class: "checks" }, h("p", { class: "mini" }, "Check first"), h("ul", {}, a.checks.map((c) => h("li", {}, c)))),
          );
        }
        if (Array.isArray(a.cautions) && a.cautions.length) {
          li.append(
            h("div", { class: "cautions" }, h("p", { class: "mini" }, "Caution"), h("ul", {}, a.cautions.map((c) => h("li", {}, c)))),
          );
        }
      }
    } else if (a.reason && a.state !== "cleared") {
      li.append(h("p", { class: "reason" }, String(a.reason)));
    }
    if (a.sbp_suspended && a.state !== "cleared") {
      li.append(h("p", { class: "reason" }, `SBP decisions suspended: ${a.sbp_suspended}`));
    }
    if (a.state === "cleared" && a.clear_note) {
      // e.g. clear_reason "bed_evicted": closed because the processor stopped monitoring the bed
      li.append(h("p", { class: "reason" }, String(a.clear_note)));
    }
    if (a.state === "active" && !canWrite()) {
      li.append(h("p", { class: "ack-signin" }, "Sign in to acknowledge."));
    } else if (a.state === "active") {
      const btn = h(
        "button",
        {
          type: "button",
          class: "ack",
          "data-focus": `ack:${a.alarm_id}`,
          "aria-describedby": titleId,
          "aria-label": `Acknowledge ${WORD[a.priority].toLowerCase()} priority ${kindName(kind)} alarm, ${entry.unit} ${entry.bed}`,
          onclick: () => acknowledge(entry, btn, t),
        },
        "Acknowledge",
      );
      const meta =
        a.announce_count > 0
          ? h("span", { class: "meta" }, `re-announced ${a.announce_count}× · now to the ${AUDIENCE[a.audience] || a.audience}`)
          : null;
      li.append(h("div", { class: "alarm-actions" }, btn, meta));
    }
    return li;
  }

  function renderAlarms(t) {
    const list = alarmsOf(t.key).filter(
      (e) => isOpen(e.alarm) || now() - (e.alarm.ts || 0) < CLEARED_SHOWN_S,
    );
    const focused = document.activeElement;
    const focusKey = focused && t.alarms.contains(focused) ? focused.getAttribute("data-focus") : null;
    const focusAlarm = focused && t.alarms.contains(focused) ? focused.closest("[data-alarm-id]") : null;
    const focusAlarmId = focusAlarm ? focusAlarm.getAttribute("data-alarm-id") : null;

    const main = list.filter((e) => !isAdvisory(e.kind) && !isTechnical(e.kind));
    const tech = list.filter((e) => isTechnical(e.kind));
    const adv = list.filter((e) => isAdvisory(e.kind));
    t.alarms.replaceChildren();
    if (main.length) t.alarms.append(h("ol", { class: "alarm-list", "aria-label": "Patient alarms" }, main.map((e) => renderAlarm(e, t))));
    if (tech.length) {
      t.alarms.append(
        h("section", { class: "group group-technical", "aria-label": "Technical alarms" }, h("h3", { class: "mini" }, "Technical (equipment / signal)"), h("ol", { class: "alarm-list" }, tech.map((e) => renderAlarm(e, t)))),
      );
    }
    if (adv.length) {
      t.alarms.append(
        h("section", { class: "group group-advisory", "aria-label": "Advisories" }, h("h3", { class: "mini" }, "Advisories"), h("ol", { class: "alarm-list" }, adv.map((e) => renderAlarm(e, t)))),
      );
    }
    if (!list.length) t.alarms.append(h("p", { class: "no-alarms" }, "No alarms."));

    // highest open, patient-related priority decides the tile's frame
    const open = list.filter((e) => isOpen(e.alarm) && !isTechnical(e.kind));
    const active = open.filter((e) => e.alarm.state === "active");
    const top = (active.length ? active : open).reduce(
      (best, e) => (!best || RANK[e.alarm.priority] > RANK[best.alarm.priority] ? e : best),
      null,
    );
    const techOpen = list.filter((e) => isOpen(e.alarm) && isTechnical(e.kind));
    t.el.classList.remove("tile-high", "tile-medium", "tile-low", "tile-acked", "tile-technical");
    t.flag.replaceChildren();
    if (top) {
      t.el.classList.add(`tile-${top.alarm.priority}`);
      if (!active.length) t.el.classList.add("tile-acked");
      t.flag.append(badge(top.alarm, top.kind));
      if (!active.length) t.flag.append(h("span", { class: "flag-note" }, "acknowledged"));
    } else if (techOpen.length) {
      t.el.classList.add("tile-technical");
      t.flag.append(badge(techOpen[0].alarm, techOpen[0].kind));
    }

    // keep the keyboard where it was
    if (focusKey || focusAlarmId) {
      const again =
        (focusKey && t.alarms.querySelector(`[data-focus="${CSS.escape(focusKey)}"]`)) ||
        (focusAlarmId && t.alarms.querySelector(`[data-alarm-id="${CSS.escape(focusAlarmId)}"]`));
      if (again) again.focus();
    }
  }

  // ------------------------------------------------------------------ strip and banners
  function renderStrip() {
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
  function renderBanners() {
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

  function renderConn() {
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

  // ------------------------------------------------------------------ announcements
  function announce(entry) {
    const a = entry.alarm;
    if (!a || a.state !== "active" || a.priority !== "high" || isTechnical(entry.kind)) return;
    // once per episode, and again when it worsens after an acknowledgement
    const key = a.trigger === "worsened" ? `${a.alarm_id}@${a.ts}` : a.alarm_id;
    if (S.announced.has(key)) return;
    S.announced.add(key);
    let text = `High priority alarm, ${entry.unit} ${entry.bed}: ${kindName(entry.kind)}`;
    if (entry.kind === "hypotension") {
      text += `, ${a.metric === "sbp" ? "SBP" : "MAP"} ${num(a.value)} below target ${num(a.target)}.`;
      const step = stepText(a);
      if (step) text += ` Consider: ${step}`;
    }
    const box = $("announcer");
    box.textContent = "";
    window.setTimeout(() => {
      box.textContent = text;
    }, 50);
  }

  // ------------------------------------------------------------------ acknowledging
  async function acknowledge(entry, btn, t) {
    const a = entry.alarm;
    // aria-disabled, not disabled: the button keeps the keyboard focus while the ack is sent
    if (btn.getAttribute("aria-disabled") === "true") return;
    btn.setAttribute("aria-disabled", "true");
    btn.textContent = "Sending…";
    t.note.textContent = "";
    t.note.className = "ack-note";
    try {
      const resp = await fetch("/api/ack", {
        method: "POST",
        headers: { "content-type": "application/json" },
        // who acknowledges is the signed-in user: the server takes it from the session
        body: JSON.stringify({ alarm_id: a.alarm_id, unit: entry.unit, bed: entry.bed }),
      });
      const body = await resp.json().catch(() => ({}));
      if (resp.status === 401) {
        await whoami();
        showSignin("Your sign-in has ended: sign in again to acknowledge.");
      }
      if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
      btn.textContent = "Sent";
      const current = S.alarms.get(entry.topic);
      const stillActive =
        current && current.alarm && current.alarm.alarm_id === a.alarm_id && current.alarm.state === "active";
      // the processor's answer may already be here (it clears the note when it arrives)
      if (stillActive) t.note.textContent = `Acknowledgement sent by ${S.me.user}; waiting for the processor.`;
      // no answer in 10 s (processor offline?): say so and allow another try
      window.setTimeout(() => {
        if (!btn.isConnected) return;
        btn.removeAttribute("aria-disabled");
        btn.textContent = "Acknowledge";
        t.note.textContent = "No answer from the processor yet: the alarm is still active.";
        t.note.className = "ack-note ack-error";
      }, 10000);
    } catch (err) {
      t.note.textContent = `Acknowledgement NOT sent: ${err.message}`;
      t.note.className = "ack-note ack-error";
      btn.removeAttribute("aria-disabled");
      btn.textContent = "Acknowledge";
    }
  }

  // ------------------------------------------------------------------ state updates
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

  function connect() {
    if (es) es.close();
    es = new EventSource("/events");
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

  // ------------------------------------------------------------------ ticking
  function tick() {
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

  // ------------------------------------------------------------------ signing in
  async function whoami() {
    try {
      const resp = await fetch("/api/me", { cache: "no-store" });
      S.me = resp.ok ? await resp.json() : null;
    } catch (_e) {
      S.me = null; // the server is away: the feed banners say so
    }
    renderAccount();
    return S.me;
  }

  function renderAccount() {
    const me = S.me;
    const methods = (me && me.methods) || [];
    $("whoami").textContent = me && me.user ? `Signed in as ${me.user}` : me && me.public_read ? "Viewing only" : "";
    $("signout").hidden = !(me && me.user && me.method !== "proxy");
    $("signin-open").hidden = !(me && !me.user && me.public_read && methods.includes("password"));
  }

  function showSignin(why) {
    const methods = (S.me && S.me.methods) || [];
    $("signin").hidden = false;
    $("signin-form").hidden = !methods.includes("password");
    $("signin-token").hidden = !methods.includes("token") || methods.includes("password");
    if (why) $("signin-why").textContent = why;
    if (!(S.me && S.me.can_read)) {
      $("conn").className = "conn conn-wait";
      $("conn").textContent = "Not signed in";
      if (!S.haveSnapshot) $("empty").textContent = "Sign in to see the beds.";
    }
    if (!$("signin-form").hidden) $("signin-user").focus();
  }

  function rerenderAlarms() {
    for (const t of S.tiles.values()) renderAlarms(t);
  }

  function setupSignin() {
    $("signin-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const note = $("signin-note");
      note.textContent = "";
      let resp;
      try {
        resp = await fetch("/api/login", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ username: $("signin-user").value.trim(), password: $("signin-password").value }),
        });
      } catch (_e) {
        note.textContent = "The dashboard server cannot be reached.";
        return;
      }
      const body = await resp.json().catch(() => ({}));
      $("signin-password").value = "";
      if (!resp.ok) {
        note.textContent = body.error || `Sign-in failed (HTTP ${resp.status}).`;
        return;
      }
      $("signin").hidden = true;
      await whoami();
      rerenderAlarms();
      if (!es || es.readyState === EventSource.CLOSED) connect();
    });
    $("signin-open").addEventListener("click", () => showSignin("Sign in to acknowledge alarms."));
    $("signout").addEventListener("click", async () => {
      await fetch("/api/logout", { method: "POST" }).catch(() => null);
      window.location.reload();
    });
  }

  document.addEventListener("DOMContentLoaded", async () => {
    setupSignin();
    tick();
    window.setInterval(tick, 1000);
    await whoami();
    if (S.me && S.me.can_read) connect();
    else showSignin(null);
  });
})();
