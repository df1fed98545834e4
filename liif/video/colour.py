"""Colour descriptions of video frames: the matrix and range a frame is converted to RGB with, and
those tagged on the output (untagged inputs get what players assume)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# FFmpeg colour-matrix ids (AVCOL_SPC_*) -> libswscale's coefficient tables.

# FFmpeg colour-matrix ids (AVCOL_SPC_*) -> libswscale's coefficient tables.
SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}

RGB_MATRIX, BT709, SMPTE170M, MPEG_RANGE, JPEG_RANGE = 0, 1, 6, 1, 2


@dataclass
class Colour:
    matrix: int  # AVCOL_SPC_*
    range: int  # AVCOL_RANGE_*
    primaries: int
    trc: int


def input_colour(frame: Any, coded_hw: tuple[int, int]) -> Colour:
    rng = int(frame.color_range) or (JPEG_RANGE if frame.format.name.startswith("yuvj") else MPEG_RANGE)
    matrix = int(frame.colorspace)
    if matrix not in SWS_MATRIX:
        matrix = BT709 if coded_hw[0] >= 720 or coded_hw[1] >= 1280 else SMPTE170M
    return Colour(matrix, rng, int(frame.color_primaries), int(frame.color_trc))


def output_colour(frame: Any, colour_in: Colour, out_hw: tuple[int, int], rgb_out: bool) -> Colour:
    if rgb_out:  # RGB pixels: no matrix (an encoder would otherwise tag its RGB planes as YUV)
        return Colour(RGB_MATRIX, JPEG_RANGE, colour_in.primaries, colour_in.trc)
    if not frame.format.is_rgb and int(frame.colorspace) in SWS_MATRIX:  # tagged: keep the input's description
        return colour_in
    # Untagged YUV keeps its range; RGB input becomes limited-range YUV, as usual for delivery.
    matrix = BT709 if out_hw[0] >= 720 or out_hw[1] >= 1280 else SMPTE170M
    rng = MPEG_RANGE if frame.format.is_rgb else colour_in.range
    return Colour(matrix, rng, colour_in.primaries, colour_in.trc)
