"""The page's files, shipped in the package (``chatd/web/static/``), read once at start.

``/`` is ``index.html``; every other file of the folder is ``/static/<name>``. The folder
is flat and small (no build step: plain ES modules, CSS, an icon), so it is held in
memory and served from there: a request never touches the disk or blocks the loop.
"""

from __future__ import annotations

from importlib import resources

#: Content types by file extension; a file with another extension is not served.
TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".txt": b"text/plain; charset=utf-8",
    ".json": b"application/json",
    ".webmanifest": b"application/manifest+json",
}


class StaticFiles:
    """Path → (body, content type), for ``/`` and ``/static/<name>``."""

    __slots__ = ("files",)

    def __init__(self, package: str = "chatd.web.static") -> None:
        self.files: dict[str, tuple[bytes, bytes]] = {}
        try:
            folder = resources.files(package)
        except ModuleNotFoundError:
            return
        for entry in folder.iterdir():
            name = entry.name
            suffix = name[name.rfind(".") :] if "." in name else ""
            if not entry.is_file() or suffix not in TYPES:
                continue
            found = (entry.read_bytes(), TYPES[suffix])
            self.files["/static/" + name] = found
            if name == "index.html":
                self.files["/"] = found

    def get(self, path: str) -> tuple[bytes, bytes] | None:
        return self.files.get(path)
