// Alarms on screen: the kinds as the server names them (GET /api/kinds, built from the
// core's names in streamproc/apps/dashboard/kinds.py: no kind, priority or trigger is
// written here), their order, a tile's alarm list, announcements and acknowledging.
import * as api from "./api.js";
import { showSignin, whoami } from "./account.js";
import { $, clockTime, domId, duration, h, neeText, num } from "./dom.js";
import { CLEARED_SHOWN_S, S, bedKey, canWrite, now } from "./state.js";

// the server's catalog: {kinds: {kind: {label, group}}, priorities: {p: {rank, mark, word}},
// triggers: {name: wire value}, audiences: {a: words}, hypotension: kind}
const K = { kinds: {}, priorities: {}, triggers: {}, audiences: {}, hypotension: null };
let kindsLoaded = false;

// fetch the catalog once (again at the next connection if the server did not answer)
export async function loadKinds() {
  if (kindsLoaded) return;
  try {
    Object.assign(K, await api.kinds());
    kindsLoaded = true;
  } catch (_e) {
    // the server is away: the feed banners say so; names fall back to the kind itself
  }
}

const group = (kind) =>
  (K.kinds[kind] && K.kinds[kind].group) || (kind.startsWith("advisory_") ? "advisory" : "patient");
export const kindName = (kind) =>
  (K.kinds[kind] && K.kinds[kind].label) ||
  (kind.startsWith("advisory_")
    ? "Advisory: " + kind.slice(9).replace(/_/g, " ")
    : kind.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase()));
export const isOpen = (a) => a.state === "active" || a.state === "acknowledged";
export const isTechnical = (kind) => group(kind) === "technical";
const isAdvisory = (kind) => group(kind) === "advisory";
const isHypotension = (kind) => kind === K.hypotension;
const priority = (p) => K.priorities[p] || { rank: 0, mark: "", word: String(p).toUpperCase() };
const rank = (p) => priority(p).rank;
// the top priority (IEC 60601-1-8 high): the one a screen reader is told at once
const isHighest = (p) =>
  p in K.priorities && Object.values(K.priorities).every((q) => q.rank <= K.priorities[p].rank);

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

// open alarms by priority (high first), active before acknowledged, oldest first; cleared last
export function sortAlarms(list) {
  const stateRank = { active: 1, acknowledged: 0, cleared: 0 };
  const open = (e) => (isOpen(e.alarm) ? 1 : 0);
  return list.sort(
    (a, b) =>
      open(b) - open(a) ||
      rank(b.alarm.priority) - rank(a.alarm.priority) ||
      stateRank[b.alarm.state] - stateRank[a.alarm.state] ||
      a.alarm.onset_ts - b.alarm.onset_ts ||
      a.topic.localeCompare(b.topic),
  );
}

export function alarmsOf(key) {
  const out = [];
  for (const entry of S.alarms.values()) {
    if (bedKey(entry.unit, entry.bed) === key && entry.alarm) out.push(entry);
  }
  return sortAlarms(out);
}

export function badge(alarm, kind) {
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
    h("span", { class: "mark", "aria-hidden": "true" }, priority(alarm.priority).mark),
    h("span", { class: "badge-word" }, priority(alarm.priority).word),
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
  if (isHypotension(kind)) {
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
        "aria-label": `Acknowledge ${priority(a.priority).word.toLowerCase()} priority ${kindName(kind)} alarm, ${entry.unit} ${entry.bed}`,
        onclick: () => acknowledge(entry, btn, t),
      },
      "Acknowledge",
    );
    const meta =
      a.announce_count > 0
        ? h("span", { class: "meta" }, `re-announced ${a.announce_count}× · now to the ${K.audiences[a.audience] || a.audience}`)
        : null;
    li.append(h("div", { class: "alarm-actions" }, btn, meta));
  }
  return li;
}

export function renderAlarms(t) {
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
    (best, e) => (!best || rank(e.alarm.priority) > rank(best.alarm.priority) ? e : best),
    null,
  );
  const techOpen = list.filter((e) => isOpen(e.alarm) && isTechnical(e.kind));
  t.el.classList.remove(...Object.keys(K.priorities).map((p) => `tile-${p}`), "tile-acked", "tile-technical");
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

// ------------------------------------------------------------------ announcements
export function announce(entry) {
  const a = entry.alarm;
  if (!a || a.state !== "active" || !isHighest(a.priority) || isTechnical(entry.kind)) return;
  // once per episode, and again when it worsens after an acknowledgement
  const key = a.trigger === K.triggers.worsen ? `${a.alarm_id}@${a.ts}` : a.alarm_id;
  if (S.announced.has(key)) return;
  S.announced.add(key);
  let text = `High priority alarm, ${entry.unit} ${entry.bed}: ${kindName(entry.kind)}`;
  if (isHypotension(entry.kind)) {
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
    const resp = await api.ack(a.alarm_id, entry.unit, entry.bed);
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
