"""The batch case audit (issue 24): ``lungfuse audit INPUT --out DIR``.

Research software, NOT for diagnostic use.  Layer: above ``export`` (no Qt, never the lab).

* :mod:`.inputs` - the cases (folder of case folders or manifest CSV), the cheap input fingerprint;
* :mod:`.ledger` - ``DIR/ledger.sqlite`` (WAL), one row per case, written by the coordinator only;
* :mod:`.worker` - one case: analyse, export, save, thumbnail (local pool worker process);
* :mod:`.dask_backend` - the same on a Dask ``distributed`` cluster;
* :mod:`.runner` - the coordinator: plan, run, publish, resume after a kill;
* :mod:`.summary` - the audit priority, ``summary.csv`` and the self-contained ``summary.html``.

Output layout of ``DIR``: ``ledger.sqlite``, ``summary.csv``, ``summary.html``, ``audit.log``,
``cases/<case_id>/`` (``result.json`` + ``result.npz``, the exports, ``thumb.png``).
"""

from lungfuse.pipelines.audit.inputs import AuditCase, ManifestError, discover_cases
from lungfuse.pipelines.audit.runner import AuditConfig, AuditError, AuditRun, available_formats, run_audit

__all__ = ["AuditCase", "AuditConfig", "AuditError", "AuditRun", "ManifestError", "available_formats",
           "discover_cases", "run_audit"]
