"""Who may watch and acknowledge on the dashboard (``streamproc.apps.dashboard.auth``).

The HTTP tests run the real dashboard server against a real Mosquitto and
send what an attacker would: no credentials, a foreign ``Host`` (DNS
rebinding), a foreign or missing ``Origin`` (CSRF), an identity of their own
choosing (``by`` in the body, a proxy header from a non-proxy address). Each is
refused with 401 or 403 and changes nothing: no acknowledgement reaches the
broker. "Nothing" is made exact with a sentinel: after the refused requests an
accepted acknowledgement is sent and awaited; the refused ones, handled
before it, would have arrived first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.apps.dashboard.auth import (
    COOKIE,
    LOCKOUT_S,
    MAX_FAILURES,
    AuthConfig,
    Authenticator,
    AuthError,
    CredentialsError,
    Identity,
    add_user,
    read_users,
    remove_user,
)
from tests.apps.dashboard.test_app import ALARM_TOPIC, TOKEN, DashboardServer, alarm_payload, put
from tests.system.broker import MosquittoBroker, Subscriber

REPO = Path(__file__).resolve().parents[3]
ALARM_ID = "ward7.bed03.hypotension.1"
ACK = {"alarm_id": ALARM_ID, "unit": "ward7", "bed": "bed03"}
PASSWORD = "correct horse battery"  # noqa: S105 - a test user's


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    """A credentials file with alice and bob."""
    path = tmp_path / "users"
    add_user(path, "alice", PASSWORD)
    add_user(path, "bob", PASSWORD + "!")
    return path


def _server(broker: MosquittoBroker, **auth: Any) -> DashboardServer:
    config = AuthConfig(**{"token": TOKEN, "token_identity": "desk-1", **auth})
    server = DashboardServer(broker.url, auth=config, station="desk-1", heartbeat_s=0.5)
    server.start()
    put(broker, ALARM_TOPIC, alarm_payload(alarm_id=ALARM_ID))
    deadline = time.monotonic() + 10
    while server.get_json("/healthz")[1]["alarms"] < 1:  # open to all: no sign-in needed
        assert time.monotonic() < deadline, "the alarm did not reach the dashboard"
        time.sleep(0.05)
    return server


@pytest.fixture
def acks(broker: MosquittoBroker) -> Iterator[Subscriber]:
    """Everything published on the ack topics."""
    with Subscriber(broker, "icu/+/+/ack", qos=1) as sub:
        yield sub


def assert_no_ack_but(server: DashboardServer, acks: Subscriber, by: str) -> None:
    """Only the sentinel acknowledgement (sent now, signed in) reaches the broker."""
    status, reply = server.post_json("/api/ack", ACK)
    assert status == 202, reply
    first = acks.wait_for(timeout=5)
    assert json.loads(first.payload)["by"] == by
    time.sleep(0.2)
    assert len(acks.messages) == 1, [m.payload for m in acks.messages]


class TestRefusedRequests:
    """Requests without credentials, from elsewhere, or with a forged identity."""

    def test_no_credentials(self, broker: MosquittoBroker, acks: Subscriber) -> None:
        """Without a session: 401 on the state, the event stream and acknowledging."""
        server = _server(broker)
        try:
            for path in ("/api/state", "/events"):
                status, headers, _ = server.request("GET", path, cookie=False)
                assert status == 401, path
                assert "www-authenticate" in headers
            status, reply = server.post_json("/api/ack", ACK, cookie=False)
            assert status == 401
            assert "sign in" in reply["error"]
            # the page itself (no patient data) and the health check stay reachable
            assert server.request("GET", "/", cookie=False)[0] == 200
            assert server.request("GET", "/healthz", cookie=False)[0] == 200
            assert_no_ack_but(server, acks, "desk-1")
        finally:
            server.stop()

    def test_tampered_or_foreign_cookie(self, broker: MosquittoBroker, acks: Subscriber) -> None:
        """A cookie changed by hand, or signed by another server, is no session."""
        server = _server(broker)
        other = Authenticator(AuthConfig(token=TOKEN))
        try:
            value = server.cookie.split("=", 1)[1]
            forged = other.session_cookie(Identity("desk-1", "token"))
            for bad in (value[:-2] + "xx", forged):
                headers = {"cookie": f"{COOKIE}={bad}"}
                status, _ = server.post_json("/api/ack", ACK, headers=headers, cookie=False)
                assert status == 401
            assert_no_ack_but(server, acks, "desk-1")
        finally:
            server.stop()

    @pytest.mark.parametrize(
        "host", ["evil.example", "evil.example:8080", "127.0.0.1.evil.example"]
    )
    def test_foreign_host(self, broker: MosquittoBroker, acks: Subscriber, host: str) -> None:
        """DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own
        Host; every request is 403, even with a valid session and a matching Origin."""
        server = _server(broker)
        try:
            for method, path in (("GET", "/"), ("GET", "/api/state"), ("GET", "/events")):
                status, _, _ = server.request(method, path, headers={"host": host})
                assert status == 403, (method, path)
            headers = {"host": host, "origin": f"http://{host}"}
            status, reply = server.post_json("/api/ack", ACK, headers=headers)
            assert status == 403
            assert reply["field"] == "host"
            assert_no_ack_but(server, acks, "desk-1")
        finally:
            server.stop()

    @pytest.mark.parametrize(
        "origin",
        [
            "http://evil.example",
            "http://127.0.0.1:1",
            "null",
            "https://evil.example",
            "file://",
            None,
        ],
    )
    def test_foreign_or_missing_origin(
        self, broker: MosquittoBroker, acks: Subscriber, origin: str | None
    ) -> None:
        """CSRF: a write from another origin (or none) is 403 even with the session
        cookie; so are sign-in and sign-out."""
        server = _server(broker)
        try:
            headers = {} if origin is None else {"origin": origin}
            for path, body in (
                ("/api/ack", ACK),
                ("/api/login", {"username": "a", "password": "b"}),
                ("/api/logout", {}),
            ):
                status, reply = server.post_json(path, body, headers=headers, origin=False)
                assert status == 403, path
                assert reply["field"] == "origin"
            assert_no_ack_but(server, acks, "desk-1")
        finally:
            server.stop()

    def test_by_in_the_body(self, broker: MosquittoBroker, acks: Subscriber) -> None:
        """A signed-in user cannot acknowledge as someone else: a body with `by` is 403."""
        server = _server(broker)
        try:
            status, reply = server.post_json("/api/ack", {**ACK, "by": "attacker"})
            assert status == 403
            assert reply["field"] == "by"
            assert_no_ack_but(server, acks, "desk-1")
        finally:
            server.stop()

    def test_proxy_header_from_a_non_proxy(self, broker: MosquittoBroker, acks: Subscriber) -> None:
        """The SSO header from an address that is not the configured proxy is a forgery:
        403, whether or not the request also has a valid session."""
        server = _server(broker, proxy_header="X-Forwarded-User", trusted_proxies=("10.9.9.9",))
        try:
            forged = {"x-forwarded-user": "chief-physician"}
            for cookie in (False, True):
                status, reply = server.post_json("/api/ack", ACK, headers=forged, cookie=cookie)
                assert status == 403
                assert "proxy" in reply["error"]
            status, _, _ = server.request("GET", "/api/state", headers=forged, cookie=False)
            assert status == 403
            # claiming to come through the proxy changes nothing: the TCP peer counts
            relayed = {**forged, "x-forwarded-for": "10.9.9.9", "forwarded": "for=10.9.9.9"}
            status, _ = server.post_json("/api/ack", ACK, headers=relayed, cookie=False)
            assert status == 403
            assert_no_ack_but(server, acks, "desk-1")
        finally:
            server.stop()

    def test_public_read_never_writes(self, broker: MosquittoBroker, acks: Subscriber) -> None:
        """With public_read a site lets anyone watch; acknowledging still needs a sign-in."""
        server = _server(broker, public_read=True)
        try:
            status, _, body = server.request("GET", "/api/state", cookie=False)
            assert status == 200
            assert json.loads(body)["alarms"]
            status, me = 0, {}
            status, _, raw = server.request("GET", "/api/me", cookie=False)
            me = json.loads(raw)
            assert (status, me["can_read"], me["can_write"], me["user"]) == (200, True, False, None)
            status, _ = server.post_json("/api/ack", ACK, cookie=False)
            assert status == 401
            assert_no_ack_but(server, acks, "desk-1")
        finally:
            server.stop()


class TestSignIn:
    """Password, token and proxy sign-ins, and the identity acknowledgements carry."""

    def test_password_sign_in_acknowledges_as_the_user(
        self, broker: MosquittoBroker, acks: Subscriber, users_file: Path
    ) -> None:
        """POST /api/login with alice's password sets a session cookie (HttpOnly,
        SameSite=Strict, not Secure over http); her acknowledgement carries "alice"."""
        server = _server(broker, token=None, users_file=users_file)
        try:
            assert server.cookie == ""  # no token: nobody is signed in yet
            status, reply = server.post_json(
                "/api/login", {"username": "alice", "password": "wrong"}
            )
            assert (status, reply["field"]) == (401, "password")
            body = json.dumps({"username": "alice", "password": PASSWORD}).encode()
            status, headers, raw = server.request(
                "POST", "/api/login", body, {"content-type": "application/json"}
            )
            assert status == 200, raw
            cookie = headers["set-cookie"]
            attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
            assert {"httponly", "samesite", "path", "max-age"} <= attributes
            assert "SameSite=Strict" in cookie
            assert "secure" not in attributes
            server.cookie = cookie.split(";", 1)[0]
            _, _, me = server.request("GET", "/api/me")
            assert json.loads(me)["user"] == "alice"
            assert_no_ack_but(server, acks, "alice")
            # signed out: the cookie is cleared and no longer opens anything
            status, headers, _ = server.request("POST", "/api/logout")
            assert status == 200
            assert "Max-Age=0" in headers["set-cookie"]
        finally:
            server.stop()

    def test_unknown_user_and_lockout(self, broker: MosquittoBroker, users_file: Path) -> None:
        """An unknown name gets the same 401 as a wrong password; after MAX_FAILURES
        failures a name is refused with 429, even with the right password."""
        server = _server(broker, token=None, users_file=users_file)
        try:
            status, reply = server.post_json("/api/login", {"username": "eve", "password": "x"})
            assert (status, reply["error"]) == (401, "wrong user name or password")
            for _ in range(MAX_FAILURES):
                status, _ = server.post_json("/api/login", {"username": "bob", "password": "x"})
                assert status == 401
            status, _ = server.post_json(
                "/api/login", {"username": "bob", "password": PASSWORD + "!"}
            )
            assert status == 429
        finally:
            server.stop()

    def test_removed_user_loses_the_session(
        self, broker: MosquittoBroker, acks: Subscriber, users_file: Path
    ) -> None:
        """A user removed from the credentials file is signed out at the next request."""
        server = _server(broker, token=None, users_file=users_file)
        try:
            body = json.dumps({"username": "alice", "password": PASSWORD}).encode()
            _, headers, _ = server.request(
                "POST", "/api/login", body, {"content-type": "application/json"}
            )
            server.cookie = headers["set-cookie"].split(";", 1)[0]
            time.sleep(0.01)  # a new mtime
            assert remove_user(users_file, "alice")
            status, _ = server.post_json("/api/ack", ACK)
            assert status == 401
        finally:
            server.stop()

    def test_token_address(self, broker: MosquittoBroker) -> None:
        """The printed address carries the token; opening it sets the cookie and sends
        the browser to the bare address; a wrong token is 401 and sets nothing."""
        server = _server(broker)
        try:
            assert server.printed_url.endswith(f"/?token={TOKEN}")
            status, headers, _ = server.request("GET", "/?token=not-the-token", cookie=False)
            assert status == 401
            assert "set-cookie" not in headers
            _, _, me = server.request("GET", "/api/me")
            assert json.loads(me) | {"methods": None} == {
                "user": "desk-1",
                "method": "token",
                "can_read": True,
                "can_write": True,
                "methods": None,
                "public_read": False,
            }
        finally:
            server.stop()

    def test_proxy_identity(self, broker: MosquittoBroker, acks: Subscriber) -> None:
        """From the configured proxy, the SSO header is the identity acks carry."""
        server = _server(
            broker, token=None, proxy_header="X-Forwarded-User", trusted_proxies=("127.0.0.1",)
        )
        try:
            headers = {"x-forwarded-user": "nurse.kim"}
            status, _, _ = server.request("GET", "/api/state", headers=headers)
            assert status == 200
            status, reply = server.post_json("/api/ack", ACK, headers=headers)
            assert status == 202, reply
            assert json.loads(acks.wait_for(timeout=5).payload)["by"] == "nurse.kim"
            bad = {"x-forwarded-user": "x" * 65}
            assert server.post_json("/api/ack", ACK, headers=bad)[0] == 403
        finally:
            server.stop()

    def test_secure_cookie_over_https(self) -> None:
        """The cookie is Secure when the page is served over https (or configured so)."""
        auth = Authenticator(AuthConfig(token=TOKEN))
        assert "Secure" in auth.cookie_header("v", https=True)
        assert "Secure" not in auth.cookie_header("v", https=False)
        forced = Authenticator(AuthConfig(token=TOKEN, secure_cookies=True))
        assert "Secure" in forced.cookie_header("v", https=False)


class TestAuthenticator:
    """The checks themselves, without a server."""

    @pytest.mark.parametrize(
        ("host", "ok"),
        [
            ("127.0.0.1:8080", True),
            ("localhost", True),
            ("LOCALHOST:1", True),
            ("[::1]:8080", True),
            ("evil.example", False),
            ("127.0.0.1.nip.io", False),
            ("", False),
            (None, False),
        ],
    )
    def test_host(self, host: str | None, ok: bool) -> None:
        """Only the allowed names pass, whatever the port."""
        auth = Authenticator(AuthConfig(token=TOKEN))
        if ok:
            auth.check_host(host)
        else:
            with pytest.raises(AuthError) as info:
                auth.check_host(host)
            assert info.value.status == 403

    @given(st.text(max_size=80))
    @settings(max_examples=200, deadline=None)
    def test_hostile_host_headers_never_crash(self, host: str) -> None:
        """Any Host header: passes only if it names an allowed host, else AuthError."""
        auth = Authenticator(AuthConfig(token=TOKEN, allowed_hosts=("dash.icu",)))
        try:
            auth.check_host(host)
        except AuthError:
            return
        assert host.strip().lower().split(":")[0] == "dash.icu"

    def test_session_expires(self) -> None:
        """A session older than session_s is no session."""
        auth = Authenticator(AuthConfig(token=TOKEN, session_s=1))
        cookie = {COOKIE: auth.session_cookie(Identity("desk", "token"))}
        assert auth.identify({}, cookie, "127.0.0.1") == Identity("desk", "token")
        time.sleep(2.1)
        assert auth.identify({}, cookie, "127.0.0.1") is None

    def test_session_of_a_disabled_method(self, users_file: Path) -> None:
        """A cookie for a sign-in method the server no longer offers is no session."""
        secret = "s" * 32
        token_server = Authenticator(AuthConfig(token=TOKEN, secret=secret))
        cookie = {COOKIE: token_server.session_cookie(Identity("desk", "token"))}
        password_only = Authenticator(AuthConfig(users_file=users_file, secret=secret))
        assert password_only.identify({}, cookie, None) is None

    def test_lockout_ends(self, users_file: Path) -> None:
        """The failure window slides: after LOCKOUT_S the name may try again."""
        auth = Authenticator(AuthConfig(users_file=users_file))
        for _ in range(MAX_FAILURES):
            with pytest.raises(AuthError):
                auth.login("alice", "nope", now=100.0)
        with pytest.raises(AuthError) as info:
            auth.login("alice", PASSWORD, now=101.0)
        assert info.value.status == 429
        assert auth.login("alice", PASSWORD, now=101.0 + LOCKOUT_S) == Identity("alice", "password")

    @pytest.mark.parametrize(
        "options",
        [
            {"token": "short"},
            {"token": TOKEN, "proxy_header": "X-User"},
            {"token": TOKEN, "proxy_header": "X-User", "trusted_proxies": ("not-an-ip",)},
            {"token": TOKEN, "allowed_hosts": ()},
            {"token": TOKEN, "token_identity": "a:b"},
            {"token": TOKEN, "session_s": 0},
        ],
    )
    def test_bad_config(self, options: dict[str, Any]) -> None:
        """A configuration that would be unsafe or unusable is refused when built."""
        with pytest.raises(ValueError):
            AuthConfig(**options)


class TestCredentialsFile:
    """The NAME:argon2 file and what reads and writes it."""

    def test_add_hashes_with_argon2id_and_keeps_0600(self, tmp_path: Path) -> None:
        """The password is never stored; the hash is argon2id; the file is private."""
        path = tmp_path / "users"
        assert add_user(path, "alice", PASSWORD)
        assert not add_user(path, "alice", PASSWORD + "2")  # a change, not a new user
        text = path.read_text()
        assert PASSWORD not in text
        assert read_users(path)["alice"].startswith("$argon2id$")
        assert path.stat().st_mode & 0o777 == 0o600

    @pytest.mark.parametrize(
        ("text", "line"),
        [
            ("alice\n", 1),
            ("# ok\nalice:plain\n", 2),
            ("alice:$argon2id$x\nalice:$argon2id$y\n", 2),
            ("a:b:$argon2id$x\n", 1),
        ],
    )
    def test_bad_file_names_the_line(self, tmp_path: Path, text: str, line: int) -> None:
        """A malformed line stops the start with the file and line number."""
        path = tmp_path / "users"
        path.write_text(text)
        with pytest.raises(CredentialsError) as info:
            read_users(path)
        assert info.value.line == line

    def test_refuses_weak_or_bad_names(self, tmp_path: Path) -> None:
        """Short passwords and names that cannot be an identity are refused."""
        with pytest.raises(ValueError, match="8 characters"):
            add_user(tmp_path / "u", "alice", "short")
        with pytest.raises(ValueError, match="user name"):
            add_user(tmp_path / "u", "a:b", PASSWORD)

    def test_cli_adds_a_user_who_can_sign_in(self, tmp_path: Path) -> None:
        """`streamproc dashboard-user FILE NAME --password-stdin` writes a hash that
        signs in; --delete removes the user."""
        path = tmp_path / "users"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
        command = [sys.executable, "-m", "streamproc", "dashboard-user", str(path), "carol"]
        made = subprocess.run(  # noqa: S603 - our own interpreter and module
            [*command, "--password-stdin"],
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        auth = Authenticator(AuthConfig(users_file=path))
        assert auth.login("carol", PASSWORD) == Identity("carol", "password")
        gone = subprocess.run(  # noqa: S603
            [*command, "--delete"], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        assert gone.returncode == 0
        assert "carol" not in read_users(path)
