// What the page knows: the server's state as last received, and the browser's own.

export const STALL_MS = 15000; // no event or heartbeat for this long: the feed has stalled
export const DATA_STALE_S = 60; // a bed's summary older than this is shown as stale
export const CLEARED_SHOWN_S = 900; // cleared alarms stay visible (muted) this long

export const S = {
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

export const now = () => Date.now() / 1000 + S.offset;
export const bedKey = (unit, bed) => `${unit}/${bed}`;
export const canWrite = () => Boolean(S.me && S.me.can_write);
