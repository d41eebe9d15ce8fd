"""CURVE security with raw pyzmq sockets on 127.0.0.1, through edge.security's public API."""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from helpers import endpoint as free_endpoint

from edge.errors import UserError
from edge.security import CurveServer, configure_client, generate_keypair, load_public_key
from ssum.cli import main as ssum_main

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")

RECV_TIMEOUT_MS = 1500
REFUSED_WAIT_S = 1.0


@pytest.fixture()
def keys(tmp_path: Path) -> dict[str, Path]:
    """server pair, a listed client, an unlisted client; only 'listed' is authorized."""
    paths: dict[str, Path] = {}
    for name in ("server", "listed", "unlisted"):
        public, secret = generate_keypair(tmp_path / "keys", name)
        paths[name] = secret
        paths[f"{name}.pub"] = public
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    (authorized / "listed.key").write_bytes(paths["listed.pub"].read_bytes())
    paths["authorized"] = authorized
    return paths


@pytest.fixture()
def context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _server(
    context: zmq.Context, keys: dict[str, Path], kind: int
) -> tuple[zmq.Socket, str, CurveServer]:
    curve = CurveServer(context, keys["server"], keys["authorized"])
    sock = context.socket(kind)
    sock.linger = 0
    curve.apply(sock)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    return sock, f"tcp://127.0.0.1:{port}", curve


def _client(context: zmq.Context, keys: dict[str, Path], kind: int, who: str | None) -> zmq.Socket:
    sock = context.socket(kind)
    sock.linger = 0
    sock.rcvtimeo = RECV_TIMEOUT_MS
    sock.sndtimeo = 200
    if who is not None:
        configure_client(sock, keys[who], keys["server.pub"])
    return sock


def _push_received(context: zmq.Context, keys: dict[str, Path], who: str | None) -> list[bytes]:
    pull, endpoint, curve = _server(context, keys, zmq.PULL)
    try:
        push = _client(context, keys, zmq.PUSH, who)
        push.connect(endpoint)
        try:
            push.send_multipart([b"tile/s1", b"{}", b"\x00" * 16])
        except zmq.Again:
            pass  # nothing to queue to: the handshake never completed
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        received = []
        if poller.poll(RECV_TIMEOUT_MS if who == "listed" else REFUSED_WAIT_S * 1000):
            received = pull.recv_multipart()
        push.close()
        return received
    finally:
        pull.close()
        curve.stop()


def _sub_received(context: zmq.Context, keys: dict[str, Path], who: str | None) -> list[bytes]:
    pub, endpoint, curve = _server(context, keys, zmq.PUB)
    try:
        sub = _client(context, keys, zmq.SUB, who)
        sub.subscribe(b"sem/")
        sub.connect(endpoint)
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        deadline = time.monotonic() + (2.0 if who == "listed" else REFUSED_WAIT_S)
        received: list[bytes] = []
        while time.monotonic() < deadline and not received:
            pub.send_multipart([b"sem/s1", b"{}", b"\x01" * 16])
            if poller.poll(50):
                received = sub.recv_multipart()
        sub.close()
        return received
    finally:
        pub.close()
        curve.stop()


def test_listed_client_can_push_to_curve_pull(context, keys):
    assert _push_received(context, keys, "listed") == [b"tile/s1", b"{}", b"\x00" * 16]


def test_listed_client_can_subscribe_to_curve_pub(context, keys):
    assert _sub_received(context, keys, "listed") == [b"sem/s1", b"{}", b"\x01" * 16]


@pytest.mark.parametrize("who", ["unlisted", None], ids=["unlisted-key", "no-curve"])
def test_unauthorized_client_cannot_inject(context, keys, who):
    assert _push_received(context, keys, who) == []


@pytest.mark.parametrize("who", ["unlisted", None], ids=["unlisted-key", "no-curve"])
def test_unauthorized_client_cannot_receive(context, keys, who):
    assert _sub_received(context, keys, who) == []


def test_two_servers_on_one_context_keep_their_own_client_lists(context, keys, tmp_path):
    empty = tmp_path / "nobody"
    empty.mkdir()
    strict = CurveServer(context, keys["server"], empty)
    try:
        assert _push_received(context, keys, "listed") != []
    finally:
        strict.stop()


def test_keypair_files_and_modes(tmp_path):
    public, secret = generate_keypair(tmp_path / "k", "edge")
    assert public.name == "edge.key" and secret.name == "edge.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert b"secret-key" not in public.read_bytes()
    assert load_public_key(public) == load_public_key(secret)
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["edge.key", "edge.key_secret"]


def test_generate_refuses_to_overwrite_unless_forced(tmp_path):
    public, _ = generate_keypair(tmp_path, "edge")
    first = load_public_key(public)
    with pytest.raises(UserError, match="already exists"):
        generate_keypair(tmp_path, "edge")
    generate_keypair(tmp_path, "edge", overwrite=True)
    assert load_public_key(public) != first


def test_bad_key_files_are_user_errors(tmp_path, keys, context):
    sock = context.socket(zmq.PUSH)
    with pytest.raises(UserError, match="not found"):
        configure_client(sock, tmp_path / "missing.key_secret", keys["server.pub"])
    with pytest.raises(UserError, match="no secret key"):
        configure_client(sock, keys["listed.pub"], keys["server.pub"])
    with pytest.raises(UserError, match="authorized clients directory"):
        CurveServer(context, keys["server"], tmp_path / "no-such-dir")
    sock.close()


def test_keys_cli_generate_and_show(tmp_path, capsys):
    assert ssum_main(["keys", "generate", "--out", str(tmp_path), "--name", "rig"]) == 0
    assert (tmp_path / "rig.key_secret").exists()
    capsys.readouterr()
    assert ssum_main(["keys", "show", str(tmp_path / "rig.key")]) == 0
    assert capsys.readouterr().out.strip() == load_public_key(tmp_path / "rig.key").decode()
    assert ssum_main(["keys", "generate", "--out", str(tmp_path), "--name", "rig"]) == 2


def _replay_over_curve(tmp_path: Path, keys: dict[str, Path], who: str, timeout_s: float):
    """Replay a 2-tile simulated scan from a CURVE XPUB (edge.tools.rig); collect what `who` gets."""
    import threading

    from edge.tools.rig import replay_scan
    from edge.transport import CurveOptions
    from trainer.sim import scan as sim_scan

    scan = sim_scan.simulate_scan(tmp_path / "scan", rows=1, cols=2, tile=32, overlap=8, seed=0)
    context = zmq.Context()
    endpoint = free_endpoint()  # a ZeroMQ socket's close releases its port only later
    sub = _client(context, keys, zmq.SUB, who)
    sub.rcvtimeo = int(timeout_s * 1000)  # the rig's handshake and first tile, on a busy machine
    sub.subscribe(b"")
    sub.connect(endpoint)
    outcome: dict[str, object] = {}

    def rig() -> None:
        try:
            outcome["stats"] = replay_scan(
                scan,
                endpoint,
                curve=CurveOptions(keys["server"], keys["authorized"]),
                timeout_s=timeout_s,
                context=context,
            )
        except UserError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=rig)
    thread.start()
    topics = []
    while True:
        try:
            topics.append(sub.recv_multipart()[0].split(b"/")[0])
        except zmq.Again:
            break
        if topics[-1] == b"scan-end":
            break
    thread.join()
    sub.close()
    context.destroy(linger=0)
    return topics, outcome


def test_rig_replay_over_curve_reaches_only_a_listed_subscriber(tmp_path, keys):
    topics, outcome = _replay_over_curve(tmp_path / "a", keys, "listed", timeout_s=10)
    assert topics == [b"tile", b"tile", b"scan-end"] and "stats" in outcome, outcome
    topics, outcome = _replay_over_curve(tmp_path / "b", keys, "unlisted", timeout_s=1)
    assert topics == []
    assert isinstance(outcome.get("error"), UserError)


@pytest.fixture()
def curve_daemon(tmp_path: Path, keys: dict[str, Path], tiny_bundle: Path):
    """A daemon with [security] curve = true: PULL input and PUB output are CURVE servers."""
    from helpers import daemon_toml

    from edge.tools.supervise import NotifyListener, start_daemon, stop_daemon
    from trainer.sim.scan import simulate_scan

    scan = simulate_scan(tmp_path / "scan", rows=1, cols=2, tile=64, overlap=16, seed=0)
    security = {"curve": True, "server_secret_key": str(keys["server"]),
                "authorized_clients": str(keys["authorized"])}
    config, ports = daemon_toml(tmp_path / "edge.toml", tiny_bundle, security=security)
    notify = NotifyListener(tmp_path)
    proc = start_daemon(config, notify, tmp_path / "daemon.log")
    yield ports, scan
    stop_daemon(proc)
    notify.close()


def _replay_into(ports: dict[str, int], scan: Path, keys: dict[str, Path], who: str):
    from edge.tools.rig import replay_scan
    from edge.transport import CurveOptions

    curve = CurveOptions(keys[who], server_key=keys["server.pub"])
    endpoint = f"tcp://127.0.0.1:{ports['input']}"
    try:
        return replay_scan(scan, endpoint, socket="push", bind=False, timeout_s=2, curve=curve)
    except UserError:
        return None


@pytest.mark.slow
def test_daemon_converts_for_listed_peers_only(curve_daemon, keys):
    from helpers import wait_for

    from edge.tools.supervise import scrape

    ports, scan = curve_daemon
    context = zmq.Context()
    subscribers = {}
    for who in ("listed", "unlisted", None):
        sub = _client(context, keys, zmq.SUB, who)
        sub.subscribe(b"sem/")
        sub.connect(f"tcp://127.0.0.1:{ports['output']}")
        subscribers[who] = sub
    time.sleep(1.0)  # let the listed subscriber's handshake and subscription complete

    _replay_into(ports, scan, keys, "unlisted")
    time.sleep(REFUSED_WAIT_S)
    assert scrape(ports["metrics"])["ssum_edge_tiles_received_total"] == 0

    assert _replay_into(ports, scan, keys, "listed") is not None
    wait_for(lambda: scrape(ports["metrics"])["ssum_edge_tiles_converted_total"] == 2, 60,
             "2 converted")
    topics = [subscribers["listed"].recv_multipart()[0] for _ in range(2)]
    assert all(t.startswith(b"sem/") for t in topics)
    for who in ("unlisted", None):
        with pytest.raises(zmq.Again):
            subscribers[who].recv_multipart()
    for sub in subscribers.values():
        sub.close()
    context.destroy(linger=0)
