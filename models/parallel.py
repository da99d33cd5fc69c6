"""Data parallelism over CPU threads for the convolutional trunks of the training loops.

On the 2-core CPUs this project trains on, one 3D-convolution forward + backward
on a whole batch with 2 intra-op threads is slower than the same work split into
two half batches run side by side, each on 1 thread (oneDNN's intra-op split of
small 3D convolutions leaves cores waiting). Measured 2026-11-30 on an AMD EPYC
with AVX2, forward + backward:

=======================  ==================  ======================
network, batch           1 batch, 2 threads  2 halves x 1 thread
=======================  ==================  ======================
fusion encoder, 64x32^3  4.38 s              3.47 s
FP classifier, 32x32^3   0.64 s              0.46 s
detector, 2x64^3         1.27 s              1.15 s
=======================  ==================  ======================

:class:`ThreadedTrunk` does that split for a network whose output for one sample
depends on that sample only (instance norm, no batch norm, no dropout: those
belong in the part of the model that runs on the whole batch). Its gradients
are those of the whole batch up to float rounding, and deterministic: each
chunk runs on one thread and the chunks' parameter gradients are summed in a
fixed order, so a seeded run (and a resumed one) reproduces bit for bit.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

__all__ = ["ThreadedTrunk", "trunk_workers"]


def trunk_workers(device: str, threads: int | None = None, split_batch: bool = True) -> int:
    """Chunks a :class:`ThreadedTrunk` should use: ``threads`` (default: torch's current intra-op
    thread count) on a CPU when ``split_batch``, else 1 (the whole batch on the intra-op threads;
    GPUs never split)."""
    if not split_batch or torch.device(device).type != "cpu":
        return 1
    return max(1, int(torch.get_num_threads() if threads is None else threads))


class ThreadedTrunk:
    """Run ``module`` on ``workers`` chunks of the batch in parallel threads (training and inference).

    Use::

        trunk = ThreadedTrunk(model.features, workers=2)
        y = trunk(x)            # (B, ...) output, a leaf that the rest of the model uses
        loss = head_and_loss(y)
        loss.backward()         # gradients of everything after the trunk, and of y
        trunk.backward()        # the trunk's parameter gradients, accumulated into .grad

    ``module`` must treat samples independently (no batch norm, no dropout inside, or the
    module in eval mode) and must not be used from another thread meanwhile. With
    ``workers == 1`` or a batch of one it is a plain call. With autograd disabled
    (``torch.no_grad``/``inference_mode``, which the workers enter too) the chunks run in
    parallel the same way and their outputs are concatenated: inference, e.g. a sliding
    window's batch of windows. Intra-op threads are set to 1 in each worker (each chunk
    then runs on its own core); the caller's setting is restored by :meth:`close`.
    """

    def __init__(self, module: nn.Module, workers: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.module = module
        self.workers = int(workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="trunk") if self.workers > 1 else None
        self._outs: list[torch.Tensor] = []
        self._y: torch.Tensor | None = None
        self._prev_threads: int | None = None

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        torch.set_num_threads(1)
        return self.module(x)

    def _infer(self, job: tuple[torch.Tensor, bool]) -> torch.Tensor:
        # grad mode and inference mode are thread-local: the worker enters the caller's
        x, inference = job
        torch.set_num_threads(1)
        with torch.inference_mode() if inference else torch.no_grad():
            return self.module(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._y, self._outs = None, []
        if self._pool is None or len(x) < 2:
            return self.module(x)
        if self._prev_threads is None:
            self._prev_threads = torch.get_num_threads()
        # The cheap rest of the step runs on the caller's thread; one intra-op thread there too
        # keeps the two workers' cores free while they run.
        torch.set_num_threads(1)
        chunks = x.tensor_split(min(self.workers, len(x)))
        if not torch.is_grad_enabled():  # inference: the chunks' outputs, nothing to back-propagate
            inference = torch.is_inference_mode_enabled()
            return torch.cat(list(self._pool.map(self._infer, [(c, inference) for c in chunks])))
        self._outs = list(self._pool.map(self._run, chunks))
        y = torch.cat([o.detach() for o in self._outs]).requires_grad_(True)
        self._y = y
        return y

    def _grads(self, job: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]) -> tuple[torch.Tensor | None, ...]:
        out, grad, params = job
        torch.set_num_threads(1)
        return torch.autograd.grad(out, params, grad_outputs=grad, allow_unused=True)

    def backward(self) -> None:
        """Back-propagate the gradient that reached the output of the last call into the trunk's
        parameters (summed over chunks in chunk order, added to any ``.grad`` already there).
        A no-op after a plain call, whose graph the caller's own ``backward`` already covered."""
        if self._y is None:
            return
        y, outs = self._y, self._outs
        self._y, self._outs = None, []
        if y.grad is None:  # the output did not reach the loss
            return
        grads = y.grad.split([len(o) for o in outs])
        assert self._pool is not None
        params = [p for p in self.module.parameters() if p.requires_grad]
        per_chunk = list(self._pool.map(self._grads, [(o, g, params) for o, g in zip(outs, grads, strict=True)]))
        for i, p in enumerate(params):
            parts = [t for g in per_chunk if (t := g[i]) is not None]
            if not parts:
                continue
            total = parts[0]
            for g in parts[1:]:
                total = total + g
            p.grad = total if p.grad is None else p.grad + total

    def close(self) -> None:
        """Stop the worker threads and restore the caller's intra-op thread count."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._prev_threads is not None:
            torch.set_num_threads(self._prev_threads)
            self._prev_threads = None

    def __enter__(self) -> ThreadedTrunk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
