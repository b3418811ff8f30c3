"""A fault-injecting TCP proxy on loopback, for network fault tests (issue 31).

Why a small proxy here rather than Toxiproxy: the faults these tests need are per *process*
(partition one worker from the brokers while a second worker, the test's client and the broker's
own connections keep theirs), and every client reaches the broker through the one address the
broker advertises. Toxiproxy tells connections apart by listen port only, so it would need one
broker listener per worker; this proxy looks up the process that owns each accepted connection
(`/proc/net/tcp` and the `/proc/<pid>/fd` of the test's children and of the processes named
in `assign`, e.g. brokers) and applies the rules of that process's group. It runs in its own thread with its own event loop, so the test's loop (the load, the
client) never waits for it. No root, no netem, no iptables; loopback only.

What it can do to a group's connections, both directions, order always kept:

- `impair(group, latency_ms, jitter_ms, loss)`: each chunk is delivered `latency ± jitter` ms
  after it arrived; with probability `loss` a chunk is "lost" and arrives one retransmission
  timeout later (`RTO_MS`, TCP's minimum on Linux), holding up what follows it, as a lost
  segment does on a TCP connection (a byte stream cannot lose bytes without a reset).
- `partition(group)`: nothing passes either way (bytes are held, new connections are accepted
  and then hear nothing), as when packets are dropped; `heal(group)` delivers what was held if
  the connection is still open, as TCP's retransmission would.
- `cut(group)`: every open connection of the group is reset (SO_LINGER 0) at once.
- `cut_on_request(group, api_keys, times)`: the next `times` requests of the group whose Kafka
  API key is in `api_keys` (0 Produce, 26 EndTxn, ...) are not forwarded: their connection is
  reset instead, so the cut lands exactly mid-transaction (a transactional produce) or on the
  commit itself (EndTxn). The proxy reads only the request framing (size, API key) of the
  client-to-broker direction.

Everything it did is counted in `stats` (connections, chunks delayed or "lost", cuts, resets).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Linux's minimum TCP retransmission timeout: what one lost segment costs on a quiet loopback.
RTO_MS = 200.0
#: Bytes read per chunk.
CHUNK = 65536
#: The group of a connection whose process is not in any group (the test itself, the broker).
OTHER = "other"


@dataclass
class Rules:
    """The faults of one group."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    partitioned: bool = False
    cut_api_keys: frozenset[int] = frozenset()
    cuts_left: int = 0


@dataclass(eq=False)
class _Conn:
    group: str
    pid: int | None
    peer_port: int
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    framer: _Framer | None = None


class _Framer:
    """The API keys of the Kafka requests in a client-to-broker byte stream (size-prefixed frames)."""

    def __init__(self) -> None:
        self._head = b""  # the first bytes of a frame not yet complete enough to read its key
        self._left = 0  # bytes of the current frame still to come

    def keys(self, data: bytes) -> list[int]:
        """The API keys of the requests that begin in `data`."""
        found, i = [], 0
        while i < len(data):
            if self._left:
                step = min(self._left, len(data) - i)
                self._left -= step
                i += step
                continue
            need = 6 - len(self._head)  # int32 size + int16 api_key
            self._head += data[i : i + need]
            i += min(need, len(data) - i)
            if len(self._head) < 6:
                break
            size, key = struct.unpack(">ih", self._head)
            found.append(key)
            self._left = size - 2
            self._head = b""
        return found


def _tcp_inode(peer_port: int, server_port: int) -> int | None:
    """The inode of the client's end of a loopback connection from `peer_port` to `server_port`.

    IPv4 sockets are in /proc/net/tcp; a JVM's are IPv6 sockets with v4-mapped addresses, in
    /proc/net/tcp6: both are searched, by the two ports.
    """
    want_local, want_remote = f":{peer_port:04X}", f":{server_port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                parts = line.split()
                if parts[1].endswith(want_local) and parts[2].endswith(want_remote):
                    return int(parts[9])
    return None


def _children(parent: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            out.append(int(entry.name))
    return out


def _owner(inode: int, candidates: Iterable[int]) -> int | None:
    target = f"socket:[{inode}]"
    for pid in candidates:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == target:
                        return pid
        except OSError:
            continue
    return None


class FaultProxy:
    """Forward ``127.0.0.1:listen_port`` to ``127.0.0.1:target_port``, with faults per process group.

    Args:
        listen_port: where clients connect (the address the broker advertises).
        target_port: the broker's real listener.
        seed: the random source of latency and loss (runs are repeatable in what they draw).
    """

    def __init__(self, listen_port: int, target_port: int, *, seed: int = 31) -> None:
        self.listen_port, self.target_port = listen_port, target_port
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"proxy-{listen_port}", daemon=True)
        self._server: asyncio.Server | None = None
        self._groups: dict[int, str] = {}  # pid -> group
        self._rules: dict[str, Rules] = {}
        self._healed: dict[str, asyncio.Event] = {}
        self._conns: set[_Conn] = set()
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------------ lifecycle (test thread)

    def start(self) -> FaultProxy:
        """Listen (returns once the port accepts)."""
        self._thread.start()
        self._call(self._listen()).result(10)
        return self

    def stop(self) -> None:
        """Reset every connection and stop listening."""
        with contextlib.suppress(Exception):
            self._call(self._shutdown()).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    # ------------------------------------------------------------------ controls (test thread)

    def assign(self, group: str, pids: Iterable[int]) -> None:
        """Put the processes `pids` in `group` (their open and future connections)."""
        self._call(self._assign(group, list(pids))).result(10)

    def impair(self, group: str, *, latency_ms: float = 0.0, jitter_ms: float = 0.0, loss: float = 0.0) -> None:
        """Delay the group's chunks by `latency_ms ± jitter_ms` and "lose" a share `loss` of them."""
        if not 0 <= loss < 1 or latency_ms < 0 or jitter_ms < 0 or jitter_ms > latency_ms:
            raise ValueError(f"bad impairment: latency {latency_ms} ± {jitter_ms} ms, loss {loss}")

        async def set_rules() -> None:
            r = self._rules.setdefault(group, Rules())
            r.latency_ms, r.jitter_ms, r.loss = latency_ms, jitter_ms, loss

        self._call(set_rules()).result(10)

    def partition(self, group: str) -> None:
        """Let nothing of the group pass, either way, until `heal`."""
        self._call(self._set_partition(group, True)).result(10)

    def heal(self, group: str) -> None:
        """End the group's partition: what was held is delivered, in order."""
        self._call(self._set_partition(group, False)).result(10)

    def cut(self, group: str) -> int:
        """Reset every open connection of the group now; returns how many were cut."""
        return int(self._call(self._cut(group)).result(10))

    def cut_on_request(self, group: str, api_keys: Iterable[int], times: int = 1) -> None:
        """Reset the connection of the group's next `times` requests with one of `api_keys` instead of sending them."""

        async def arm() -> None:
            r = self._rules.setdefault(group, Rules())
            r.cut_api_keys, r.cuts_left = frozenset(api_keys), times

        self._call(arm()).result(10)

    def connections(self, group: str) -> int:
        """Open connections of the group."""
        return int(self._call(self._count(group)).result(10))

    # ------------------------------------------------------------------ the loop's side

    def _call(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.listen_port, reuse_address=True)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            self._reset(conn)

    async def _assign(self, group: str, pids: list[int]) -> None:
        for pid in pids:
            self._groups[pid] = group
        for conn in list(self._conns):
            if conn.pid is None:  # accepted before its process was named (a broker's own links)
                conn.pid = await self._owner_pid(conn.peer_port)
            if conn.pid in pids:
                conn.group = group

    async def _set_partition(self, group: str, on: bool) -> None:
        self._rules.setdefault(group, Rules()).partitioned = on
        ev = self._healed.setdefault(group, asyncio.Event())
        if on:
            ev.clear()
            self.stats[f"{group}.partitions"] += 1
            self.stats[f"{group}.held_connections"] += sum(1 for c in self._conns if c.group == group)
        else:
            ev.set()

    async def _cut(self, group: str) -> int:
        victims = [c for c in self._conns if c.group == group]
        for conn in victims:
            self._reset(conn)
        self.stats[f"{group}.cuts"] += len(victims)
        return len(victims)

    async def _count(self, group: str) -> int:
        return sum(1 for c in self._conns if c.group == group)

    def _reset(self, conn: _Conn) -> None:
        for w in conn.writers:
            sock = w.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()
        for t in conn.tasks:
            t.cancel()
        self._conns.discard(conn)

    async def _owner_pid(self, peer_port: int) -> int | None:
        def find() -> int | None:
            inode = _tcp_inode(peer_port, self.listen_port)
            return None if inode is None else _owner(inode, [*self._groups, *_children(os.getpid())])

        return await self._loop.run_in_executor(None, find)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        peer = client_w.get_extra_info("peername")
        pid = await self._owner_pid(peer[1]) if peer else None
        group = self._groups.get(pid, OTHER) if pid is not None else OTHER
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            self.stats["refused"] += 1
            return
        conn = _Conn(group, pid, peer[1] if peer else 0, [client_w, server_w], framer=_Framer())
        self._conns.add(conn)
        self.stats[f"{group}.connections"] += 1
        conn.tasks = [
            asyncio.create_task(self._pump(conn, client_r, server_w, requests=True)),
            asyncio.create_task(self._pump(conn, server_r, client_w)),
        ]

    async def _pump(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, requests: bool = False
    ) -> None:
        """Read chunks, and deliver each at its time (never before the one read before it)."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        deliver = asyncio.create_task(self._deliver(conn, queue, writer))
        last_due = 0.0
        try:
            while data := await reader.read(CHUNK):
                rules = self._rules.get(conn.group)
                if requests and conn.framer is not None:
                    keys = conn.framer.keys(data)
                    if rules is not None and rules.cuts_left and rules.cut_api_keys.intersection(keys):
                        rules.cuts_left -= 1
                        hit = sorted(rules.cut_api_keys.intersection(keys))
                        self.stats[f"{conn.group}.cuts_on_api_{hit[0]}"] += 1
                        self._reset(conn)
                        return
                now = time.monotonic()
                due = now
                if rules is not None and (rules.latency_ms or rules.loss):
                    delay = rules.latency_ms + self._rng.uniform(-rules.jitter_ms, rules.jitter_ms)
                    if rules.loss and self._rng.random() < rules.loss:
                        delay += RTO_MS
                        self.stats[f"{conn.group}.lost"] += 1
                    self.stats[f"{conn.group}.delayed"] += 1
                    due = now + delay / 1000
                last_due = max(due, last_due)
                queue.put_nowait((last_due, data))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await deliver
            if conn in self._conns:
                self._reset(conn)

    async def _deliver(
        self, conn: _Conn, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter
    ) -> None:
        while (item := await queue.get()) is not None:
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            rules = self._rules.get(conn.group)
            if rules is not None and rules.partitioned:
                await self._healed.setdefault(conn.group, asyncio.Event()).wait()
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                return  # the connection was reset (a cut): what is left is dropped
