"""The viewer's image library: the images the page may open, regular files directly inside the
``images`` folder and uploads. Each file is opened once, relative to the folder's descriptor and
without following a link, and checked on that descriptor (anything else is 404). Uploads are
decoded and kept in memory (a bounded number), never added to the folder."""
from __future__ import annotations

import os
import secrets
import stat
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import HTTPException
from PIL import Image

from liif.imaging import WEB_SUFFIXES
from liif.serve.images import decode_image
from liif.serve.limits import Limits


@dataclass
class Entry:
    id: str
    name: str
    image: Image.Image  # RGB, fully decoded
    stamp: tuple[int, ...] = ()  # served files: (device, inode, size, mtime) of the file decoded

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "width": self.image.width, "height": self.image.height}


def servable_name(name: str) -> bool:
    """A plain, visible file name with an image suffix: one path component, nothing to resolve, and
    text (a name that is not UTF-8 reaches Python with surrogates that no JSON answer can carry)."""
    return (0 < len(name) <= 255 and "/" not in name and "\\" not in name and "\0" not in name
            and not name.startswith(".") and Path(name).suffix.lower() in WEB_SUFFIXES and _text(name))


def _text(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Library:
    """Images the viewer may open: regular files directly in ``folder`` (links are not followed)
    and uploads. The folder is opened once; files are opened relative to it."""

    def __init__(self, folder: Path | None, limits: Limits) -> None:
        self.folder = folder.resolve() if folder is not None else None
        self.dir_fd: int | None = None
        if self.folder is not None:
            self.dir_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            weakref.finalize(self, os.close, self.dir_fd)
        self.limits = limits
        self.uploads: OrderedDict[str, Entry] = OrderedDict()
        self.decoded: OrderedDict[str, Entry] = OrderedDict()
        self.lock = threading.Lock()

    def served_names(self) -> list[str]:
        if self.dir_fd is None:
            return []
        with os.scandir(self.dir_fd) as entries:
            return sorted(e.name for e in entries if servable_name(e.name) and e.is_file(follow_symlinks=False))

    def open(self, name: str) -> tuple[BinaryIO, os.stat_result]:
        """Open ``name`` once (O_NOFOLLOW, relative to the folder's descriptor, so no link is
        followed and nothing can be swapped between a check and the read), then check on that
        descriptor that it is a regular file within the size limit; 404 or 413 otherwise."""
        if self.dir_fd is None or not servable_name(name):
            raise HTTPException(404, "no such image")
        try:  # O_NONBLOCK: a FIFO under an image name must not hang the open
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=self.dir_fd)
        except OSError:
            raise HTTPException(404, "no such image") from None
        try:  # checked on the bare descriptor: fdopen refuses a folder and leaves the descriptor open
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise HTTPException(404, "no such image")
            if st.st_size > self.limits.served_bytes:
                raise HTTPException(413, f"{name} is larger than {self.limits.served_bytes:,} bytes")
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb"), st

    def listing(self) -> list[dict[str, Any]]:
        out = []
        for name in self.served_names():
            try:
                f, _ = self.open(name)
                with f, Image.open(f) as im:  # reads the header only
                    w, h = im.size
            except (HTTPException, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
                    Image.DecompressionBombWarning):
                continue  # gone, not an image, or far too large
            out.append({"id": f"f:{name}", "name": name, "width": w, "height": h})
        return out

    def cached(self, image_id: str) -> Entry | tuple[int, ...]:
        """The decoded image if it is at hand (an upload, or a served file unchanged since it was
        decoded), else the stamp of the served file that :meth:`load` would decode; 404 or 413 as
        :meth:`open`. Quick: it decodes nothing (blocking all the same: call it off the event loop)."""
        with self.lock:
            if image_id in self.uploads:
                return self.uploads[image_id]
        f, st = self.open(served_name(image_id))
        f.close()
        stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self.lock:
            entry = self.decoded.get(image_id)
            if entry is not None and entry.stamp == stamp:
                self.decoded.move_to_end(image_id)
                return entry
        return stamp

    def load(self, image_id: str) -> Entry:
        """Read and decode the served file ``image_id`` and keep it (the 4 most recent); slow."""
        name = served_name(image_id)
        f, st = self.open(name)
        with f:
            stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            data = f.read(self.limits.served_bytes + 1)
        if len(data) > self.limits.served_bytes:
            raise HTTPException(413, f"{name} is larger than {self.limits.served_bytes:,} bytes")
        entry = Entry(image_id, name, decode_image(data, self.limits), stamp)
        del data
        with self.lock:
            self.decoded[image_id] = entry
            while len(self.decoded) > 4:
                self.decoded.popitem(last=False)
        return entry

    def get(self, image_id: str) -> Entry:
        """The decoded image, decoding it if needed (blocking: call it off the event loop)."""
        entry = self.cached(image_id)
        return entry if isinstance(entry, Entry) else self.load(image_id)

    def add_upload(self, name: str, file: BinaryIO) -> Entry:
        """Read an uploaded file (at most ``upload_bytes``), decode it and keep it (the most recent
        ``uploads_kept``); slow."""
        data = file.read(self.limits.upload_bytes + 1)
        if len(data) > self.limits.upload_bytes:
            raise HTTPException(413, f"upload larger than {self.limits.upload_bytes:,} bytes")
        entry = Entry(f"u:{secrets.token_hex(8)}", Path(name or "upload").name[:100], decode_image(data, self.limits))
        del data
        with self.lock:
            self.uploads[entry.id] = entry
            while len(self.uploads) > self.limits.uploads_kept:
                self.uploads.popitem(last=False)
        return entry


def served_name(image_id: str) -> str:
    """``f:NAME`` -> NAME; anything else is no served file (404)."""
    if not image_id.startswith("f:"):
        raise HTTPException(404, "no such image")
    return image_id[2:]


__all__ = ["Entry", "Library", "servable_name", "served_name"]
