// Signing in and out: /api/me, /api/login, /api/logout, and the sign-in panel.
import * as api from "./api.js";
import { $ } from "./dom.js";
import { S } from "./state.js";

export async function whoami() {
  try {
    S.me = await api.me();
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

export function showSignin(why) {
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

// onSignedIn: what the page does once a password sign-in has succeeded
export function setupSignin(onSignedIn) {
  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const note = $("signin-note");
    note.textContent = "";
    let resp;
    try {
      resp = await api.login($("signin-user").value.trim(), $("signin-password").value);
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
    onSignedIn();
  });
  $("signin-open").addEventListener("click", () => showSignin("Sign in to acknowledge alarms."));
  $("signout").addEventListener("click", async () => {
    await api.logout().catch(() => null);
    window.location.reload();
  });
}
