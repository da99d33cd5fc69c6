"""The architecture's promises that a fresh process can check: the product loads without the lab.

The import contracts themselves (``.importlinter``) run in ``make lint``; these tests check what the
contracts cannot see: what a real run of the product pulls into ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Run in a fresh interpreter: the test process itself has imported the lab through other tests.
# sklearn and pylidc are blocked (an import of them raises ImportError), which proves the product
# runs without them. Blocking is needed because MONAI imports sklearn on its own whenever it is
# installed (``optional_import`` in ``monai.metrics``), as it is in the dev environment.
_PROBE = r"""
import json, sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("sklearn", "pylidc"):
            raise ImportError("blocked: " + name)
        return None
sys.meta_path.insert(0, _Block())
import lungfuse.pipelines.analysis
import lungfuse.pipelines.analysis.analyze as analyze
{load}
mods = sorted(m for m in sys.modules if m.startswith("lungfuse.pipelines.lab") or m.split(".")[0] in
              ("sklearn", "pylidc", "sqlalchemy", "PySide6"))
print(json.dumps(mods))
"""


def _modules_after(load: str) -> list[str]:
    code = _PROBE.format(load=load)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_importing_the_analysis_pulls_in_no_lab_module() -> None:
    assert _modules_after("") == []


@pytest.mark.slow
def test_loading_the_shipped_models_needs_no_lab_module_and_no_sklearn() -> None:
    assert _modules_after("from lungfuse.pipelines.inference.registry import ModelRegistry\nModelRegistry().get()") == []


def test_the_probe_can_fail() -> None:
    """The probe sees a lab import when there is one (so the two tests above can fail)."""
    assert "lungfuse.pipelines.lab.lidc" in _modules_after("import lungfuse.pipelines.lab.lidc")
