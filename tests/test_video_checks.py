"""Video jobs refused before any work, or told short: streams the output container cannot hold,
encoders it does not take, destinations that cannot be written, truncated or damaged inputs, and
SIGTERM. Each is one line, a non-zero exit and no file (temp files included)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="PyAV (liif[video]) is not installed")

import test_video  # noqa: E402
from test_video import cli, make_clip, read  # noqa: E402

from liif import video  # noqa: E402
from liif.errors import LiifError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
tiny = test_video.tiny  # the fixture: a small random LIIF


def pcm_clip(path: Path, rate: int, frames: int = 3) -> None:
    """H.264 video with one mono pcm_s16le track (Matroska stores no channel layout)."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 48, 32, "yuv420p"
        a = out.add_stream("pcm_s16le", rate=rate)
        a.layout = "mono"
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.full((32, 48, 3), 40 * i, np.uint8), format="rgb24")
            f = f.reformat(format="yuv420p")
            f.pts = i
            for p in v.encode(f):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
        for t in range(0, rate * frames // 25, 1024):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.int16), format="s16", layout="mono")
            af.sample_rate, af.pts = rate, t
            for p in a.encode(af):
                out.mux(p)
        for p in a.encode(None):
            out.mux(p)


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_pcm_audio_into_flv_is_refused_in_one_line_not_an_abort(tiny, tmp_path):
    """FFmpeg's flv muxer stops on an assertion (SIGABRT, no message, a 0-byte temp file) when a
    copied PCM track has no channel layout; the dry run in a child process catches it. Run as a
    process of its own, since the old code killed its process."""
    _, weights = tiny
    src, out = tmp_path / "pcm.mkv", tmp_path / "out"
    pcm_clip(src, 44100)
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", "import sys; from liif.cli import main; sys.exit(main(sys.argv[1:]))",
                           "upscale", str(src), "-o", str(out / "o.flv"), "--scale", "2", "--weights", str(weights),
                           "--device", "cpu"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert one_line(proc.stderr) == ("liif: error: cannot copy stream 1 (audio, pcm_s16le) into .flv: FFmpeg's flv "
                                     f"muxer aborts on it (signal {int(signal.SIGABRT)}); try .mkv")
    assert entries(out) == []


@pytest.mark.parametrize("kind,suffix,message", [
    # FFmpeg refuses this one with an error, at the header: it used to be blamed on the video encoder
    ("pcm48k", ".flv", "cannot copy stream 1 (audio, pcm_s16le) into .flv: Function not implemented; try .mkv"),
    ("aac", ".webm", "cannot copy stream 1 (audio, aac) into .webm: 'webm' format does not support 'aac' codec; "
                     "try .mkv"),
])
def test_copied_stream_the_container_refuses_is_named_before_any_render(tiny, tmp_path, capsys, monkeypatch,
                                                                      kind, suffix, message):
    _, weights = tiny
    src = tmp_path / "in.mkv"
    if kind == "pcm48k":
        pcm_clip(src, 48000)
    else:
        make_clip(src, n=2)
    rendered = []
    monkeypatch.setattr(video.FrameUpscaler, "__call__", lambda self, frame: rendered.append(1))
    rc, _, err = cli(["upscale", str(src), "-o", str(tmp_path / f"o{suffix}"), "--scale", "2", "--weights",
                      str(weights)], capsys)
    lines = err.strip().splitlines()  # .webm: the note on the encoder chosen, then the error
    assert rc == 1 and lines[-1].startswith("liif: error: ") and lines[-1].endswith(message), err
    assert len(lines) == (2 if suffix == ".webm" else 1)
    assert rendered == [] and entries(tmp_path) == ["in.mkv"]


def test_webm_output_gets_vp9_when_no_codec_is_named(tiny, tmp_path, capsys):
    _, weights = tiny
    src, dst = tmp_path / "in.mkv", tmp_path / "out.webm"
    make_clip(src, n=3, audio=False)
    rc, out, err = cli(["upscale", str(src), "-o", str(dst), "--scale", "2", "--weights", str(weights)], capsys)
    assert rc == 0, err
    assert one_line(err) == "liif: note: a .webm file cannot hold libx264 video: encoding with libvpx-vp9"
    got = read(dst)
    assert (got["codec"], got["size"], len(got["rgb"])) == ("vp9", (96, 64), 3)
    assert entries(tmp_path) == ["in.mkv", "out.webm"]


@pytest.mark.parametrize("codec,suffix,message", [
    ("png", ".mkv", "a .mkv file cannot hold png video (matroska does not take it): choose another --codec or "
                    "output suffix"),
    ("libx264", ".webm", "a .webm file cannot hold libx264 video (webm does not take it)"),
])
def test_encoder_the_container_does_not_take_is_refused(tiny, tmp_path, capsys, codec, suffix, message):
    _, weights = tiny
    src = tmp_path / "in.mkv"
    make_clip(src, n=2, audio=False)
    rc, _, err = cli(["upscale", str(src), "-o", str(tmp_path / f"o{suffix}"), "--codec", codec, "--scale", "2",
                      "--weights", str(weights)], capsys)
    assert rc == 1 and message in one_line(err), err
    assert entries(tmp_path) == ["in.mkv"]
    with pytest.raises(LiifError, match="cannot hold"):  # the API too
        tiny[0].upscale_video(src, tmp_path / f"o{suffix}", scale=2, codec=codec)


def test_no_default_encoder_for_ogg_is_one_line(tiny, tmp_path, capsys):
    """.ogv: FFmpeg's ogg muxer lists no codecs and refuses H.264 and VP9 only when writing the header
    ('cannot start encoding ... Invalid argument' used to blame libx264)."""
    _, weights = tiny
    src = tmp_path / "in.mkv"
    make_clip(src, n=2, audio=False)
    rc, _, err = cli(["upscale", str(src), "-o", str(tmp_path / "o.ogv"), "--scale", "2", "--weights", str(weights)],
                     capsys)
    assert rc == 1 and one_line(err) == ("liif: error: no default video encoder for .ogv (ogg takes none of libx264, "
                                         "libvpx-vp9): give --codec")
    assert entries(tmp_path) == ["in.mkv"]


@pytest.mark.parametrize("where,message", [
    ("folder", "cannot write {dst}: it is a folder"),
    ("under-a-file", "cannot write {dst}: {parent} is not a folder"),
    ("proc", "cannot write {dst}: "),
])
def test_unwritable_destination_is_refused_before_rendering(tiny, tmp_path, capsys, monkeypatch, where, message):
    _, weights = tiny
    src = tmp_path / "in.mkv"
    make_clip(src, n=2, audio=False)
    if where == "folder":
        dst = tmp_path / "dir.mp4"
        dst.mkdir()
    elif where == "under-a-file":
        dst = tmp_path / "in.mkv" / "x.mp4"
    else:
        dst = Path("/proc/x.mp4")
    rendered = []
    monkeypatch.setattr(video.FrameUpscaler, "__call__", lambda self, frame: rendered.append(1))
    rc, _, err = cli(["upscale", str(src), "-o", str(dst), "--scale", "2", "--weights", str(weights)], capsys)
    assert rc == 1 and one_line(err).startswith("liif: error: " + message.format(dst=dst, parent=dst.parent)), err
    assert rendered == []
    assert entries(tmp_path) == ["dir.mp4", "in.mkv"] if where == "folder" else ["in.mkv"]
    if where == "folder":
        assert entries(dst) == []


def test_failed_rename_leaves_no_temp_file(tiny, tmp_path, monkeypatch):
    """The destination becomes a folder while the video renders: the rename fails in one line and the
    rendered temp file is removed (it used to stay, a hidden .tmp with the whole video)."""
    up, _ = tiny
    src, dst = tmp_path / "in.mkv", tmp_path / "out.mp4"
    make_clip(src, n=3, audio=False)
    real = video.FrameUpscaler.__call__

    def render(self, frame):
        dst.mkdir(exist_ok=True)
        return real(self, frame)

    monkeypatch.setattr(video.FrameUpscaler, "__call__", render)
    with pytest.raises(LiifError, match=f"^cannot write {dst}: Is a directory$"):
        up.upscale_video(src, dst, scale=2)
    assert entries(tmp_path) == ["in.mkv", "out.mp4"] and entries(dst) == []


def flat(self, frame: np.ndarray) -> np.ndarray:
    """A stand-in render of the output size (FrameUpscaler.size): these tests count frames."""
    return np.zeros((*self.size, 3), frame.dtype)


def decodable(path: Path) -> int:
    """Frames FFmpeg decodes from ``path`` before it stops (the reference count)."""
    n = 0
    with av.open(str(path)) as c:
        try:
            for _ in c.decode(video=0):
                n += 1
        except av.FFmpegError:
            pass
    return n


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> dict[str, Path]:
    """A 30-frame Matroska clip (1.00 s) cut at 2/5 of its bytes, and one with 2,000 bytes zeroed at 3/10."""
    d = tmp_path_factory.mktemp("damaged")
    full = d / "full.mkv"
    make_clip(full, n=30)
    data = full.read_bytes()
    cut, zeroed = d / "cut.mkv", d / "zeroed.mkv"
    cut.write_bytes(data[:len(data) * 2 // 5])
    at = len(data) * 3 // 10
    zeroed.write_bytes(data[:at] + bytes(2000) + data[at + 2000:])
    return {"cut": cut, "zeroed": zeroed}


@pytest.mark.parametrize("kind", ["cut", "zeroed"])
def test_truncated_or_damaged_matroska_is_refused_unless_allow_partial(tiny, damaged, tmp_path, capsys, monkeypatch,
                                                                       kind):
    _, weights = tiny
    monkeypatch.setattr(video.FrameUpscaler, "__call__", flat)
    src, dst = damaged[kind], tmp_path / "out.mkv"
    n = decodable(src)
    assert 5 < n < 20  # well short of the 30 frames (1.00 s) the file's duration promises
    args = ["upscale", str(src), "-o", str(dst), "--scale", "1.5", "--weights", str(weights)]
    rc, _, err = cli(args, capsys)
    line = one_line(err)
    assert rc == 1 and line.startswith(f"liif: error: {src} ends after {n} of ~30 frames (") and \
        line.endswith(f" of 1.00 s; truncated or corrupt?); no output written (--allow-partial / allow_partial=True "
                      f"writes the {n} frames decoded)"), err
    assert entries(tmp_path) == []
    rc, out, err = cli([*args, "--allow-partial"], capsys)
    assert rc == 0 and out.strip() == f"{src} -> {dst} (72x48, {n} frames)", err
    assert one_line(err).startswith(f"liif: note: {src} ends after {n} of ~30 frames (") and \
        err.strip().endswith(f"the output has the {n} frames decoded (--allow-partial)")
    assert len(read(dst)["rgb"]) == n and entries(tmp_path) == ["out.mkv"]


def test_allow_partial_in_the_api(tiny, damaged, tmp_path, monkeypatch):
    up, _ = tiny
    monkeypatch.setattr(video.FrameUpscaler, "__call__", flat)
    n = decodable(damaged["cut"])
    with pytest.raises(LiifError, match=f"ends after {n} of ~30 frames"):
        up.upscale_video(damaged["cut"], tmp_path / "a.mkv", scale=1.5)
    notes = []
    rep = up.upscale_video(damaged["cut"], tmp_path / "b.mkv", scale=1.5, allow_partial=True, note=notes.append)
    assert (rep.frames_written, rep.frames_total, rep.estimated) == (n, 30, True)
    assert len(notes) == 1 and f"ends after {n} of ~30 frames" in notes[0]
    assert entries(tmp_path) == ["b.mkv"]


def test_a_stream_copy_cut_mp4_with_an_edit_list_is_whole(tiny, tmp_path, capsys, monkeypatch):
    # ``ffmpeg -ss T -c copy`` keeps the frames back to the previous keyframe before an edit list's
    # start: MP4 counts them in its frame count, the demuxer marks them discarded, nothing shows them
    _, weights = tiny
    monkeypatch.setattr(video.FrameUpscaler, "__call__", flat)
    full, src, dst = tmp_path / "full.mp4", tmp_path / "cut.mp4", tmp_path / "out.mp4"
    make_clip(full, n=30, audio=False)
    with av.open(str(full)) as i, av.open(str(src), "w") as o:
        s = i.streams.video[0]
        t = o.add_stream_from_template(s)
        shift = int(10 * s.time_base.denominator / s.time_base.numerator / s.average_rate)  # 10 frames earlier
        for pk in i.demux(s):
            if pk.dts is not None:
                pk.pts, pk.dts, pk.stream = pk.pts - shift, pk.dts - shift, t
                o.mux(pk)
    with av.open(str(src)) as c:
        assert c.streams.video[0].frames == 30
    n = decodable(src)
    assert n == 20
    rc, out, err = cli(["upscale", str(src), "-o", str(dst), "--scale", "1.5", "--weights", str(weights)], capsys)
    assert rc == 0 and out.strip() == f"{src} -> {dst} (72x48, 20 frames)", err
    assert len(read(dst)["rgb"]) == 20
    from liif.video.length import Decoded, Expected, shortfall
    assert shortfall(Path("v.mp4"), Expected(frames=30, declared=True), Decoded(19, discarded=10)) == \
        "v.mp4 ends after 19 of the 20 frames it declares, 10 more cut by its edit list (truncated or corrupt?)"


def test_an_avi_with_a_variable_frame_rate_is_whole(tiny, tmp_path, capsys, monkeypatch):
    # AVI stores a gap in the timestamps as empty entries (repeat the frame before): its frame count
    # (11) counts them, the decoder shows the 4 real frames, which reach the end of the stream (0.44 s)
    _, weights = tiny
    monkeypatch.setattr(video.FrameUpscaler, "__call__", flat)
    src, dst = tmp_path / "vfr.avi", tmp_path / "out.mkv"
    with av.open(str(src), "w") as o:
        v = o.add_stream("mpeg4", rate=25)
        v.width, v.height, v.pix_fmt = 48, 32, "yuv420p"
        for i, pts in enumerate([0, 1, 2, 10]):
            f = av.VideoFrame.from_ndarray(np.full((32, 48, 3), 60 * i, np.uint8), format="rgb24")
            f.pts = pts
            for pk in v.encode(f):
                o.mux(pk)
        for pk in v.encode():
            o.mux(pk)
    with av.open(str(src)) as c:
        assert c.streams.video[0].frames == 11
    assert decodable(src) == 4
    rc, out, err = cli(["upscale", str(src), "-o", str(dst), "--scale", "1.5", "--weights", str(weights)], capsys)
    assert rc == 0 and out.strip() == f"{src} -> {dst} (72x48, 4 frames)", err
    from liif.video.length import Decoded, Expected, shortfall
    declared = Expected(frames=11, declared=True, seconds=0.44, period=0.04)
    assert shortfall(Path("v.avi"), declared, Decoded(4, 0.44)) is None
    assert shortfall(Path("v.avi"), declared, Decoded(4, 0.2)) == \
        "v.avi ends after 4 of the 11 frames it declares (truncated or corrupt?)"


def test_allow_partial_is_for_videos_only(tmp_path, capsys):
    png = tmp_path / "x.png"
    png.write_bytes(b"")
    rc, _, err = cli(["upscale", str(png), "-o", str(tmp_path / "o.png"), "--scale", "2", "--allow-partial"], capsys)
    assert rc == 1 and one_line(err) == "liif: error: --allow-partial applies to video inputs only"


@pytest.mark.parametrize("frames,end,short", [
    (60, 2.0, False),
    (59, 1.97, False),  # within two frame periods
    (30, 2.0, False),  # variable frame rate: half the estimated count, the whole duration
    (22, 0.73, True),
    (55, 1.83, True),  # 5 frames missing at the end
])
def test_shortfall_compares_the_time_covered_with_the_duration(frames, end, short):
    from liif.video.length import Decoded, Expected, shortfall

    got = Decoded(frames, end)
    exp = Expected(frames=60, declared=False, seconds=2.0, period=1 / 30)
    said = shortfall(Path("v.mkv"), exp, got)
    assert (said is not None) == short
    if short:
        assert said == (f"v.mkv ends after {got.frames} of ~60 frames ({got.end:.2f} of 2.00 s; "
                        "truncated or corrupt?)")
    declared = Expected(frames=60, declared=True)
    assert shortfall(Path("v.mp4"), declared, Decoded(59)) == \
        "v.mp4 ends after 59 of the 60 frames it declares (truncated or corrupt?)"
    assert shortfall(Path("v.mp4"), declared, Decoded(61)) is None


def test_sigterm_says_how_far_and_leaves_no_output(tiny, tmp_path, capsys, monkeypatch):
    _, weights = tiny
    src, dst = tmp_path / "in.mkv", tmp_path / "out.mkv"
    make_clip(src)
    dst.write_bytes(b"old")
    real = video.FrameUpscaler.__call__
    calls = []

    def render(self, frame):
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # liif's handler unwinds the job from here
        return real(self, frame)

    monkeypatch.setattr(video.FrameUpscaler, "__call__", render)
    rc, _, err = cli(["upscale", str(src), "-o", str(dst), "--scale", "1.5", "--weights", str(weights)], capsys)
    assert rc == 143 and one_line(err) == "liif: terminated after 4 of ~12 frames; no output written"
    assert dst.read_bytes() == b"old" and entries(tmp_path) == ["in.mkv", "out.mkv"]
