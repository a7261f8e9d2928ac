"""A fault-injecting TCP proxy on loopback, between the sidecar and a real git server.

Modes (switchable while it runs, applied to the server-to-client direction):
- `pass`: forward bytes as they come;
- `drip`: forward one byte every `drip_seconds` (a remote that is never silent long enough for a
  per-read timeout, yet never finishes);
- `drop`: forward the request, never forward the reply, keep the connection open.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, mode: str = "pass", drip_seconds: float = 0.5) -> None:
        self.target = (target_host, target_port)
        self.mode = mode
        self.drip_seconds = drip_seconds
        self.connections = 0  # accepted so far
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._ended: set[int] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, name=f"fault-proxy-{self.port}", daemon=True).start()

    def url_for(self, url: str) -> str:
        """`url` with the target's host:port replaced by the proxy's."""
        host, port = self.target
        return url.replace(f"{host}:{port}", f"127.0.0.1:{self.port}", 1)

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open) // 2

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                self._open.update((client, upstream))
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, is_reply: bool) -> None:
        try:
            while not self._stopped.is_set():
                data = source.recv(65536)
                if not data:
                    # A half-close (git:// clients shut their writing side after the request)
                    # is passed on; the other direction keeps flowing.
                    sink.shutdown(socket.SHUT_WR)
                    return
                if not is_reply or self.mode == "pass":
                    sink.sendall(data)
                elif self.mode == "drip":
                    for i in range(len(data)):
                        if self._stopped.wait(self.drip_seconds):
                            return
                        sink.sendall(data[i : i + 1])
                # drop: read and discard, the client waits forever
        except OSError:
            # One side is gone (e.g. the sidecar cut its connection): close both.
            for sock in (source, sink):
                self._close(sock)
        finally:
            self._finished(source)

    def _close(self, sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        with self._lock:
            self._open.discard(sock)

    def _finished(self, source: socket.socket) -> None:
        """A direction ended: the source has nothing more to say. Close it once both
        directions through it are done, i.e. when its peer's pump has ended too."""
        peer = None
        with self._lock:
            for pair in self._pairs:
                if source in pair:
                    peer = pair[1] if pair[0] is source else pair[0]
        if peer is None:
            return
        with self._lock:
            both = {id(source), id(peer)} <= self._ended | {id(source)}
            self._ended.add(id(source))
        if both:
            self._close(source)
            self._close(peer)

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@contextmanager
def fault_proxy(target_host: str, target_port: int, mode: str = "pass", drip_seconds: float = 0.5) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target_host, target_port, mode, drip_seconds)
    try:
        yield proxy
    finally:
        proxy.stop()


def wait_until_connected(proxy: FaultProxy, count: int = 1, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while proxy.connections < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"the proxy saw {proxy.connections} connections, expected {count}")
        time.sleep(0.05)
