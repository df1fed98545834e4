"""Video jobs refused before any work: encoders the output container does not take and
destinations that cannot be written. Each is one line, a non-zero exit and no file (temp files
included)."""
from __future__ import annotations

from pathlib import Path

import pytest

av = pytest.importorskip("av", reason="PyAV (liif[video]) is not installed")

import test_video  # noqa: E402
from test_video import cli, make_clip, read  # noqa: E402

from liif import video  # noqa: E402
from liif.errors import LiifError  # noqa: E402

tiny = test_video.tiny  # the fixture: a small random LIIF


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


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
