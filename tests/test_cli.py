"""The ``lungfuse`` command line: help everywhere, JSON keys, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lungfuse.app.cli import build_parser, main

SUBCOMMANDS = ["info", "inspect", "claims", "demo", "analyze", "calibrate", "train", "train-detector", "train-fpr",
               "evaluate"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lungfuse.app.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_help_on_every_subcommand(sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([sub, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: lungfuse " + sub in out


def test_info_json(tmp_path: Path) -> None:
    out = tmp_path / "info.json"
    assert main(["info", "--json", str(out)]) == 0
    info = json.loads(out.read_text())
    for key in ("python", "torch", "monai", "pydicom", "transformers", "PySide6-Essentials"):
        assert key in info["versions"]
    assert info["versions"]["torch"].startswith("2.13.0")
    assert info["device"] in ("cpu", "cuda")
    assert "NOT FOR DIAGNOSTIC USE" in info["notice"]


@pytest.mark.lidc
def test_inspect_json_keys(lidc_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    res = run("inspect", str(lidc_root / "LIDC-IDRI-0001"), "--json", str(out))
    assert res.returncode == 0, res.stderr
    d = json.loads(out.read_text())
    assert d["n_slices"] == 133
    assert d["shape"] == [133, 512, 512]
    assert d["spacing_mm"] == pytest.approx([2.5, 0.703125, 0.703125], abs=1e-4)
    assert isinstance(d["warnings"], list)
    lo, hi = d["hu_range"]
    assert lo <= -1000 and hi > 1000
    assert "LIDC-IDRI-0001" in res.stdout


def test_inspect_error_is_one_clean_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = run("inspect", str(tmp_path / "empty"))
    assert res.returncode == 2
    assert "empty folder" in res.stderr
    assert "Traceback" not in res.stderr


def test_analyze_demo_case_json(tmp_path: Path) -> None:
    """`make run`'s main job: lungfuse analyze on the demo case, with its report beside the series."""
    demo = tmp_path / "demo"
    assert main(["demo", "--out", str(demo)]) == 0
    out = tmp_path / "result.json"
    p = run("analyze", str(demo), "--json", str(out), "--no-explain", "--quiet", "--profile")
    assert p.returncode == 0, p.stderr
    assert "status:" in p.stdout and "NOT FOR DIAGNOSTIC USE" in p.stdout
    d = json.loads(out.read_text())
    assert d["report_present"]
    truth = json.loads((demo / "truth.json").read_text())
    assert d["claims"]["nodules"], "the demo report's nodules were not parsed"
    assert len(truth["nodules"]) >= 1


def test_analyze_bad_path_is_one_line_error(tmp_path: Path) -> None:
    p = run("analyze", str(tmp_path / "nowhere"))
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "nowhere" in p.stderr
