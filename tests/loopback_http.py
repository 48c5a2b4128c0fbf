"""A real HTTP server on 127.0.0.1 with the misbehaviours ingest must survive."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class LoopbackServer:
    def __init__(self, files: dict[str, bytes] | None = None, root: Path | None = None):
        self.files = dict(files or {})
        self.root = root
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.flaky_hits = 0
        self._bomb: bytes | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0].lstrip("/")
                if path == "hang":  # accepts, never answers (until the test ends)
                    server.release.wait(30)
                    return
                if path == "redirect-loop":
                    return self._redirect("/redirect-loop")
                if path == "redirect-file":
                    return self._redirect("file:///etc/passwd")
                if path == "html":
                    return self._send(200, b"<html>hello</html>", "text/html")
                if path == "jpeg-as-html":  # a real image behind a lying header
                    return self._send(200, next(iter(server.files.values())), "text/html")
                if path == "html-as-jpeg":
                    return self._send(200, b"<html><body>not a picture</body></html>" * 20, "image/jpeg")
                if path == "empty":
                    return self._send(200, b"", "image/jpeg")
                if path == "drip":  # a byte at a time, for as long as the client stays (bounded)
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    for _ in range(120):
                        if server.release.wait(0.25):
                            return
                        try:
                            self.wfile.write(b"\xff")
                            self.wfile.flush()
                        except OSError:
                            return
                    return
                if path == "short-length":  # says 100 bytes, sends the whole image
                    data = next(iter(server.files.values()))
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if path == "gzip-bomb":  # compressed although identity was asked for
                    body = server.gzip_bomb()
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if path.startswith("redirect-to/"):  # anywhere: another host, a blocked address
                    return self._redirect(path[len("redirect-to/"):].replace("__", "://", 1))
                if path == "huge":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(10**10))
                    self.end_headers()
                    return
                if path == "flaky":  # 503 once, then the image: retries must recover it
                    with server.lock:
                        server.flaky_hits += 1
                        first = server.flaky_hits == 1
                    if first:
                        return self._send(503, b"busy", "text/plain")
                    path = next(iter(server.files))
                data = server.files.get(path)
                if data is None and server.root is not None and (server.root / path).is_file():
                    data = (server.root / path).read_bytes()
                if data is None:
                    return self._send(404, b"not found", "text/plain")
                return self._send(200, data, "image/jpeg")

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _redirect(self, location):
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def gzip_bomb(self) -> bytes:
        """64 MiB of zeros, gzipped (64 KiB), made once."""
        with self.lock:
            if self._bomb is None:
                import gzip

                self._bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
            return self._bomb

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
