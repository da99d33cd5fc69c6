"""ThreadedTrunk: batch chunks in parallel threads give the whole batch's gradients, deterministically."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn

from lungfuse.models.image import NoduleEncoder, NoduleEncoderConfig
from lungfuse.models.parallel import ThreadedTrunk, trunk_workers


def _encoder() -> NoduleEncoder:
    torch.manual_seed(0)
    return NoduleEncoder(NoduleEncoderConfig(channels=(4, 8, 8), strides=(2, 1), embed_dim=16, dropout=0.0,
                                             crop_size=(12, 12, 12)))


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def _step(model: NoduleEncoder, x: torch.Tensor, y: torch.Tensor, workers: int | None) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    if workers is None:
        out = model(x)
        F.binary_cross_entropy_with_logits(out.logit, y).backward()
        return _grads(model)
    with ThreadedTrunk(model.features, workers) as trunk:
        out = model.from_features(trunk(x))
        loss = F.binary_cross_entropy_with_logits(out.logit, y) + 0.1 * out.feature_map.square().mean()
        loss.backward()
        trunk.backward()
    return _grads(model)


@pytest.mark.parametrize("workers", [2, 3])
def test_chunked_gradients_equal_the_whole_batch(workers: int) -> None:
    model = _encoder()
    x = torch.rand(7, 1, 12, 12, 12)  # 7: chunks of unequal size
    y = (torch.arange(7) % 2).float()
    model.zero_grad(set_to_none=True)
    out = model(x)
    (F.binary_cross_entropy_with_logits(out.logit, y) + 0.1 * out.feature_map.square().mean()).backward()
    whole = _grads(model)
    split = _step(model, x, y, workers)
    assert len(split) == len(whole)
    for a, b in zip(split, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # every trunk parameter got a gradient, and a non-zero one
    assert all(float(g.abs().sum()) > 0 for g in split[: len(list(model.features.parameters()))])


def test_chunked_gradients_are_deterministic() -> None:
    model = _encoder()
    x, y = torch.rand(6, 1, 12, 12, 12), torch.tensor([0.0, 1, 0, 1, 1, 0])
    first = _step(model, x, y, 2)
    for _ in range(3):
        again = _step(model, x, y, 2)
        assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_whole_network_as_trunk_and_gradient_accumulation() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(Convolution(3, 1, 4, kernel_size=3, act="PRELU", norm="INSTANCE"),
                        ResidualUnit(3, 4, 2, strides=1, kernel_size=3, subunits=1, act="PRELU", norm="INSTANCE"))
    x = torch.rand(2, 1, 8, 8, 8)
    net.zero_grad(set_to_none=True)
    (net(x) ** 2).mean().backward()
    (net(x) ** 2).mean().backward()  # accumulated twice
    whole = _grads(net)
    net.zero_grad(set_to_none=True)
    with ThreadedTrunk(net, 2) as trunk:
        for _ in range(2):
            (trunk(x) ** 2).mean().backward()
            trunk.backward()
    for a, b in zip(_grads(net), whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_inference_in_chunks_equals_the_whole_batch(mode: str) -> None:
    model = _encoder().eval()
    x = torch.rand(5, 1, 12, 12, 12)
    ctx = torch.no_grad if mode == "no_grad" else torch.inference_mode
    with ctx():
        whole = model.features(x)
    before = torch.get_num_threads()
    with ThreadedTrunk(model.features, 2) as trunk, ctx():
        y = trunk(x)
        trunk.backward()  # nothing to back-propagate
    assert torch.get_num_threads() == before
    assert not y.requires_grad and y.is_inference() == (mode == "inference_mode")
    torch.testing.assert_close(y, whole, rtol=1e-5, atol=1e-6)


def test_plain_call_with_one_worker_and_threads_restored() -> None:
    model = _encoder()
    x = torch.rand(4, 1, 12, 12, 12)
    before = torch.get_num_threads()
    with ThreadedTrunk(model.features, 2) as trunk:
        y = trunk(x)
        assert y.is_leaf and y.requires_grad
        assert torch.get_num_threads() == 1  # the caller's cheap rest of the step: one thread
    assert torch.get_num_threads() == before
    one = ThreadedTrunk(model.features, 1)
    y = one(x)
    assert not y.is_leaf  # the module's own graph: the caller's backward reaches the parameters
    one.close()
    with pytest.raises(ValueError):
        ThreadedTrunk(model.features, 0)


def test_trunk_workers() -> None:
    assert trunk_workers("cpu", 2, True) == 2
    assert trunk_workers("cpu", 2, False) == 1
    assert trunk_workers("cpu", 0, True) == 1
    assert trunk_workers("cuda", 2, True) == 1
    assert trunk_workers("cpu") == torch.get_num_threads()
