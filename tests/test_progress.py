"""Plain progress lines when stderr is not a terminal (logs, CI): driven by a fake clock, never real time."""
import io
import re

import pytest
from PIL import Image

from conftest import GOLDEN
from liif import progress
from liif.api import Upscaler
from liif.cli import main

COMIC = GOLDEN / "set14_comic_in.png"  # 40x32
LINE = re.compile(r"upscale set14_comic_in\.png: (\d+)% \((\d+) of 160 rows, (\d+) s\)")


class FakeClock:
    def __init__(self, step: float = 0.0) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        now = self.t
        self.t += self.step  # step > 0: every reading is `step` seconds after the previous one
        return now


def test_a_line_at_each_10_percent_or_5_seconds_whichever_is_rarer():
    clock, out = FakeClock(), io.StringIO()
    report = progress.ProgressLines("upscale a.png", "rows", stream=out, now=clock)
    for t, done in [(2, 3), (4, 6),  # 10%, 20%: under 5 s since the start
                    (8, 9),  # 30% at 8 s: a line
                    (9, 12),  # 40%, 1 s after the last line: none
                    (14, 15),  # 50%, 6 s after: a line
                    (30, 16),  # 53%: long after, but not 10% more: none
                    (31, 30)]:  # 100%
        clock.t = t
        report(done, 30)
    assert out.getvalue().splitlines() == ["upscale a.png: 30% (9 of 30 rows, 8 s)",
                                           "upscale a.png: 50% (15 of 30 rows, 14 s)",
                                           "upscale a.png: 100% (30 of 30 rows, 31 s)"]


def test_a_quick_render_prints_nothing():
    clock, out = FakeClock(), io.StringIO()
    report = progress.ProgressLines("upscale a.png", "rows", stream=out, now=clock)
    for done in range(1, 31):
        clock.t = done * 0.1  # 3 s in all
        report(done, 30)
    report(0, 0)  # nothing to count: no line, no division by zero
    assert out.getvalue() == ""


def test_upscale_to_png_reports_rows_as_tiles_finish(official, tmp_path):
    model, spec = official
    up = Upscaler(model, spec, precision="fp32", max_memory=30 << 20)  # several bands and stripes
    calls = []
    w, h = up.upscale_to_png(Image.open(COMIC), tmp_path / "o.png", size=(160, 200),
                             progress=lambda done, total: calls.append((done, total)))
    assert (w, h) == (200, 160) and Image.open(tmp_path / "o.png").size == (200, 160)
    assert len(calls) > 3 and calls[-1] == (160, 160) and {t for _, t in calls} == {160}
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def cli_upscale(tmp_path, capsys, weights_arg, *flags):
    rc = main(["upscale", str(COMIC), "-o", str(tmp_path / "o.png"), "--size", "200x160", "--max-memory", "30M",
               *flags, *weights_arg])
    out, err = capsys.readouterr()
    assert rc == 0 and out.strip() == f"{COMIC} -> {tmp_path / 'o.png'} (200x160)"
    return err


def test_cli_prints_progress_lines_when_stderr_is_not_a_terminal(tmp_path, capsys, weights_arg, monkeypatch):
    monkeypatch.setattr(progress, "clock", FakeClock(step=10.0))  # each reading 10 s later: every 10% prints
    err = cli_upscale(tmp_path, capsys, weights_arg)  # capsys: stderr is not a terminal
    lines = err.splitlines()
    assert len(lines) >= 3 and all(LINE.fullmatch(line) for line in lines), err
    percents = [int(LINE.fullmatch(line)[1]) for line in lines]
    assert percents == sorted(percents) and percents[-1] == 100 and lines[-1].startswith(
        "upscale set14_comic_in.png: 100% (160 of 160 rows, ")
    assert len({p // 10 for p in percents}) == len(percents)  # at most one line per 10%


@pytest.mark.parametrize("flag", ["--no-progress", "--progress"])
def test_cli_explicit_progress_flags_print_no_lines(tmp_path, capsys, weights_arg, monkeypatch, flag):
    monkeypatch.setattr(progress, "clock", FakeClock(step=10.0))
    err = cli_upscale(tmp_path, capsys, weights_arg, flag)
    assert not any(LINE.fullmatch(line) for line in err.splitlines()), err
