"""The demo's timeline: plain lines when not on a terminal, a status line that fits one when it is."""

from __future__ import annotations

import io
import os
import re

import pytest

from remediator.demo import SCENARIOS, Timeline


def test_plain_lines_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    timeline = Timeline(tty=False)
    timeline.status("waiting for the alert")  # no live line off a terminal
    timeline.line("baseline: 20.0 req/s")
    timeline.origin = 0.0
    timeline.line("alert firing: HighErrorRate")
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = out.splitlines()
    assert lines[0] == "[      ] baseline: 20.0 req/s"
    assert re.fullmatch(r"\[ *\+\d+\.\ds\] alert firing: HighErrorRate", lines[1])


def test_status_line_is_cut_to_the_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback=(100, 20): os.terminal_size((40, 20)))
    buffer = io.StringIO()
    monkeypatch.setattr("sys.stdout", buffer)
    timeline = Timeline(tty=True)
    timeline.status("incident 12: verifying recovery on demo-app-a-00002-abc and more words than fit")
    drawn = buffer.getvalue().split("\r")[-1]
    assert len(drawn) <= 39
    timeline.line("verified")
    assert buffer.getvalue().rstrip().endswith(drawn.rstrip())  # the status line is redrawn after a step


def test_every_documented_scenario_exists_with_its_expectation() -> None:
    assert {name: s.expected_action for name, s in SCENARIOS.items()} == {
        "bad-deploy": "ROLLBACK",
        "canary": "ROLLBACK",
        "latency-deploy": "ROLLBACK",
        "traffic-spike": "SCALE_UP",
        "dependency-outage": "INVESTIGATE",
        "startup-blip": "NONE",
    }
