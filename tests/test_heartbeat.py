"""`experiments.heartbeat.Heartbeat`: a quiet stretch of a command gets a progress line (stdout) naming its last
output; a command that keeps talking gets none; the streams are restored."""

from __future__ import annotations

import sys
import time

import pytest

from experiments.heartbeat import Heartbeat


def test_a_quiet_stretch_gets_lines_naming_the_last_output(capsys: pytest.CaptureFixture) -> None:
    with Heartbeat(after_s=0.3, poll_s=0.05) as beat:
        print("fitting 2 folds")
        time.sleep(1.0)
    captured = capsys.readouterr()
    lines = [ln for ln in captured.out.splitlines() if "since:" in ln]
    assert "since:" not in captured.err  # stderr keeps the one-line errors
    assert 1 <= len(lines) == beat.beats <= 4
    assert all(ln.strip().startswith("…") and ln.endswith("since: fitting 2 folds") for ln in lines)


def test_stderr_restarts_the_clock_but_is_never_quoted(capsys: pytest.CaptureFixture) -> None:
    with Heartbeat(after_s=0.3, poll_s=0.05):
        print("fitting 2 folds")
        print("libllama: quant size = 256 MiB", file=sys.stderr)  # a library's line, maybe silenced at the fd
        time.sleep(0.8)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "since:" in ln]
    assert lines and all(ln.endswith("since: fitting 2 folds") for ln in lines)


def test_no_line_while_output_keeps_coming_and_streams_are_restored(capsys: pytest.CaptureFixture) -> None:
    out, err = sys.stdout, sys.stderr
    with Heartbeat(after_s=0.4, poll_s=0.05) as beat:
        for i in range(10):
            print(f"epoch {i}", file=sys.stderr)
            time.sleep(0.1)
    assert beat.beats == 0 and "since:" not in capsys.readouterr().out
    assert sys.stdout is out and sys.stderr is err


def test_zero_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMREC_HEARTBEAT_S", "0")
    out = sys.stdout
    with Heartbeat() as beat:
        assert sys.stdout is out  # nothing tapped
    assert beat.after_s == 0
