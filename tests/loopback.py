"""A loopback HTTP server over a directory, for tests that download."""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Server:
    """Serves a directory on 127.0.0.1 (a free port) and records the paths it answers."""

    def __init__(self, root: Path, handler: type[SimpleHTTPRequestHandler] = SimpleHTTPRequestHandler) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Counting(handler):  # type: ignore[valid-type,misc]
            def log_message(self, *args: object) -> None:
                seen.append(self.path)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Counting, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
