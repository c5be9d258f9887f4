// The dashboard server's HTTP API, as the page calls it (same origin, the session cookie).
// Each call returns the fetch's promise; callers decide what a failure means.

// who is signed in: /api/me's JSON, or null when refused
export async function me() {
  const resp = await fetch("/api/me", { cache: "no-store" });
  return resp.ok ? await resp.json() : null;
}

// the alarm kinds, priorities, triggers and audiences (streamproc/apps/dashboard/kinds.py)
export async function kinds() {
  const resp = await fetch("/api/kinds", { cache: "no-store" });
  if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
  return await resp.json();
}

export const login = (username, password) =>
  fetch("/api/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
  });

export const logout = () => fetch("/api/logout", { method: "POST" });

// who acknowledges is the signed-in user: the server takes it from the session
export const ack = (alarmId, unit, bed) =>
  fetch("/api/ack", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ alarm_id: alarmId, unit, bed }),
  });

export const events = () => new EventSource("/events");
