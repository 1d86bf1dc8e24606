"""A recording HTTP proxy for the headless-Chromium tests: pages are opened with every outside
request sent here, and the test reads which hosts were asked for (the proxy answers nothing)."""

from __future__ import annotations

import re
import socket
import threading


class RecordingProxy:
    """A proxy that answers nothing and writes down the host of every request."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.hosts: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    line = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
                except OSError:
                    continue
                if not line:  # a preconnected socket closed unused: no request was made
                    continue
                target = line.split(" ")[1] if line.count(" ") >= 2 else line
                self.hosts.append(re.sub(r"^[a-z]+://", "", target).split("/")[0].split(":")[0])

    def close(self) -> None:
        self.sock.close()
