// DOM and text helpers of the central station: no state, no server.

export const $ = (id) => document.getElementById(id);

export function h(tag, attrs, ...children) {
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
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

export const num = (x, digits = 0) =>
  typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "–";
export const domId = (prefix, text) => `${prefix}-${String(text).replace(/[^A-Za-z0-9_-]/g, "_")}`;

export function duration(seconds) {
  const t = Math.max(0, Math.floor(seconds));
  const hh = Math.floor(t / 3600);
  const mm = Math.floor((t % 3600) / 60);
  const ss = String(t % 60).padStart(2, "0");
  return hh > 0 ? `${hh} h ${String(mm).padStart(2, "0")} min` : `${mm}:${ss}`;
}
export function spokenDuration(seconds) {
  const t = Math.max(0, Math.floor(seconds));
  if (t < 60) return `${t} seconds`;
  const m = Math.floor(t / 60);
  if (m < 120) return `${m} minute${m === 1 ? "" : "s"}`;
  return `${Math.floor(m / 60)} hours`;
}
export const clockTime = (ts) =>
  new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

// the vasopressors as one norepinephrine-equivalent dose (server-computed; "≥" when a
// running dose is unknown and left out)
export function neeText(value, unknown) {
  const partial = Array.isArray(unknown) && unknown.length;
  return `NE-equivalent ${partial ? "≥ " : ""}${value.toFixed(2)} mcg/kg/min`;
}
