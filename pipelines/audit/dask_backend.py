"""The batch audit on an existing Dask ``distributed`` cluster (``lungfuse audit --dask tcp://HOST:8786``).

Research software, NOT for diagnostic use.

Each Dask worker loads the models once (:class:`ModelsPlugin`, a ``WorkerPlugin``) and runs
:func:`dask_run_job` per case.  The scheduler re-queues the cases of a worker that dies
(``distributed.scheduler.allowed-failures`` times, then ``KilledWorker``: the coordinator records
``worker_died``).  Workers write a case's files into the audit folder's staging area, so the
audit folder must be visible to them at the same path (a shared file system, or a LocalCluster);
only the coordinator writes the ledger.  Start the workers with ``--nthreads 1``: one case at a
time per worker, the analysis itself uses ``--threads`` torch threads.
"""

from __future__ import annotations

from typing import Any

from distributed import WorkerPlugin, get_worker

from lungfuse.pipelines.audit.worker import Job, run_job

__all__ = ["ModelsPlugin", "dask_run_job"]


class ModelsPlugin(WorkerPlugin):
    """One :class:`~lungfuse.pipelines.inference.registry.ModelRegistry` per Dask worker, its models
    loaded when the worker starts (or when the plugin is registered), kept as ``worker.lungfuse_registry``."""

    name = "lungfuse-models"

    def __init__(self, threads: int, device: str, models_dir: str | None = None) -> None:
        self.threads, self.device, self.models_dir = threads, device, models_dir

    def setup(self, worker: Any) -> None:
        import torch

        from lungfuse.pipelines.analysis.analyze import resolve_device
        from lungfuse.pipelines.inference.registry import ModelRegistry

        torch.set_num_threads(self.threads)
        reg = ModelRegistry()
        reg.get(self.models_dir, resolve_device(self.device))
        worker.lungfuse_registry = reg

    def teardown(self, worker: Any) -> None:
        worker.lungfuse_registry = None


def dask_run_job(job: Job) -> dict[str, Any]:
    """:func:`~.worker.run_job` on the current Dask worker with the registry its plugin loaded; the
    outcome as a plain dict."""
    w = get_worker()
    reg = getattr(w, "lungfuse_registry", None)
    if reg is None:  # a worker that joined before the plugin was registered: load here, once
        from lungfuse.pipelines.inference.registry import ModelRegistry

        reg = ModelRegistry()
        w.lungfuse_registry = reg  # type: ignore[attr-defined]  # our attribute on the distributed Worker
    return run_job(job, reg).to_dict()
