"""A Hugging Face hub stand-in on 127.0.0.1 for download tests: serves files in the hub's URL scheme
(`/{repo}/resolve/{revision}/{path}`) with the headers huggingface_hub reads (X-Repo-Commit, ETag = the LFS
sha256, Content-Length) and HTTP Range requests, and records every request. Never touches the internet."""
from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


class HubStandIn:
    def __init__(self):
        self.files: dict[tuple[str, str], bytes] = {}
        self.announced_sha: dict[tuple[str, str], str] = {}
        self.drop_once: dict[tuple[str, str], int] = {}   # cut the first GET after this many bytes
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _lookup(self):
                m = RESOLVE.match(self.path.split("?")[0])
                key = (m["repo"], m["path"]) if m else None
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                if key not in hub.files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None, None
                return key, hub.files[key]

            def _headers(self, key, data, status, start=0):
                self.send_response(status)
                sha = hub.announced_sha.get(key) or hashlib.sha256(data).hexdigest()
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{sha}"')
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()

            def do_HEAD(self):
                key, data = self._lookup()
                if key is not None:
                    self._headers(key, data, 200)

            def do_GET(self):
                key, data = self._lookup()
                if key is None:
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(re.match(r"bytes=(\d+)-", rng)[1])
                self._headers(key, data, 206 if start else 200, start)
                body = data[start:]
                cut = hub.drop_once.pop(key, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.server.shutdown()
        self.server.server_close()

    def gets(self, repo_path: str) -> list[str | None]:
        """The Range headers of the GET requests for a given repo/path."""
        return [r for m, p, r in self.requests if m == "GET" and p.split("?")[0].endswith("/" + repo_path)]
