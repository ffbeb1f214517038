"""A local stand-in for the Hugging Face Hub's file endpoint, for download tests (never the network).

``FakeHub({"timm/test_resnet.r160_in1k/model.safetensors": data})`` serves those bytes at
``<url>/timm/test_resnet.r160_in1k/resolve/<revision>/model.safetensors`` with the headers the
Hub client reads (commit, ETag, size); any other file is a 404 ``EntryNotFound``. A process
started with ``HF_ENDPOINT=<url>`` downloads from it; ``requests`` lists what was asked.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _answer(self, with_body: bool) -> None:
                hub.requests.append((self.command, self.path))
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                key = None
                if len(parts) >= 5 and parts[2] == "resolve":  # org/repo/resolve/rev/file
                    key = "/".join(parts[:2] + parts[4:])
                data = hub.files.get(key)
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if with_body:
                    self.wfile.write(data)

            def do_HEAD(self):  # noqa: N802 - http.server's naming
                self._answer(False)

            def do_GET(self):  # noqa: N802
                self._answer(True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def downloads(self) -> list[str]:
        return [path for method, path in self.requests if method == "GET"]
