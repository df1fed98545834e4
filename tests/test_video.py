"""Video: frame-exact upscaling, streamed, with the container kept (timing, audio, rotation, colour)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av", reason="PyAV (liif[video]) is not installed")

import liif  # noqa: E402
from liif import checkpoints, video  # noqa: E402
from liif.cli import main  # noqa: E402
from liif.errors import LiifError  # noqa: E402
from liif.models import ModelSpec, build  # noqa: E402
from liif.video.colour import SWS_MATRIX  # noqa: E402

NTSC = Fraction(30000, 1001)


def pattern(i: int, w: int, h: int) -> np.ndarray:
    """Gradients, a per-frame blue level and a red square moving 3 pixels per frame."""
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, w)[None].astype(np.uint8)
    a[..., 1] = np.linspace(0, 255, h)[:, None].astype(np.uint8)
    a[..., 2] = (40 + i * 17) % 256
    a[4:14, 2 + 3 * i:12 + 3 * i] = [230, 40, 30]
    return a


def make_clip(path: Path, w: int = 48, h: int = 32, n: int = 12, rate: Fraction = NTSC, codec: str = "libx264rgb",
              pix_fmt: str = "rgb24", audio: bool = True, pts: list[int] | None = None, rotation: int = 0,
              frames: list[np.ndarray] | None = None, colour: tuple[int, int] | None = None,
              subtitles: bool = False) -> list[np.ndarray]:
    """Write a clip with PyAV (lossless RGB H.264 by default), an AAC track as long as the video and
    optionally two SubRip cues; ``pts`` in milliseconds makes it variable frame rate. Returns the RGB
    frames written."""
    frames = frames if frames is not None else [pattern(i, w, h) for i in range(n)]
    out = av.open(str(path), "w")
    v = out.add_stream(codec, rate=rate)
    v.width, v.height, v.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
    v.options = {"qp": "0"} if codec == "libx264rgb" else {}
    if pts is not None:
        v.time_base = v.codec_context.time_base = Fraction(1, 1000)
    if colour is not None:
        v.codec_context.colorspace, v.codec_context.color_range = colour
        v.codec_context.color_primaries = v.codec_context.color_trc = colour[0]
    if rotation:
        v.set_display_rotation(rotation)
    a = out.add_stream("aac", rate=48000) if audio else None
    if a is not None:
        a.layout = "stereo"
    sub = out.add_mux_stream("subrip") if subtitles else None  # muxed as given, no encoder
    for i, rgb in enumerate(frames):
        f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        if pix_fmt != "rgb24":
            f = f.reformat(format=pix_fmt, dst_colorspace=colour[0] if colour else None,
                           dst_color_range=colour[1] if colour else None)
        f.pts = i if pts is None else pts[i]
        for p in v.encode(f):
            out.mux(p)
    for p in v.encode(None):
        out.mux(p)
    if a is not None:
        total, t = int(48000 * len(frames) / rate), 0
        while t < total:
            s = (0.2 * np.sin(2 * np.pi * 440 * (t + np.arange(1024)) / 48000)).astype(np.float32)
            af = av.AudioFrame.from_ndarray(np.stack([s, s]), format="fltp", layout="stereo")
            af.sample_rate, af.pts = 48000, t
            t += 1024
            for p in a.encode(af):
                out.mux(p)
        for p in a.encode(None):
            out.mux(p)
    for k in range(2 if sub is not None else 0):
        cue = av.Packet(f"cue {k}".encode())
        cue.stream, cue.time_base = sub, Fraction(1, 1000)
        cue.pts = cue.dts = 100 + 150 * k
        cue.duration = 120
        out.mux(cue)
    out.close()
    return frames


def read(path: Path) -> dict:
    """Frames (RGB, decoded with the stream's own colour tags), timing and tags, audio packets."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        info = {"codec": vs.codec_context.name, "pix_fmt": vs.codec_context.pix_fmt, "rate": vs.average_rate,
                "declared": vs.frames, "duration": c.duration}
        frames = list(c.decode(vs))
    f0 = frames[0]
    info["size"] = (f0.width, f0.height)
    info["rotation"] = f0.rotation
    info["colour"] = (int(f0.colorspace), int(f0.color_range), int(f0.color_primaries), int(f0.color_trc))
    info["times"] = [f.pts * f.time_base for f in frames]
    info["rgb"] = [f.to_ndarray(format="rgb24", src_colorspace=SWS_MATRIX.get(int(f.colorspace)),
                                src_color_range=int(f.color_range)) for f in frames]
    with av.open(str(path)) as c:
        info["audio"] = [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size] if c.streams.audio else []
    with av.open(str(path)) as c:
        info["subtitles"] = [(bytes(p), p.pts * p.time_base, p.duration * p.time_base)
                             for p in c.demux(c.streams.subtitles[0]) if p.size] if c.streams.subtitles else []
    return info


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[liif.Upscaler, Path]:
    """A small random LIIF: fast, for the tests where only the container matters."""
    torch.manual_seed(0)
    spec = ModelSpec(encoder_args={"n_resblocks": 1, "n_feats": 8}, hidden=[16, 16])
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    checkpoints.save(build(spec).eval(), spec, path)
    return liif.load(path, device="cpu"), path


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_upscale_frames_is_lazy_builds_once_and_equals_images(upscaler, monkeypatch):
    built = []
    from liif import pipeline

    real = pipeline.TorchBackend  # the Pipeline builds it
    monkeypatch.setattr(pipeline, "TorchBackend", lambda *a, **k: built.append(1) or real(*a, **k))
    taken = []

    def source():
        for i in range(3):
            taken.append(i)
            yield pattern(i, 40, 24)

    it = upscaler.upscale_frames(source(), size=(30, 52))
    first = next(it)
    assert taken == [0]  # one frame in, one frame out
    rest = list(it)
    assert len(built) == 1 and taken == [0, 1, 2]
    for i, got in enumerate([first, *rest]):
        assert got.shape == (30, 52, 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, upscaler.upscale(pattern(i, 40, 24), size=(30, 52)))
    # 16-bit frames stay 16-bit, like images
    deep = (pattern(0, 40, 24).astype(np.uint16) * 257)
    got16 = next(upscaler.upscale_frames([deep], scale=1.5))
    assert got16.dtype == np.uint16 and got16.shape == (36, 60, 3)
    np.testing.assert_array_equal(got16, upscaler.upscale(deep, scale=1.5))


def test_lossless_video_equals_image_upscale_frame_by_frame(tiny, tmp_path):
    up, _ = tiny
    src, dst = tmp_path / "in.mkv", tmp_path / "out.mkv"
    frames = make_clip(src, subtitles=True)
    rep = up.upscale_video(src, dst, scale=1.5, codec="libx264rgb", crf=0)
    assert (rep.frames_done, rep.frames_written, rep.out_size) == (12, 12, (72, 48))
    a, b = read(src), read(dst)
    assert b["size"] == (72, 48) and len(b["rgb"]) == 12 and b["codec"] == "h264" and b["pix_fmt"] == "gbrp"
    assert b["rate"] == a["rate"] == NTSC and b["times"] == a["times"] and b["duration"] == a["duration"]
    assert len(a["audio"]) > 10 and b["audio"] == a["audio"]  # remuxed, byte for byte
    assert b["subtitles"] == a["subtitles"] == [(b"cue 0", Fraction(1, 10), Fraction(3, 25)),
                                                (b"cue 1", Fraction(1, 4), Fraction(3, 25))]
    assert all(np.array_equal(f, g) for f, g in zip(frames, a["rgb"], strict=True))  # the input file is lossless too
    for i, (rgb, got) in enumerate(zip(frames, b["rgb"], strict=True)):
        want = up.upscale(rgb, scale=1.5)
        assert want.std() > 3 and not np.array_equal(want, b["rgb"][i - 1])  # varied, frame by frame
        np.testing.assert_array_equal(got, want)


def test_cli_mp4_defaults_even_size_audio_and_timing(tiny, tmp_path, capsys):
    up, weights = tiny
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(src, codec="libx264", pix_fmt="yuv420p")
    rc, out, err = cli(["upscale", str(src), "-o", str(dst), "--size", "73x49", "--weights", str(weights),
                        "--device", "cpu"], capsys)
    assert rc == 0, err
    assert "rounded up to 74x50" in err and out.strip() == f"{src} -> {dst} (74x50, 12 frames)"
    a, b = read(src), read(dst)
    assert (b["codec"], b["pix_fmt"], b["size"], len(b["rgb"]), b["declared"]) == ("h264", "yuv420p", (74, 50), 12, 12)
    assert b["rate"] == NTSC and b["times"] == a["times"] and b["duration"] == a["duration"]
    assert len(a["audio"]) > 10 and b["audio"] == a["audio"]
    assert b"crf=18.0" in dst.read_bytes() and b"subme=7" in dst.read_bytes()  # x264's settings: CRF 18, medium
    # untagged SD input: the output is tagged with the matrix players assume (BT.601), limited range kept
    assert b["colour"][:2] == (6, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]


def test_variable_frame_rate_timestamps_kept(tiny, tmp_path):
    up, _ = tiny
    pts = [0, 33, 50, 117, 150, 300, 310, 400]
    src, dst = tmp_path / "vfr.mkv", tmp_path / "vfr.mp4"
    make_clip(src, n=8, pts=pts, audio=False)
    up.upscale_video(src, dst, scale=(2, 1.5))
    got = read(dst)
    assert got["times"] == [Fraction(p, 1000) for p in pts] and got["size"] == (72, 64)


def test_rotation_kept_and_size_is_displayed_orientation(tiny, tmp_path):
    up, _ = tiny
    src, dst = tmp_path / "rot.mp4", tmp_path / "out.mp4"
    make_clip(src, n=3, codec="libx264", pix_fmt="yuv420p", rotation=90, audio=False)  # coded 48x32, shown 32x48
    rep = up.upscale_video(src, dst, size=(72, 40))  # (height, width) as shown
    got = read(dst)
    assert rep.in_size == (32, 48) and rep.out_size == (40, 72)
    assert got["rotation"] == 90 and got["size"] == (72, 40)  # coded orientation, rotation tag kept


def test_ten_bit_input_is_rendered_from_16_bit_rgb_and_stays_ten_bit(tiny, tmp_path, monkeypatch):
    up, _ = tiny
    src, dst = tmp_path / "deep.mkv", tmp_path / "out.mkv"
    make_clip(src, n=3, codec="libx264", pix_fmt="yuv420p10le", audio=False)
    seen = []
    real = video.FrameUpscaler.__call__

    def spy(self, frame):
        out = real(self, frame)
        seen.append((frame.dtype, out.dtype))
        return out

    monkeypatch.setattr(video.FrameUpscaler, "__call__", spy)
    rep = up.upscale_video(src, dst, scale=2)
    got = read(dst)
    assert got["pix_fmt"] == "yuv420p10le" and got["size"] == (96, 64) and len(got["rgb"]) == rep.frames_written == 3
    assert seen == [(np.dtype(np.uint16), np.dtype(np.uint16))] * 3  # frames in and out as 16-bit RGB


def test_bt709_full_range_kept_and_converted_back_with_its_matrix(upscaler, tmp_path):
    """Flat saturated patches through a BT.709 full-range H.264 file: the output carries the same tags
    and, decoded with them, the same colours; decoded with BT.601 they would be far off."""
    colours = np.array([[220, 30, 40], [30, 200, 60], [40, 50, 210], [200, 190, 30]], np.uint8)
    img = np.zeros((32, 32, 3), np.uint8)
    for k, c in enumerate(colours):
        img[(k // 2) * 16:(k // 2) * 16 + 16, (k % 2) * 16:(k % 2) * 16 + 16] = c
    src, dst = tmp_path / "hd.mp4", tmp_path / "out.mp4"
    make_clip(src, codec="libx264", pix_fmt="yuv420p", frames=[img, img], audio=False, colour=(1, 2))
    upscaler.upscale_video(src, dst, scale=2)
    a, b = read(src), read(dst)
    assert a["colour"] == b["colour"] == (1, 2, 1, 1)
    centres = [(8 + 32 * (k // 2), 8 + 32 * (k % 2)) for k in range(4)]
    patches = lambda rgb: np.array([rgb[y:y + 16, x:x + 16].reshape(-1, 3).mean(0) for y, x in centres])  # noqa: E731
    want = patches(upscaler.upscale(a["rgb"][0], scale=2))  # the decoded input frame, upscaled as an image
    assert np.abs(want - colours).max() < 4
    # through RGB -> BT.709 full-range 4:2:0 -> CRF 18 -> RGB: within 3 levels
    assert np.abs(patches(b["rgb"][0]) - want).max() < 3
    with av.open(str(dst)) as c:
        wrong = next(c.decode(video=0)).to_ndarray(format="rgb24", src_colorspace=5, src_color_range=2)
    assert np.abs(patches(wrong) - want).max() > 10


def bad_file(kind: str, tmp_path: Path) -> Path:
    if kind == "text":
        p = tmp_path / "t.mp4"
        p.write_text("not a video")
    elif kind == "audio-only":
        p = tmp_path / "a.mp4"
        with av.open(str(p), "w") as out:
            a = out.add_stream("aac", rate=48000)
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 48000, 0
            for pk in [*a.encode(af), *a.encode(None)]:
                out.mux(pk)
    elif kind in ("truncated", "truncated-faststart"):
        full = tmp_path / "full.mp4"
        make_clip(full, codec="libx264", pix_fmt="yuv420p", audio=False)
        if kind == "truncated-faststart":  # index first: FFmpeg reads the first frames and stops early
            moved = tmp_path / "fs.mp4"
            with av.open(str(full)) as i, av.open(str(moved), "w", options={"movflags": "faststart"}) as o:
                s = o.add_stream_from_template(i.streams.video[0])
                for pk in i.demux(i.streams.video[0]):
                    if pk.dts is not None:
                        pk.stream = s
                        o.mux(pk)
            full = moved
        data = full.read_bytes()
        p = tmp_path / "tr.mp4"
        p.write_bytes(data[:len(data) * 2 // 3])
        full.unlink()
    elif kind == "subtitled":
        p = tmp_path / "s.mkv"
        make_clip(p, n=2, subtitles=True)
    elif kind == "ok":
        p = tmp_path / "ok.mp4"
        make_clip(p, n=2, codec="libx264", pix_fmt="yuv420p", audio=False)
    else:  # a Matroska file whose video codec FFmpeg does not know
        make_clip(tmp_path / "ok.mkv", n=2, audio=False)
        p = tmp_path / "unknown.mkv"
        p.write_bytes((tmp_path / "ok.mkv").read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_QQQQQ/ISO/AVC"))
        (tmp_path / "ok.mkv").unlink()
    return p


@pytest.mark.parametrize("kind,args,message", [
    ("text", [], "cannot read"),
    ("audio-only", [], "no video stream in"),
    ("truncated", [], "cannot read"),
    ("truncated-faststart", [], "truncated"),
    ("unknown-codec", [], "unsupported video codec"),
    ("ok", ["--codec", "nosuch"], "unknown video encoder 'nosuch'"),
    ("ok", ["--codec", "aac"], "'aac' is not a video encoder (it encodes audio)"),
    pytest.param("ok", ["--codec", "ffv1", "--crf", "20"], "encoder ffv1 has no CRF setting",
                 marks=pytest.mark.skipif(not hasattr(av.CodecContext, "supported_options"),
                                          reason="PyAV < 18 does not list an encoder's options")),
    ("ok", ["--region", "0,0,8,8"], "--region is not supported for video"),
    ("ok", ["--preset", "fastest"], "cannot start encoding"),
    ("subtitled", [], "cannot copy stream 2 (subtitle, srt) into .mp4: 'mp4' format does not support 'srt' codec"),
    ("ok", ["--crf", "99"], "--crf must be 0..63"),
])
def test_bad_video_input_one_line_error_no_output(tiny, tmp_path, capsys, kind, args, message):
    _, weights = tiny
    src = bad_file(kind, tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    rc, _, err = cli(["upscale", str(src), "-o", str(out_dir / "o.mp4"), "--scale", "2", "--weights", str(weights),
                      *args], capsys)
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("liif: error: ") and message in lines[0], err
    assert list(out_dir.iterdir()) == []


def test_video_obeys_max_input_pixels(tiny, tmp_path, capsys, monkeypatch):
    """``--max-input-pixels`` reaches the video path (it used to be dropped): a 48x32 clip (1,536
    pixels per frame) is refused under a 1,535-pixel limit, on the size its stream declares, before a
    single frame is decoded (a 16000x16000 clip used to decode its first frame, 1.5 GB, before the
    refusal) or any output written; and upscaled at 1,536."""
    from liif.video import transcode

    _, weights = tiny
    src = tmp_path / "in.mkv"
    make_clip(src, n=2, audio=False)
    out = tmp_path / "o.mkv"
    decoded = []
    real = transcode._demux

    def counting(*args, **kwargs):
        for kind, obj in real(*args, **kwargs):
            decoded.append(kind)
            yield kind, obj

    monkeypatch.setattr(transcode, "_demux", counting)
    base = ["upscale", str(src), "-o", str(out), "--scale", "1.5", "--weights", str(weights)]
    rc, _, err = cli([*base, "--max-input-pixels", "1535"], capsys)
    assert rc == 1 and err.count("\n") == 1, err
    assert f"{src} is 48x32 (WxH) = 1,536 pixels, above the input limit of 1,535" in err
    assert decoded == []  # refused on the declared size: no frame decoded
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]
    rc, stdout, err = cli([*base, "--max-input-pixels", "1536"], capsys)
    assert rc == 0 and "(72x48, 2 frames)" in stdout, err
    assert decoded == ["frame", "frame"]


def test_video_option_misuse(tiny, tmp_path, capsys):
    _, weights = tiny
    src = tmp_path / "in.mkv"
    make_clip(src, n=2, audio=False)
    png = tmp_path / "x.png"
    png.write_bytes(b"")
    for args, message in [([str(src), "-o", str(tmp_path / "o.png")], "the output of a video must be a video file"),
                          ([str(src), str(src), "-o", str(tmp_path / "d")], "give one input video"),
                          ([str(png), "-o", str(tmp_path / "o.png"), "--crf", "3"],
                           "--crf applies to video inputs only")]:
        rc, _, err = cli(["upscale", *args, "--scale", "2", "--weights", str(weights)], capsys)
        assert rc == 1 and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "x.png"]


def test_video_probed_without_video_suffix(tiny, tmp_path, capsys):
    _, weights = tiny
    src = tmp_path / "clip.bin"
    make_clip(src.with_suffix(".mkv"), n=2, audio=False)
    src.with_suffix(".mkv").rename(src)
    assert video.is_video(src) and not video.is_video(tmp_path / "missing.bin")
    rc, out, err = cli(["upscale", str(src), "-o", str(tmp_path / "o.mkv"), "--scale", "1.5", "--weights",
                        str(weights)], capsys)
    assert rc == 0 and "(72x48, 2 frames)" in out, err


def test_interrupt_and_failure_leave_no_file_and_say_how_far(tiny, tmp_path, capsys, monkeypatch):
    _, weights = tiny
    src, dst = tmp_path / "in.mkv", tmp_path / "out.mkv"
    make_clip(src)
    dst.write_bytes(b"old")
    real = video.FrameUpscaler.__call__

    def stop_at_5(exc):
        def call(self, frame):
            call.n += 1
            if call.n == 5:
                raise exc
            return real(self, frame)
        call.n = 0
        return call

    args = ["upscale", str(src), "-o", str(dst), "--scale", "1.5", "--weights", str(weights)]
    monkeypatch.setattr(video.FrameUpscaler, "__call__", stop_at_5(KeyboardInterrupt()))
    rc, _, err = cli(args, capsys)
    # ~12: the video's own duration (Matroska's DURATION tag), not the container's (the audio runs 0.43 s)
    assert rc == 130 and err.strip() == "liif: interrupted after 4 of ~12 frames; no output written"
    monkeypatch.setattr(video.FrameUpscaler, "__call__", stop_at_5(LiifError("render failed")))
    rc, _, err = cli(args, capsys)
    assert rc == 1 and err.strip() == "liif: error: render failed (after 4 of ~12 frames; no output written)"
    assert dst.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "out.mkv"]


def test_missing_pyav_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "av", None)  # import av -> ImportError
    rc, _, err = cli(["upscale", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "o.mp4"), "--scale", "2"], capsys)
    assert rc == 1 and err.strip() == "liif: error: video needs PyAV, which is not installed: pip install 'liif[video]'"
