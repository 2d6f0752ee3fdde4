"""The one HTTP server of the tests: a directory served on 127.0.0.1.

In the test process, `Server` serves on a free port in a thread and records
the paths it answered. Inside a sandbox, this file runs as a script (standard
library only, so the sandbox's python3 needs nothing else):

    python3 loopback.py ROOT PORT [plain|silent|mid-body] [--tls CERT KEY]

which serves ROOT on 127.0.0.1:PORT until killed, logging each request to
stderr as http.server does; `silent` and `mid-body` misbehave on purpose
(see StallingHandler), --tls serves https with the given certificate.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StallingHandler(SimpleHTTPRequestHandler):
    """'silent': takes the request and never answers; 'mid-body': serves the
    directory, but sends only the first 64 KiB of any archive, then nothing."""

    mode = "silent"

    def do_GET(self) -> None:
        if self.mode == "silent":
            time.sleep(3600)
            return
        if self.path.endswith(".tar.bz2"):
            data = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:65536])
            self.wfile.flush()
            time.sleep(3600)
            return
        super().do_GET()


def handler_for(mode: str) -> type[SimpleHTTPRequestHandler]:
    if mode == "plain":
        return SimpleHTTPRequestHandler
    if mode in ("silent", "mid-body"):
        return type("Stalling", (StallingHandler,), {"mode": mode})
    raise ValueError(f"unknown mode {mode!r} (plain, silent, mid-body)")


class Server:
    """Serves `root` on 127.0.0.1 (a free port unless `port` is given) and records the paths it answers.

    `log` also writes each request to stderr as http.server does; `tls` is a
    (certificate, key) pair for https. Usable as a context manager.
    """

    def __init__(
        self,
        root: Path,
        handler: type[SimpleHTTPRequestHandler] = SimpleHTTPRequestHandler,
        port: int = 0,
        log: bool = False,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Recording(handler):  # type: ignore[valid-type,misc]
            def log_message(self, format: str, *args: object) -> None:
                seen.append(self.path)
                if log:
                    super().log_message(format, *args)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(Recording, directory=str(root)))
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = int(self.httpd.server_address[1])
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serves a directory on 127.0.0.1 until killed.")
    parser.add_argument("root", type=Path)
    parser.add_argument("port", type=int)
    parser.add_argument("mode", nargs="?", default="plain", choices=("plain", "silent", "mid-body"))
    parser.add_argument("--tls", nargs=2, type=Path, metavar=("CERT", "KEY"))
    args = parser.parse_args()
    tls = (args.tls[0], args.tls[1]) if args.tls else None
    Server(args.root, handler_for(args.mode), args.port, log=True, tls=tls).thread.join()


if __name__ == "__main__":
    main()
