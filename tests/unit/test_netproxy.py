"""The network fault proxy of the tests (`tests.support.netproxy`), against a local echo server.

A child process connects through it, so the proxy's grouping by owning process is what is
tested; each fault is checked by what the child observes (bytes back, when, or a reset).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.support.netproxy import OTHER, FaultProxy, _Framer

CHILD = r"""
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("connected", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    t0 = time.monotonic()
    try:
        s.sendall(b"x" * 10)
        s.settimeout(float(cmd))
        got = s.recv(100)
        print("got", len(got), round((time.monotonic() - t0) * 1000), flush=True)
    except socket.timeout:
        print("timeout", flush=True)
    except OSError as exc:
        print("error", type(exc).__name__, flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def echo_port() -> Iterator[int]:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # a reset by the proxy ends it
            while data := conn.recv(100):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield port
    srv.close()


def test_faults_apply_to_the_child_process_group_only(echo_port: int) -> None:
    proxy = FaultProxy(free_port(), echo_port).start()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(proxy.listen_port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "connected"

        def ask(timeout: float) -> list[str]:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(f"{timeout}\n")
            child.stdin.flush()
            return child.stdout.readline().split()

        assert ask(5)[:2] == ["got", "10"]
        proxy.assign("worker", [child.pid])
        assert proxy.connections("worker") == 1 and proxy.connections(OTHER) == 0
        proxy.impair("worker", latency_ms=150, jitter_ms=0)
        got = ask(5)
        assert got[:2] == ["got", "10"] and int(got[2]) >= 2 * 150  # both directions delayed
        proxy.impair("worker")
        proxy.partition("worker")
        assert ask(0.5) == ["timeout"]  # held, not lost
        proxy.heal("worker")
        assert ask(5)[0] == "got"  # the held echo arrives once healed
        assert proxy.cut("worker") == 1
        assert ask(5)[0] in ("error", "got")  # reset (a read may still see EOF as 0 bytes)
        assert proxy.stats["worker.cuts"] == 1 and proxy.stats["worker.partitions"] == 1
    finally:
        child.kill()
        child.communicate(timeout=10)
        proxy.stop()


def test_the_framer_finds_each_requests_api_key_across_chunk_boundaries() -> None:
    def frame(key: int, body: bytes) -> bytes:
        payload = struct.pack(">hh", key, 4) + body  # api_key, api_version, then the rest
        return struct.pack(">i", len(payload)) + payload

    stream = frame(0, b"p" * 300) + frame(26, b"e" * 7) + frame(18, b"")
    for size in (1, 2, 5, 7, 64, len(stream)):
        f = _Framer()
        keys = [k for i in range(0, len(stream), size) for k in f.keys(stream[i : i + size])]
        assert keys == [0, 26, 18], size
