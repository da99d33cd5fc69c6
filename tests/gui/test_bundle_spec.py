"""The desktop bundle's PyInstaller spec names every resource the app reads (no PyInstaller needed).

Research software, NOT for diagnostic use.  The list each check wants is derived from the code
and the installed files, not copied from the spec: the weights' manifest and what
``list_weights`` finds, the calibration and config file names the loaders open, the package data
of pyproject.toml (CaseResult schema, demo), and the text encoder's folder from ``model_path``.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "packaging" / "lungfuse.spec"


def _spec_lists() -> dict[str, object]:
    tree = ast.parse(SPEC.read_text())
    out: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.isupper():
                try:
                    out[name] = ast.literal_eval(node.value)
                except ValueError:  # REPO, SRC: paths computed at build time
                    continue
    return out


@pytest.fixture(scope="module")
def spec() -> dict[str, object]:
    return _spec_lists()


def test_spec_names_every_weight_and_config_the_loaders_open(spec: dict[str, object]) -> None:
    import json

    from lungfuse.pipelines.core.resources import list_weights, models_dir
    from lungfuse.pipelines.inference import calibration, detector, fpr

    named = set(spec["RESOURCES"])  # type: ignore[arg-type]
    manifest = json.loads((models_dir() / "manifest.json").read_text())["files"]
    wanted = {"models/manifest.json"} | {f"models/{n}" for n in manifest} | {f"models/{w.name}" for w in list_weights()}
    wanted |= {f"models/{n}" for n in (detector.CONFIG_NAME, fpr.CONFIG_NAME, calibration.CALIBRATION_NAME,
                                       calibration.RULES_NAME, "fusion.json", "fusion.pt")}
    assert wanted - named == set(), f"the spec misses {sorted(wanted - named)}"
    for rel in named:
        assert (REPO / "resources" / rel).is_file(), f"the spec names {rel}, which does not exist"


def test_spec_carries_the_package_data_of_pyproject(spec: dict[str, object]) -> None:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {pkg: Path(d) for pkg, d in cfg["package-dir"].items()}
    named_res = set(spec["RESOURCES"])  # type: ignore[arg-type]
    named_pkg = {rel for rels in spec["PACKAGE_DATA"].values() for rel in rels}  # type: ignore[attr-defined]
    for pkg, patterns in cfg["package-data"].items():
        top = next(p for p in sorted(dirs, key=len, reverse=True) if pkg == p or pkg.startswith(p + "."))
        folder = dirs[top].joinpath(*pkg[len(top) + 1:].split(".")) if pkg != top else dirs[top]
        for pat in patterns:
            for f in (REPO / folder).glob(pat):
                rel = f.relative_to(REPO)
                if rel.parts[0] == "resources":
                    assert str(Path(*rel.parts[1:])) in named_res, f"the spec misses {rel}"
                else:
                    assert str(rel) in named_pkg, f"the spec misses {rel}"
    from lungfuse.pipelines.analysis.result import schema

    assert schema()  # the one the spec carries, pipelines/analysis/case_result.schema.json, reads
    assert "pipelines/analysis/case_result.schema.json" in named_pkg


def test_spec_carries_the_text_encoder_files(spec: dict[str, object]) -> None:
    from lungfuse.models.text import model_path

    root = model_path()
    wanted = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
              and p.name not in ("README.md", ".gitattributes")}  # documentation, never read
    named = set(spec["MINILM_FILES"])  # type: ignore[arg-type]
    assert wanted - named == set(), f"the spec misses text encoder files {sorted(wanted - named)}"
    assert {"model.safetensors", "tokenizer.json", "vocab.txt", "config.json"} <= named


def test_spec_starts_the_gui_and_make_package_pins_pyinstaller() -> None:
    text = SPEC.read_text()
    assert '"launch_gui.py"' in text and (REPO / "packaging" / "launch_gui.py").is_file()
    assert (REPO / "packaging" / "requirements.txt").read_text().count("pyinstaller==6.22.3") == 1
    assert "pyinstaller" not in (REPO / "requirements.txt").read_text().lower()  # CI does not install it
    make = (REPO / "Makefile").read_text()
    assert "package:" in make and "packaging/requirements.txt" in make and "packaging/lungfuse.spec" in make


def test_spec_hidden_imports_hold_every_module_the_app_imports_by_name(tmp_path: Path) -> None:
    """The export writers are imported by name (``export.api._writers``): the module graph cannot see
    them, so the spec lists the package's modules itself.  Its ``_own_modules`` runs here on a
    symlink tree like the one it builds."""
    import inspect

    from lungfuse.pipelines.export import api

    tree = ast.parse(SPEC.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_own_modules")
    src = tmp_path / "src"
    (src / "lungfuse").mkdir(parents=True)
    for name in ("app", "models", "pipelines", "resources"):
        (src / "lungfuse" / name).symlink_to(REPO / name, target_is_directory=True)
    scope: dict[str, object] = {"SRC": src, "Path": Path}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(SPEC), "exec"), scope)  # noqa: S102
    mods = set(scope["_own_modules"]())  # type: ignore[operator]
    by_name = [m for m in ("pdf", "seg", "sr", "sc") if f'"{m}"' in inspect.getsource(api._writers)]
    assert by_name, "export.api._writers no longer names its writers: update this test"
    for m in by_name:
        assert f"lungfuse.pipelines.export.{m}" in mods
    assert {"lungfuse.app.gui.main_window", "lungfuse.app.cli.main", "lungfuse.models.text"} <= mods
    assert not any(m.startswith("lungfuse.pipelines.lab") for m in mods)  # the product never ships the lab


def test_spec_carries_the_data_of_packages_without_a_pyinstaller_hook(spec: dict[str, object]) -> None:
    """A library the exports or the GUI import that reads its own data files (highdicom's DICOM
    standard tables: the frozen SR export failed without them) and has no PyInstaller hook to
    collect them must be named in THIRD_PARTY_DATA."""
    import importlib.util
    import re
    import sys

    code = "".join(p.read_text() for d in ("pipelines/export", "app/gui") for p in (REPO / d).glob("*.py"))
    imported = set(re.findall(r"^\s*(?:import|from)\s+([a-zA-Z_]\w*)", code, re.M)) - {"lungfuse", "__future__"}
    hook_dirs = []
    for mod in ("PyInstaller.hooks", "_pyinstaller_hooks_contrib.stdhooks"):
        try:
            s = importlib.util.find_spec(mod)
        except ModuleNotFoundError:  # a dotted name whose parent package is absent raises, not None
            s = None
        if s is not None and s.submodule_search_locations:
            hook_dirs += [Path(p) for p in s.submodule_search_locations]
    if not hook_dirs:
        pytest.skip("PyInstaller is not installed (packaging/requirements.txt, make package): its hooks are unknown")
    code_suffixes = {".py", ".pyc", ".pyi", ".so", ".pyd", ".typed", ".c", ".h", ".pxd", ".pyx"}
    needed = set()
    for name in sorted(imported):
        if name in sys.stdlib_module_names:
            continue
        s = importlib.util.find_spec(name)
        if s is None or not s.submodule_search_locations:
            continue  # not installed, or a single module (no data folder)
        root = Path(next(iter(s.submodule_search_locations)))
        has_data = any(p.is_file() and p.suffix not in code_suffixes for p in root.rglob("*"))
        hooked = any(list(h.glob(f"hook-{name}.py")) + list(h.glob(f"hook-{name}.*.py")) for h in hook_dirs)
        if has_data and not hooked:
            needed.add(name)
    assert "highdicom" in needed or "highdicom" not in imported
    assert needed <= set(spec["THIRD_PARTY_DATA"]), sorted(needed - set(spec["THIRD_PARTY_DATA"]))  # type: ignore[arg-type]
