"""A local HTTP server standing in for the assets' canonical URLs (CITYGUARD_ASSET_BASE_URL keeps their paths)."""
from __future__ import annotations

import contextlib
import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from infra.assets import Asset


def canonical_tree(root: Path, assets: list[Asset], content: dict[str, bytes | Path]) -> Path:
    """Lays out each file at its canonical URL's path under root; `content` maps the URL to bytes or a file to link."""
    for asset in assets:
        for file in asset.files:
            target = root / urlsplit(file.url).path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            body = content[file.url]
            if isinstance(body, Path):
                target.symlink_to(body.resolve())
            else:
                target.write_bytes(body)
    return root


@contextlib.contextmanager
def serving(root: Path):
    """Serves root on 127.0.0.1; yields the base URL and the list of paths requested so far."""
    requested: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()
