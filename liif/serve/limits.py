"""The viewer's limits: bytes and pixels of uploads and served files (pixels read from the header,
before decoding), pixels per view and per download, scale per axis, renders at once and waiting,
decodes at once and waiting, uploads kept, seconds per request, bytes of features and maps kept.
``/api/config`` sends them to the page as they are."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace


def machine_cache_bytes() -> int:
    """The default size of the features and maps cache: an eighth of this machine's memory, at
    least 256 MiB and at most 4 GiB."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    return int(min(4 << 30, max(256 << 20, ram // 8)))


@dataclass(frozen=True)
class Limits:
    upload_bytes: int = 20 << 20
    input_pixels: int = 12_000_000  # decoded pixels of an uploaded or served image (checked on the header)
    served_bytes: int = 100 << 20  # one file of the images folder
    view_pixels: int = 4_200_000  # one /api/render window: a 2560x1600 screen
    download_pixels: int = 16_800_000  # one /api/download: 4K UHD x 2
    max_scale: float = 64.0  # output/input per axis: x30 zoom at device pixel ratio 2, with margin
    workers: int = 0  # renders running at once; 0: one for LIIF/LTE (each uses every core), one per core for LMF
    queue: int = 4  # renders waiting; beyond that 503
    decoders: int = 2  # decodes running at once (uploads, first opening of a served file, source PNGs)
    decode_queue: int = 16  # decodes waiting; beyond that 503
    uploads_kept: int = 16  # uploaded images kept in memory, oldest dropped
    request_seconds: float = 300.0  # one render request, waiting included; beyond that 504
    cache_bytes: int = field(default_factory=machine_cache_bytes)  # features and maps kept (0: none)


def resolve_workers(limits: Limits, one_thread_decode: bool, cores: int) -> Limits:
    """``limits`` with ``workers=0`` (automatic) replaced: a render per core where each decodes with one
    thread (LMF: its decode is many small steps, which two threads slow down on a busy CPU), else one
    render at a time using every core."""
    if limits.workers > 0:
        return limits
    return replace(limits, workers=max(1, min(cores, 4)) if one_thread_decode else 1)


__all__ = ["Limits", "resolve_workers"]
