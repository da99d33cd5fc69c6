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


# -- the error policy (in process): a LungFuseError is one line naming the file, exit 2; a bug is one
# -- line plus the path of a log holding its traceback, exit 1


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "Traceback" not in err and "internal error" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_bad_dicom_folder_is_exit_2_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "not_a_series"
    bad.mkdir()
    (bad / "slice1.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"garbage" * 50)
    assert main(["inspect", str(bad)]) == 2
    _one_line_error(capsys, str(bad), "no DICOM image data")


def test_missing_report_is_exit_2_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing_report.txt"
    assert main(["claims", str(missing)]) == 2
    _one_line_error(capsys, str(missing), "not found")


def test_unreadable_report_is_a_report_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lungfuse.pipelines.core.errors import ReportError
    from lungfuse.pipelines.io.report import load_report

    bad = tmp_path / "report.dcm"  # a DICOM SR by its name, but not one
    bad.write_bytes(b"\x00" * 128 + b"DICM" + bytes(range(256)) * 4)
    with pytest.raises(ReportError) as exc:
        load_report(bad)
    assert exc.value.path == bad and str(bad) in str(exc.value)
    assert main(["claims", str(bad)]) == 2
    _one_line_error(capsys, str(bad))


def _tiny_nifti(path: Path) -> Path:
    import nibabel as nib
    import numpy as np

    hu = np.full((24, 48, 48), -1000, np.int16)
    hu[4:20, 8:40, 8:40] = 40  # a block of soft tissue in air
    nib.save(nib.Nifti1Image(hu, np.diag([1.5, 1.5, 2.0, 1.0])), str(path))
    return path


@pytest.mark.parametrize("damage", ["tampered", "missing"])
def test_damaged_weights_are_exit_2_naming_the_file(damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from lungfuse.pipelines.core.errors import ModelIntegrityError
    from lungfuse.pipelines.core.resources import models_dir, verify_manifest

    res = tmp_path / "resources"
    shutil.copytree(models_dir(), res / "models")
    weights = res / "models" / "detector.pt"
    if damage == "tampered":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit
        weights.write_bytes(bytes(data))
    else:
        weights.unlink()
    with pytest.raises(ModelIntegrityError) as exc:
        verify_manifest(weights)
    assert exc.value.path == weights
    monkeypatch.setenv("LUNGFUSE_RESOURCES", str(res))
    ct = _tiny_nifti(tmp_path / "ct.nii.gz")
    assert main(["analyze", str(ct), "--no-report", "--quiet", "--no-explain"]) == 2
    err = _one_line_error(capsys, str(weights))
    assert ("SHA-256 does not match" if damage == "tampered" else "weight file missing") in err


def test_configuration_error_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--backgrounds with --lidc-root is refused before anything is read or trained."""
    argv = ["train-detector", "--backgrounds", "0001", "--lidc-root", str(tmp_path), "--out", str(tmp_path / "w")]
    assert main(argv) == 2
    _one_line_error(capsys, "--backgrounds")
    assert not (tmp_path / "w").exists()


def test_a_bug_is_exit_1_with_a_log_of_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from lungfuse.app.cli import product

    def broken(args: object) -> int:
        raise RuntimeError("injected bug")

    monkeypatch.setattr(product, "cmd_inspect", broken)
    monkeypatch.setenv("LUNGFUSE_LOG_DIR", str(tmp_path / "logs"))
    assert main(["inspect", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "internal error" in err and "RuntimeError: injected bug" in err, err
    logs = list((tmp_path / "logs").iterdir())
    assert len(logs) == 1 and str(logs[0]) in err
    text = logs[0].read_text()
    assert "Traceback" in text and "in broken" in text and "RuntimeError: injected bug" in text


def test_a_value_error_bug_is_not_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A plain ValueError is a bug (exit 1), not a one-line input error (exit 2)."""
    from lungfuse.app.cli import product

    def broken(args: object) -> int:
        raise ValueError("a programming error")

    monkeypatch.setattr(product, "cmd_inspect", broken)
    monkeypatch.setenv("LUNGFUSE_LOG_DIR", str(tmp_path / "logs"))
    assert main(["inspect", str(tmp_path)]) == 1
    assert "internal error" in capsys.readouterr().err


def test_model_files_that_do_not_load_are_model_integrity_errors(tmp_path: Path) -> None:
    """What the manifest cannot see: a missing config, weights that do not decode or do not fit."""
    import json
    import shutil

    from lungfuse.pipelines.core.errors import ModelIntegrityError
    from lungfuse.pipelines.core.resources import models_dir
    from lungfuse.pipelines.inference.detector import load_detector
    from lungfuse.pipelines.inference.fpr import load_fpr

    m = tmp_path / "models"
    shutil.copytree(models_dir(), m)
    assert load_detector(m / "detector.pt") is not None  # the copy itself loads
    (m / "detector.pt").write_bytes(b"not a torch archive")
    with pytest.raises(ModelIntegrityError, match="unreadable weight file") as exc:
        load_detector(m / "detector.pt")
    assert exc.value.path == m / "detector.pt"
    shutil.copy(m / "fpr.pt", m / "detector.pt")  # a real state dict, of another network
    with pytest.raises(ModelIntegrityError, match="do not fit"):
        load_detector(m / "detector.pt")
    cfg = json.loads((m / "fpr.json").read_text())
    (m / "fpr.json").unlink()
    with pytest.raises(ModelIntegrityError, match="model config missing"):
        load_fpr(m / "fpr.pt")
    (m / "fpr.json").write_text(json.dumps(cfg)[:-5])
    with pytest.raises(ModelIntegrityError, match="unreadable model config"):
        load_fpr(m / "fpr.pt")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_nifti_is_exit_2_one_line(damage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ct = _tiny_nifti(tmp_path / "ct.nii")
    data = ct.read_bytes()
    ct.write_bytes(b"garbage" * 100 if damage == "garbage" else data[: len(data) // 2])
    assert main(["inspect", str(ct)]) == 2
    _one_line_error(capsys, str(ct), "NIfTI")


@pytest.mark.parametrize("kind", ["random", "pdf"])
def test_binary_report_is_exit_2_naming_the_file(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A report that is not text (issue 21, section 7) is an input error naming the file, not an empty report."""
    import random

    bad = tmp_path / "report.txt"
    bad.write_bytes(random.Random(5).randbytes(2048) if kind == "random" else b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(300))
    assert main(["claims", str(bad)]) == 2
    _one_line_error(capsys, str(bad), "is not text")
    ct = _tiny_nifti(tmp_path / "ct.nii.gz")
    assert main(["analyze", str(ct), "--report", str(bad), "--quiet", "--no-explain"]) == 2
    _one_line_error(capsys, str(bad), "is not text")
