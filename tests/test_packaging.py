"""The built wheel carries what an installed LungFuse needs: weights + manifest, demo shapes, the CaseResult
schema; and an installed copy finds its weights through importlib.resources (no repository around it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lungfuse.pipelines.core import resources

REPO = Path(__file__).resolve().parents[1]


def test_lungfuse_resources_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUNGFUSE_RESOURCES", str(tmp_path))
    assert resources.resources_dir() == tmp_path
    assert resources.models_dir() == tmp_path / "models"


def test_source_checkout_finds_the_repository_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LUNGFUSE_RESOURCES", raising=False)
    assert resources.resources_dir().resolve() == (REPO / "resources").resolve()
    # an editable install made before lungfuse.resources existed: the folder beside pipelines/
    monkeypatch.setattr(resources, "_package_dir", lambda package: None)
    assert resources.resources_dir().resolve() == (REPO / "resources").resolve()
    assert (resources.models_dir() / "manifest.json").is_file()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build --wheel --no-isolation`` of a copy of the source tree (no stale build/ reused)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".train")
    for name in ("app", "models", "pipelines", "resources"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (whl,) = out.glob("lungfuse-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_contains_weights_manifest_schema_and_demo_shapes(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    models = "lungfuse/resources/models/"
    manifest = json.loads((REPO / "resources" / "models" / "manifest.json").read_text())["files"]
    assert manifest, "the repository's manifest lists no weights"
    for name in [*manifest, "manifest.json"]:
        assert models + name in names, name
    assert {"detector.pt", "fpr.pt", "fusion.pt"} <= set(manifest)
    assert "lungfuse/resources/demo/nodule_shapes.npz" in names
    for name in ("lidc_demo.npz", "lidc_demo_truth.json", "README.md"):  # the LIDC-derived demo, its truth, licence
        assert f"lungfuse/resources/demo/{name}" in names, name
    # every JSON file of the analysis package (the CaseResult schema, case_result.schema.json) ships
    schemas = sorted(p.name for p in (REPO / "pipelines" / "analysis").glob("*.json"))
    for name in schemas:
        assert f"lungfuse/pipelines/analysis/{name}" in names, name
    if (REPO / "pipelines" / "analysis" / "case_result.schema.json").exists():
        assert "lungfuse/pipelines/analysis/case_result.schema.json" in names
    # the code of every product layer and the console script
    for pkg in ("core", "io", "nlp", "imaging", "inference", "analysis", "demo", "lab"):
        assert f"lungfuse/pipelines/{pkg}/__init__.py" in names, pkg
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "lungfuse = lungfuse.app.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


@pytest.mark.slow
def test_installed_wheel_finds_its_weights(wheel: Path, tmp_path: Path) -> None:
    """The wheel unpacked as site-packages (what ``pip install --no-deps`` lays out), imported with no site
    and no repository on the path: models_dir() is inside the install and the manifest verifies."""
    site = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import json, sys\n"
        "from lungfuse.pipelines.core import resources as r\n"
        "m = r.models_dir()\n"
        "names = list(json.loads((m / 'manifest.json').read_text())['files'])\n"
        "r.verify_manifest(*(m / n for n in names))\n"
        "print(json.dumps({'models': str(m), 'module': r.__file__, 'n': len(names),\n"
        "                  'package': str(r._package_dir(r.RESOURCES_PACKAGE)),\n"
        "                  'demo': (r.resources_dir() / 'demo' / 'nodule_shapes.npz').is_file()\n"
        "                  and (r.resources_dir() / 'demo' / 'lidc_demo.npz').is_file()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LUNGFUSE_RESOURCES", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    # -S: no site-packages, so neither the editable install nor the repository can be found
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert Path(got["module"]).is_relative_to(site)
    assert Path(got["models"]) == site / "lungfuse" / "resources" / "models"
    assert Path(got["package"]) == site / "lungfuse" / "resources"  # found by importlib.resources
    assert got["n"] >= 3 and got["demo"]


def test_the_lock_satisfies_the_declared_ranges() -> None:
    """requirements.txt (what `make` installs) pins a version inside every range pyproject.toml declares."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    assert len(declared) >= 20
    for req in declared:
        name = canonicalize_name(req.name)
        if name in pins:
            assert req.specifier.contains(pins[name]), f"{req} does not admit the pinned {name}=={pins[name]}"
    runtime = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert {"torch", "monai", "pydicom", "transformers", "highdicom", "numpy"} <= runtime
    assert not runtime & {"scikit-learn", "pylidc", "sqlalchemy", "pyside6-essentials", "pytest"}  # extras only
