"""Fusion training smoke test (tiny synthetic data, fixed seeds), weights I/O, shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lungfuse.pipelines.core.errors import ModelIntegrityError
from lungfuse.pipelines.core.resources import list_weights, models_dir
from lungfuse.pipelines.inference.fusion import load_fusion
from lungfuse.pipelines.lab.fusion_train import (
    ExampleSet,
    TrainConfig,
    binary_metrics,
    calibrate,
    decision_threshold,
    predict,
    save_fusion,
    train_fusion,
)
from lungfuse.pipelines.nlp.text_features import CLAIM_FEATURES


def tiny_examples(n_nod: int = 12, seed: int = 0) -> ExampleSet:
    rng = np.random.default_rng(seed)
    label_nod = rng.integers(0, 2, n_nod)
    crops = rng.random((n_nod, 2, 32, 32, 32)).astype(np.float16) * 0.1
    crops[label_nod == 1, :, 12:20, 12:20, 12:20] = 0.8  # malignant ones carry a bright blob
    nodule = np.repeat(np.arange(n_nod), 2)
    n = len(nodule)
    claims = np.zeros((n, len(CLAIM_FEATURES)), np.float32)
    claims[:, 1] = label_nod[nodule] * 0.8
    return ExampleSet(
        nodule=nodule.astype(np.int32), label=label_nod[nodule].astype(np.int8),
        sentence=rng.normal(size=(n, 384)).astype(np.float16), claims=claims, present=rng.random(n) > 0.2,
        env_report=np.tile([0.9, 100, 0, 0, 0], (n, 1)).astype(np.float32),
        structured=rng.random((n, 9)).astype(np.float32), crops=crops,
        crop_env=np.tile([15.0, 1.25], (n_nod, 2, 1)).astype(np.float32), variant_names=("aug0", "thick5"),
        texts=[""] * n,
    )


@pytest.mark.slow
def test_two_step_training_is_reproducible(tmp_path: Path) -> None:
    ex = tiny_examples()
    cfg = TrainConfig(epochs=1, batch_size=8, max_steps=2, threads=1, seed=3)
    m1 = train_fusion(cfg, ex, tmp_path / "a")
    m2 = train_fusion(cfg, ex, tmp_path / "b")
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert (tmp_path / "a" / "fusion_ckpt.pt").exists()
    # Resuming a finished run does not train further and gives the same weights.
    m3 = train_fusion(cfg, ex, tmp_path / "a")
    for (k, a), (_, b) in zip(m1.state_dict().items(), m3.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    logits = predict(m1, ex, np.arange(len(ex.label)))
    assert set(logits) == {"image_only", "text_only", "concat", "afa", "afa_eaf"}
    assert all(np.isfinite(v).all() and v.shape == (len(ex.label),) for v in logits.values())
    # val calibration: a temperature and a decision threshold on the grid for every variant
    cal = calibrate(m1, ex)
    assert set(cal) == set(logits)
    assert all(c["temperature"] > 0 and 0.05 <= c["decision_threshold"] <= 0.95 for c in cal.values())


def test_nodule_log_diameter_is_the_mean_over_readers() -> None:
    ex = tiny_examples(n_nod=3)
    ex.structured[:, -1] = [4.0, 6.0, 10.0, 10.0, 0.2, 0.4]  # two readers per nodule (mm)
    assert np.allclose(ex.nodule_log_diameter, np.log([5.0, 10.0, 1.0]))  # < 1 mm floors at 1 mm


@pytest.mark.slow
@pytest.mark.parametrize("size_weight", [0.0, 0.5])
def test_size_loss_trains_the_size_head_only_when_weighted(tmp_path: Path, size_weight: float) -> None:
    """``TrainConfig.size_weight`` wires the ln(diameter) loss into training: with 0 the size head
    gets no gradient (only AdamW's decay, ~1e-7), with 0.5 its first Adam steps move it (~1e-4)."""
    from lungfuse.pipelines.lab.fusion_train import new_model

    ex = tiny_examples()
    ex.structured[:, -1] = np.where(ex.label == 1, 20.0, 5.0)
    cfg = TrainConfig(epochs=1, batch_size=8, max_steps=2, threads=1, seed=5, size_weight=size_weight)
    torch.manual_seed(cfg.seed)
    init = new_model(ex.claims.shape[1]).size_head.weight.detach().clone()
    moved = float((train_fusion(cfg, ex, tmp_path).size_head.weight.detach() - init).abs().max())
    assert (moved < 1e-6) if size_weight == 0 else (moved > 1e-5), moved


def test_nodule_attributes_are_the_scaled_median_ratings() -> None:
    from lungfuse.pipelines.lab.lidc import RATING_NAMES

    ex = tiny_examples(n_nod=2)
    ex.nodule[:] = [0, 0, 0, 1]  # three readers of nodule 0, one of nodule 1
    ex.structured[:, :8] = 1.0
    t = RATING_NAMES.index("texture")  # 1..5
    c = RATING_NAMES.index("calcification")  # 1..6
    ex.structured[:, t] = [1.0, 5.0, 4.0, 3.0]
    ex.structured[:, c] = [6.0, 6.0, 1.0, 6.0]
    a = ex.nodule_attributes
    assert a.shape == (2, len(RATING_NAMES)) and a.dtype == np.float32
    assert a[0, t] == pytest.approx(0.75) and a[1, t] == pytest.approx(0.5)  # median 4 of 1..5, then 3
    assert a[0, c] == pytest.approx(1.0) and a[1, c] == pytest.approx(1.0)
    others = [i for i in range(len(RATING_NAMES)) if i not in (t, c)]
    assert np.all(a[:, others] == 0.0)  # rating 1 is the bottom of every scale


@pytest.mark.slow
@pytest.mark.parametrize("attr_weight", [0.0, 2.0])
def test_attribute_head_exists_and_trains_only_when_weighted(tmp_path: Path, attr_weight: float) -> None:
    from lungfuse.models.fusion import FusionModelConfig
    from lungfuse.pipelines.lab.fusion_train import new_model

    ex = tiny_examples()
    cfg = TrainConfig(epochs=1, batch_size=8, max_steps=2, threads=1, seed=5, attr_weight=attr_weight)
    m = train_fusion(cfg, ex, tmp_path)
    if attr_weight == 0:
        assert m.attr_head is None and m.config.n_attributes == 0
        return
    torch.manual_seed(cfg.seed)
    init = new_model(ex.claims.shape[1], n_attributes=8).attr_head.weight.detach().clone()
    assert float((m.attr_head.weight.detach() - init).abs().max()) > 1e-5
    # the head's size is part of the saved config; weights saved before it existed load without one
    d = m.config.to_dict()
    assert FusionModelConfig.from_dict(d).n_attributes == 8
    d.pop("n_attributes")
    assert FusionModelConfig.from_dict(d).n_attributes == 0
    with pytest.raises(ValueError, match="n_attributes"):
        FusionModelConfig(n_attributes=-1)


@pytest.mark.slow
def test_save_and_load_verify_hashes(tmp_path: Path) -> None:
    ex = tiny_examples()
    m = train_fusion(TrainConfig(epochs=1, batch_size=8, max_steps=1, threads=1), ex, tmp_path / "w")
    calib = {k: {"temperature": 1.0} for k in ("image_only", "text_only", "concat", "afa", "afa_eaf")}
    save_fusion(m, calib, tmp_path / "out")
    loaded, meta = load_fusion(tmp_path / "out")
    x = predict(m, ex, np.arange(4))["afa_eaf"]
    y = predict(loaded, ex, np.arange(4))["afa_eaf"]
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    (tmp_path / "out" / "fusion.json").write_text(json.dumps(meta) + " ")
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        load_fusion(tmp_path / "out")


def test_binary_metrics_known_values() -> None:
    y = np.array([0, 0, 1, 1])
    m = binary_metrics(np.array([0.1, 0.6, 0.4, 0.9]), y)
    assert m["auc"] == pytest.approx(0.75)
    assert m["error_rate"] == pytest.approx(0.5)
    assert m["sensitivity"] == pytest.approx(0.5) and m["specificity"] == pytest.approx(0.5)
    # at 0.65 the benign 0.6 is called benign and the malignant 0.4 is still missed
    m = binary_metrics(np.array([0.1, 0.6, 0.4, 0.9]), y, threshold=0.65)
    assert m["error_rate"] == pytest.approx(0.25) and m["specificity"] == 1.0 and m["threshold"] == 0.65


def test_decision_threshold_minimises_errors_ties_to_half() -> None:
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.55, 0.6, 0.7, 0.9])
    t = decision_threshold(p, y)  # error-free for t in (0.6, 0.7]: the grid point nearest 0.5 is 0.61
    assert t == pytest.approx(0.61)
    assert binary_metrics(p, y, t)["error_rate"] == 0.0
    # separable anywhere in (0.2, 0.8]: the tie goes to 0.5
    assert decision_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == pytest.approx(0.5)


def test_shipped_weights_match_manifest() -> None:
    weights = list_weights()
    if not any(w.name == "fusion.pt" for w in weights):
        pytest.skip(f"no shipped fusion weights in {models_dir()} yet")
    assert all(w.verified for w in weights), [(w.name, w.sha256, w.expected_sha256) for w in weights]
    total = sum(w.bytes for w in weights)
    assert total <= 50 * 1024 * 1024
    model, meta = load_fusion(models_dir())
    assert meta["model"] == "lungfuse-fusion"


def test_make_batch_encodes_each_nodule_once() -> None:
    """Rows of the same nodule share one crop (``crop_index``), in evaluation and in shared-crop
    training; per-report training draws a crop per row."""
    from lungfuse.pipelines.lab.fusion_train import make_batch

    ex = tiny_examples(n_nod=5)
    idx = np.array([3, 0, 2, 1, 9, 8])  # nodules 1, 0, 1, 0, 4, 4
    b = make_batch(ex, idx, None, variant=1)
    assert b["crop"].shape == (3, 1, 32, 32, 32) and b["crop_index"].shape == (6,)
    for i, r in enumerate(idx):
        expect = ex.crops[ex.nodule[r], 1].astype(np.float32)
        assert np.array_equal(b["crop"][b["crop_index"][i], 0].numpy(), expect)
    shared = make_batch(ex, idx, np.random.default_rng(0), TrainConfig(p_noise_aug=1.0, share_crops=True))
    assert shared["crop"].shape[0] == 3
    # noise is drawn per crop, so both reports of a nodule see the same noisy crop
    assert torch.equal(shared["env_raw"][0, :2], shared["env_raw"][2, :2])
    per_row = make_batch(ex, idx, np.random.default_rng(0), TrainConfig(share_crops=False))
    assert per_row["crop"].shape[0] == 6 and per_row["crop_index"].tolist() == list(range(6))


def test_predict_with_shared_crops_matches_one_row_at_a_time() -> None:
    from lungfuse.pipelines.lab.fusion_train import new_model

    torch.manual_seed(0)
    ex = tiny_examples(n_nod=4)
    m = new_model(ex.claims.shape[1]).eval()
    rows = np.arange(len(ex.label))
    together = predict(m, ex, rows)
    alone = predict(m, ex, rows, batch=1)
    for k in together:
        np.testing.assert_allclose(together[k], alone[k], rtol=1e-4, atol=1e-5)


def test_predict_with_precomputed_encodings_matches() -> None:
    """predict(..., encoded=encode_nodules(...)) scores rows exactly as encoding their crops does,
    for any subset and order of rows and for another crop variant."""
    from lungfuse.pipelines.lab.fusion_train import encode_nodules, new_model

    torch.manual_seed(0)
    ex = tiny_examples(n_nod=5)
    m = new_model(ex.claims.shape[1]).eval()
    for variant in (0, 1):
        enc = encode_nodules(m, ex, variant, batch=2)
        assert enc.embedding.shape[0] == len(ex.crops)
        for rows in (np.arange(len(ex.label)), np.array([7, 2, 3, 9, 0])):
            direct = predict(m, ex, rows, variant, batch=4)
            reused = predict(m, ex, rows, variant, batch=4, encoded=enc)
            for k in direct:
                np.testing.assert_allclose(reused[k], direct[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_shared_crop_epoch_sees_every_labelled_report_once_in_whole_nodules(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from lungfuse.pipelines.lab import fusion_train

    ex = tiny_examples(n_nod=12)
    ex.label[ex.nodule == 5] = -1  # an indeterminate nodule never trains
    seen: list[np.ndarray] = []
    real = fusion_train.make_batch

    def spy(e, idx, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(np.asarray(idx).copy())
        return real(e, idx, *a, **k)

    monkeypatch.setattr(fusion_train, "make_batch", spy)
    train_fusion(TrainConfig(epochs=1, batch_size=8, threads=1, seed=1, share_crops=True), ex, tmp_path)
    assert len(seen) == 3  # 11 labelled nodules x 2 reports, 4 nodules (~8 reports) a step
    rows = np.concatenate(seen)
    assert sorted(rows.tolist()) == np.nonzero(ex.label >= 0)[0].tolist()
    for idx in seen:  # whole nodules: both reports of every nodule in the same step
        nods = ex.nodule[idx]
        assert all((ex.nodule[np.nonzero(ex.label >= 0)[0]] == n).sum() == (nods == n).sum() for n in nods)


def _synthetic_blocks(n: int = 5) -> list:
    from lungfuse.pipelines.lab.training_data import InsertedNodule

    rng = np.random.default_rng(1)
    out = []
    for k in range(n):
        block = rng.normal(-800.0, 30.0, (26, 52, 52)).astype(np.float32)
        block[10:16, 22:30, 22:30] = 40.0  # a solid blob
        out.append(InsertedNodule(f"n{k}", "bg", block, (2.5, 0.7, 0.7), (13.0, 26.0, 26.0), (50.0, 100.0, 100.0),
                                  "right", "RUL", 20.0, 2.5))
    return out


@pytest.mark.parametrize("split", ["train", "val"])
def test_crop_variants_do_not_depend_on_the_worker_count(split: str) -> None:
    """Crops are rendered in threads; the random draws are made serially first, so the crops, their
    environment and the generator's state afterwards (the reports draw from it next) are the same
    for 1 or 3 workers, and the same as one serial crops_for per nodule and variant."""
    from lungfuse.pipelines.imaging.crops import normalize_hu
    from lungfuse.pipelines.lab.fusion_train import _crop_variants
    from lungfuse.pipelines.lab.training_data import crops_for

    blocks = _synthetic_blocks()
    runs = []
    for workers in (1, 3):
        rng = np.random.default_rng(7)
        crops, env, names = _crop_variants(blocks, split, rng, n_aug=2, workers=workers)
        runs.append((crops, env, names, rng.random()))
    assert runs[0][2] == runs[1][2]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert runs[0][3] == runs[1][3]
    if split == "train":  # the serial reference: crops_for drawing from the generator as it goes
        rng = np.random.default_rng(7)
        for m, ins in enumerate(blocks):
            c, nz, th = crops_for(ins, rng, 2)
            np.testing.assert_array_equal(runs[0][0][m, :2], normalize_hu(c).astype(np.float16))
            c, nz, th = crops_for(ins, rng, 1, thickness_mm=5.0)
            np.testing.assert_array_equal(runs[0][0][m, 2], normalize_hu(c[0]).astype(np.float16))
            assert tuple(runs[0][1][m, 2]) == (nz, th) == (20.0, 5.0)
        assert rng.random() == runs[0][3]
        assert len({float(np.abs(runs[0][0][m, 0].astype(np.float32) - runs[0][0][m, 1]).sum()) for m in range(5)}) > 1
