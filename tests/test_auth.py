"""Access control against a real daemon: tokens, sessions, agent scopes, leases, transports."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import threads
from twisted.python import usage

from cpstream.domain.children import process_environ
from cpstream.tap import Options
from tests.hardening import raw
from tests.support import (
    Daemon,
    agent_token,
    create,
    delete_json,
    get_json,
    instance_log,
    instance_pid,
    post_json,
    read_token,
    wait_for,
)
from tests.wsclient import WSClient

NO_AUTH = {b"Authorization": [b"Bearer nope"]}


def bearer(token: str) -> dict:
    return {b"Authorization": [f"Bearer {token}".encode()]}


async def status(url: str, headers: dict) -> int:
    """The status of a GET with exactly these credentials (none added)."""
    return (await treq.get(url, headers=headers)).code


async def raw_get(daemon: Daemon, path: str, *headers: tuple[str, str]) -> raw.Response:
    client = await raw.connect(daemon.port)
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{daemon.port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    client.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    answer = await client.response(timeout=10)
    client.abort()
    return answer


def test_the_operator_token_is_written_once_private_and_long(tmp_path):
    """First start writes 256 random bits, URL-safe, mode 0600; the next start reuses it."""
    from cpstream.domain.tokens import operator_token

    path = tmp_path / "operator.token"
    token = operator_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) >= 43 and all(c.isalnum() or c in "-_" for c in token)
    assert operator_token(path) == token
    path.unlink()
    assert operator_token(path) != token


@pytest_twisted.ensureDeferred
async def test_without_credentials_only_health_answers(daemon):
    """No token: 401 JSON on /api/ (before any upgrade on /ws/); health says only "ok";
    the dashboard's files need none."""
    for path in ("/api/instances", "/api/messages", "/api/session"):
        code, body = await get_json(daemon.url + path, headers=NO_AUTH)
        assert (code, body) == (401, {"error": "unauthorized"}), path
    code, body = await get_json(daemon.url + "/api/health", headers=NO_AUTH)
    assert (code, body) == (200, {"status": "ok"})
    upgrade = await raw_get(
        daemon,
        "/ws/instances",
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    )
    assert upgrade.status == 401 and upgrade.json() == {"error": "unauthorized"}
    page = await raw_get(daemon, "/")
    assert page.status == 200 and b"<html" in page.body
    code, body = await get_json(daemon.url + "/api/health")
    assert code == 200 and "instances" in body


@pytest_twisted.ensureDeferred
async def test_the_login_link_sets_a_strict_session_and_works_once(daemon):
    """The one-time link from the start-up log logs a browser in (HttpOnly, SameSite=Strict,
    Path=/ cookie; redirect to / with no token) and never works again."""
    await wait_for(lambda: "dashboard: " in daemon.log_text())
    link = daemon.log_text().split("dashboard: ", 1)[1].split()[0]
    assert link.startswith(f"{daemon.url}/login?token=")
    first = await treq.get(link, allow_redirects=False)
    assert first.code == 302 and first.headers.getRawHeaders(b"location") == [b"/"]
    cookie = first.headers.getRawHeaders(b"set-cookie")[0].decode()
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/" in cookie
    name, value = cookie.split(";")[0].split("=", 1)
    jar = {b"Cookie": [f"{name}={value}".encode()]}
    assert await status(daemon.url + "/api/session", jar) == 200
    again = await treq.get(link, allow_redirects=False)
    assert again.code == 401
    out = await treq.post(daemon.url + "/logout", headers=jar)
    assert out.code == 200
    assert await status(daemon.url + "/api/session", jar) == 401


@pytest_twisted.ensureDeferred
async def test_a_pasted_token_logs_in_and_a_wrong_one_does_not(daemon):
    """POST /login {"token"}: the operator token gives a session; anything else 401."""
    headers = {b"Content-Type": [b"application/json"]}
    response = await treq.post(daemon.url + "/login", data=b'{"token": "wrong"}', headers=headers)
    assert response.code == 401
    body = f'{{"token": "{read_token(daemon.data_dir)}"}}'.encode()
    response = await treq.post(daemon.url + "/login", data=body, headers=headers)
    assert response.code == 200 and response.headers.getRawHeaders(b"set-cookie")


@pytest_twisted.ensureDeferred
async def test_rotating_the_token_ends_every_token_and_session(daemon):
    """Delete operator.token and restart: the old token and its sessions stop working."""
    old = read_token(daemon.data_dir)
    body = f'{{"token": "{old}"}}'.encode()
    login = await treq.post(
        daemon.url + "/login", data=body, headers={b"Content-Type": [b"application/json"]}
    )
    cookie = login.headers.getRawHeaders(b"set-cookie")[0].decode().split(";")[0]
    await daemon.stop()
    (daemon.data_dir / "operator.token").unlink()
    await daemon.start()
    assert read_token(daemon.data_dir) != old
    assert await status(daemon.url + "/api/instances", bearer(old)) == 401
    assert await status(daemon.url + "/api/instances", {b"Cookie": [cookie.encode()]}) == 401
    assert (await get_json(daemon.url + "/api/instances"))[0] == 200


@pytest_twisted.ensureDeferred
async def test_an_expired_or_forged_session_is_refused(daemon):
    """A session cookie past its expiry, or signed with another key, is 401."""
    import hashlib
    import hmac

    token = read_token(daemon.data_dir).encode()
    name = f"cpstream_session_{daemon.port}"

    def cookie(expires: int, key: bytes) -> dict:
        mac = hmac.new(key, f"session:abc.{expires}".encode(), hashlib.sha256).hexdigest()
        return {b"Cookie": [f"{name}=abc.{expires}.{mac}".encode()]}

    assert await status(daemon.url + "/api/session", cookie(2**40, token)) == 200
    assert await status(daemon.url + "/api/session", cookie(1000, token)) == 401
    assert await status(daemon.url + "/api/session", cookie(2**40, b"x")) == 401


async def agent_pair(daemon: Daemon) -> dict[str, str]:
    """Agents a and b (SLEEPERs), a route a -> b; their tokens, read from their environment."""
    tokens = {}
    for name in ("a", "b", "c"):
        await create(daemon.url, name)
        await post_json(f"{daemon.url}/api/instances/{name}/start")
    route = {"from_instance": "a", "to_instance": "b", "type_pattern": "t.*"}
    await post_json(f"{daemon.url}/api/routing-rules", route)
    for name in ("a", "b", "c"):
        tokens[name] = await agent_token(daemon.data_dir, name)
    return tokens


def _pid(daemon: Daemon, name: str) -> int | None:
    return instance_pid(daemon.data_dir, name)


def _environ(pid: int) -> dict[str, str]:
    return process_environ(pid)


@pytest_twisted.ensureDeferred
async def test_an_agent_token_allows_its_own_work_and_nothing_else(daemon):
    """Each instance gets its own token; with it an agent sends as itself, leases and
    settles its own messages, reads its own instance: and nothing else (403)."""
    tokens = await agent_pair(daemon)
    assert len(set(tokens.values())) == 3
    a, b = bearer(tokens["a"]), bearer(tokens["b"])
    url = daemon.url + "/api"
    send = {"from_instance": "a", "to_instance": "b", "message_type": "t.x"}
    code, sent = await post_json(url + "/messages", send, headers=a)
    assert code == 201, sent
    assert (await post_json(url + "/messages", send, headers=b))[0] == 403
    assert (await get_json(url + "/instances/b/messages/pending", headers=a))[0] == 403
    code, got = await get_json(url + "/instances/b/messages/pending", headers=b)
    assert code == 200 and got["message"]["id"] == sent["id"]
    lease = {"lease_id": got["message"]["lease_id"]}
    assert (await post_json(url + f"/messages/{sent['id']}/acknowledge", lease, headers=a))[
        0
    ] == 403
    code, done = await post_json(url + f"/messages/{sent['id']}/acknowledge", lease, headers=b)
    assert (code, done["status"]) == (200, "acknowledged")
    assert (await get_json(url + "/instances/a", headers=a))[0] == 200
    for path in ("/instances/b", "/instances", "/messages", "/routing-rules"):
        assert (await get_json(url + path, headers=a))[0] == 403, path
    assert (await post_json(url + "/instances/b/stop", headers=a))[0] == 403
    assert (await get_json(url + "/health", headers=a)) == (200, {"status": "ok"})
    with pytest.raises(ConnectionError):
        await WSClient.connect(
            daemon.url, "/ws/instances", headers={"Authorization": f"Bearer {tokens['a']}"}
        )


@pytest_twisted.ensureDeferred
async def test_an_agent_token_ends_with_archive_and_a_new_start(daemon):
    """Archiving revokes an agent's token; each start issues a new one."""
    tokens = await agent_pair(daemon)
    url = daemon.url + "/api"
    await post_json(url + "/instances/c/restart")
    await wait_for(lambda: _environ(_pid(daemon, "c"))["CPSTREAM_TOKEN"] != tokens["c"])
    assert (await get_json(url + "/instances/c", headers=bearer(tokens["c"])))[0] == 401
    fresh = _environ(_pid(daemon, "c"))["CPSTREAM_TOKEN"]
    assert (await get_json(url + "/instances/c", headers=bearer(fresh)))[0] == 200
    await post_json(url + "/instances/c/archive")
    assert (await get_json(url + "/instances/c", headers=bearer(fresh)))[0] == 401


@pytest_twisted.ensureDeferred
async def test_settling_needs_the_lease(daemon):
    """Acknowledge and fail take the delivery's lease_id: missing 400, stale or wrong 409,
    and neither changes anything."""
    await agent_pair(daemon)
    url = daemon.url + "/api"
    send = {"from_instance": "a", "to_instance": "b", "message_type": "t.x"}
    _, sent = await post_json(url + "/messages", send)
    _, got = await get_json(url + "/instances/b/messages/pending")
    ack = url + f"/messages/{sent['id']}/acknowledge"
    assert (await post_json(ack, {}))[0] == 400
    assert (await post_json(ack, {"lease_id": "not-it"}))[0] == 409
    assert (await post_json(url + f"/messages/{sent['id']}/fail", {"lease_id": "x"}))[0] == 409
    _, message = await get_json(url + f"/messages/{sent['id']}")
    assert message["status"] == "delivered"
    assert (await post_json(ack, {"lease_id": got["message"]["lease_id"]}))[0] == 200


@pytest_twisted.ensureDeferred
async def test_a_cross_site_page_cannot_lease_a_message(daemon):
    """A GET of pending from another site (Sec-Fetch-Site or a foreign Origin) is 403 and
    leases nothing: the real agent still gets its message."""
    await agent_pair(daemon)
    url = daemon.url + "/api"
    send = {"from_instance": "a", "to_instance": "b", "message_type": "t.x"}
    _, sent = await post_json(url + "/messages", send)
    for header, value in (("Sec-Fetch-Site", "cross-site"), ("Origin", "http://evil.example")):
        answer = await raw_get(
            daemon,
            "/api/instances/b/messages/pending",
            (header, value),
            ("Authorization", f"Bearer {read_token(daemon.data_dir)}"),
        )
        assert answer.status == 403
    _, got = await get_json(url + "/instances/b/messages/pending")
    assert got["message"]["id"] == sent["id"]


@pytest.mark.parametrize(
    "name", ["twin\n", "twin\r", "tw\x00in", "twіn", "ｔwin", "twin\n\n", "\ntwin"]
)
@pytest_twisted.ensureDeferred
async def test_names_are_matched_in_full(cp, name):
    """A trailing newline, a CR, a NUL or a Unicode look-alike is not a name (400)."""
    code, body = await post_json(cp.api("/instances"), {"name": name})
    assert code == 400, body


@pytest_twisted.ensureDeferred
async def test_a_new_instance_with_an_old_name_sees_none_of_its_logs(daemon):
    """Logs belong to an instance, not a name: a new instance of an archived one's name
    shows none of its output, its rotations leave the archived logs alone, and deleting
    the archived one removes only its own logs."""
    url = daemon.url + "/api"
    await create(daemon.url, "twin")
    old_log = instance_log(daemon.data_dir, "twin")
    old_log.write_bytes(b"old secret\n")
    await post_json(url + "/instances/twin/archive")
    await create(daemon.url, "twin")
    new_log = instance_log(daemon.data_dir, "twin")
    assert new_log != old_log
    _, body = await get_json(url + "/instances/twin/logs")
    assert body["lines"] == []
    for _ in range(7):
        await post_json(url + "/instances/twin/start")
        await wait_for(lambda: _pid(daemon, "twin"))
        await post_json(url + "/instances/twin/stop")
    assert old_log.read_bytes() == b"old secret\n"
    assert (await delete_json(url + "/instances/twin"))[0] == 200
    assert not old_log.exists() and new_log.parent.exists()


@pytest_twisted.ensureDeferred
async def test_a_deleted_instance_takes_its_logs_and_closes_its_viewers(daemon):
    """Deleting an instance removes its log directory; an open viewer gets 4404."""
    url = daemon.url + "/api"
    await create(daemon.url, "gone")
    log = instance_log(daemon.data_dir, "gone")
    log.write_bytes(b"x\n")
    viewer = await WSClient.connect(daemon.url, "/ws/instances/gone/logs")
    await viewer.frame()
    await post_json(url + "/instances/gone/archive")
    assert (await delete_json(url + "/instances/gone"))[0] == 200
    assert (await viewer.frame())["code"] == "instance_not_found"
    assert (await viewer.wait_closed())[0] == 4404
    assert not log.parent.parent.exists()


def test_auth_none_needs_a_local_listener():
    """--auth none is refused (a usage error) unless the listener is loopback or unix."""
    for listen in ("tcp:18800", "tcp:18800:interface=0.0.0.0", "tcp:18800:interface=10.0.0.1"):
        with pytest.raises(usage.UsageError, match="--auth none"):
            Options().parseOptions(["--auth", "none", "--listen", listen])
    for listen in ("tcp:18800:interface=127.0.0.1", "tcp6:18800:interface=\\:\\:1"):
        Options().parseOptions(["--auth", "none", "--listen", listen])
    options = Options()
    options.parseOptions(["--auth", "none", "--listen", "unix:/tmp/cp-test.sock"])
    assert options["listen"].endswith(":mode=600")


@pytest_twisted.ensureDeferred
async def test_a_unix_socket_listener_is_private_and_serves_rest(tmp_path):
    """--listen unix:PATH: the socket file is mode 0600 and REST answers over it."""
    path = tmp_path / "cp.sock"
    data = tmp_path / "data"
    argv = [sys.executable, "-m", "cpstream", "--data-dir", str(data), "--listen", f"unix:{path}"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_for(lambda: path.exists(), timeout=20)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        token = read_token(data)

        def ask() -> bytes:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                sock.connect(str(path))
                sock.sendall(
                    b"GET /api/instances HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                    + f"Authorization: Bearer {token}\r\n\r\n".encode()
                )
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
                return answer

        answer = await threads.deferToThread(ask)
        assert answer.startswith(b"HTTP/1.1 200") and b"\r\n[]\r\n" in answer
    finally:
        process.terminate()
        await wait_for(lambda: process.poll() is not None, timeout=15)


def self_signed(folder: Path) -> tuple[Path, Path, bytes]:
    """A key and a certificate for 127.0.0.1, made for this test."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = folder / "key.pem", folder / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path.write_bytes(pem)
    return key_path, cert_path, pem


@pytest_twisted.ensureDeferred
async def test_tls_serves_rest_streams_and_the_dashboard(tmp_path, reactor):
    """--listen ssl:...: REST, a stream upgrade and the dashboard over TLS, with a
    self-signed certificate the client trusts."""
    from treq.client import HTTPClient
    from twisted.internet import endpoints, ssl
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

    key, cert, pem = self_signed(tmp_path)
    listen = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    daemon = await Daemon(tmp_path / "data", "--listen", listen).start()
    try:
        assert daemon.url.startswith("https://127.0.0.1:")
        trust = ssl.Certificate.loadPEM(pem)
        client = HTTPClient(Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust)))
        code, listed = await get_json(daemon.url + "/api/instances", client=client)
        assert (code, listed) == (200, [])
        page = await client.get(daemon.url + "/")
        assert page.code == 200 and b"<html" in await page.content()
        tcp = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.port)
        tls = endpoints.wrapClientTLS(ssl.optionsForClientTLS("127.0.0.1", trust), tcp)
        stream = await endpoints.connectProtocol(tls, raw.Raw())
        token = ("Authorization", f"Bearer {read_token(daemon.data_dir)}")
        origin = ("Origin", daemon.url)
        stream.write(raw.upgrade("/ws/instances", f"127.0.0.1:{daemon.port}", [token, origin]))
        await stream.until(lambda c: raw.read_frames(c.data.split(b"\r\n\r\n", 1)[-1]).messages)
        assert stream.data.startswith(b"HTTP/1.1 101")
        body = stream.data.split(b"\r\n\r\n", 1)[1]
        assert raw.read_frames(body).messages[0]["type"] == "snapshot"
        stream.abort()
    finally:
        await daemon.stop()
