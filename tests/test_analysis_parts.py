"""Building blocks of case analysis on synthetic inputs: measurement, matching and the
discordance rules, the consistency calibration, word occlusion, the FP classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lungfuse.pipelines.analysis.consistency import (
    FindingView,
    match_claims,
    pair_discordances,
)
from lungfuse.pipelines.imaging.measure import measure_nodule
from lungfuse.pipelines.inference.calibration import ConsistencyCalibration
from lungfuse.pipelines.inference.explain import patch_around, word_occlusion
from lungfuse.pipelines.lab.calibrate import fit_consistency
from lungfuse.pipelines.nlp.claims import NoduleClaim


def _phantom(radius_mm: float, hu: float = 40.0, sp: float = 1.5, shape: int = 48) -> tuple[np.ndarray, np.ndarray]:
    vol = np.full((shape,) * 3, -850.0, np.float32)
    c = np.array([shape / 2] * 3)
    zz, yy, xx = np.ogrid[:shape, :shape, :shape]
    d = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) * sp
    vol[d <= radius_mm] = hu
    return vol, c


@pytest.mark.parametrize("diam", [6.0, 12.0, 20.0])
def test_measure_sphere(diam: float) -> None:
    vol, c = _phantom(diam / 2)
    m = measure_nodule(vol, c, diameter_hint_mm=diam)
    assert m.source == "segmentation"
    assert abs(m.long_axis_mm - diam) <= 1.5 + 0.1 * diam
    true_v = 4 / 3 * np.pi * (diam / 2) ** 3
    assert 0.6 * true_v < m.volume_mm3 < 1.5 * true_v
    assert m.texture == "solid" and not m.calcified
    np.testing.assert_allclose(m.centroid_zyx, c, atol=1.0)
    assert all(lo <= x < hi for lo, x, hi in zip(m.bbox_lo, c, m.bbox_hi, strict=True))


def test_measure_texture_and_calcification() -> None:
    ggo, c = _phantom(6.0, hu=-450.0)
    assert measure_nodule(ggo, c, 12.0).texture == "ground-glass"
    calc, c = _phantom(6.0, hu=600.0)
    m = measure_nodule(calc, c, 12.0)
    assert m.calcified and m.calcified_fraction > 0.9


def test_measure_falls_back_when_nothing_is_there() -> None:
    vol = np.full((40, 40, 40), -850.0, np.float32)
    m = measure_nodule(vol, (20, 20, 20), 8.0)
    assert m.source == "detector" and m.texture == "unknown" and m.long_axis_mm == 8.0
    # its box spans the 8 mm estimate (5.3 voxels at 1.5 mm), not a single voxel
    assert m.bbox_lo == (17, 17, 17) and m.bbox_hi == (24, 24, 24)
    edge = measure_nodule(vol, (0, 39, 20), 8.0)  # clipped to the grid
    assert edge.bbox_lo == (0, 36, 17) and edge.bbox_hi == (4, 40, 24)


def test_measure_clips_a_vessel() -> None:
    vol, c = _phantom(5.0)
    vol[:, 23:26, 23:26] = 40.0  # a long vessel through the nodule
    m = measure_nodule(vol, c, 10.0)
    assert m.long_axis_mm < 25.0  # clipped near the detector's size estimate, not the whole vessel


def test_measure_big_nodule_does_not_follow_a_vessel_to_the_clip() -> None:
    """A 24 mm nodule with a 4.5 mm vessel through it: the 3 mm opening for big nodules detaches the
    vessel, so the size is the nodule's and does not grow with the detector's size estimate."""
    vol, c = _phantom(12.0, shape=64)
    vol[31:34, 31:34, :] = 40.0  # along x, in the axial plane the long axis is measured in
    sizes = [measure_nodule(vol, c, hint).long_axis_mm for hint in (24.0, 30.0)]
    assert all(abs(d - 24.0) <= 5.0 for d in sizes) and sizes[0] == sizes[1], sizes  # 1-voxel opening: 38, 46 mm


def test_measure_lung_mask_keeps_out_the_chest_wall() -> None:
    """A 16 mm nodule abutting a soft-tissue wall: unrestricted, the region grows into the wall up
    to the clip ball; with the lung mask it is the nodule; a centre outside the mask is unaffected."""
    vol, c = _phantom(8.0)
    wall_x = int(c[2] + 8.0 / 1.5)  # the wall starts where the sphere ends (x)
    vol[:, :, wall_x:] = 40.0
    lung = np.zeros(vol.shape, bool)
    lung[:, :, :wall_x] = True
    plain = measure_nodule(vol, c, 16.0)
    masked = measure_nodule(vol, c, 16.0, lung_mask=lung)
    assert plain.long_axis_mm > 20.0  # leaked along the wall
    sphere = 4 / 3 * np.pi * 8.0**3
    assert abs(masked.long_axis_mm - 16.0) <= 3.0 and 0.8 * sphere < masked.volume_mm3 < 1.2 * sphere
    assert plain.volume_mm3 > 1.4 * sphere
    out = np.zeros(vol.shape, bool)
    out[:2] = True  # the centre is not in this mask: ignored
    assert measure_nodule(vol, c, 16.0, lung_mask=out).long_axis_mm == plain.long_axis_mm
    with pytest.raises(ValueError, match="shape"):
        measure_nodule(vol, c, 16.0, lung_mask=lung[:-1])


def _claim(**kw: object) -> NoduleClaim:
    return NoduleClaim(**kw)  # type: ignore[arg-type]


def test_match_claims_by_side_and_size() -> None:
    findings = [FindingView("left", "LUL", 30.0, "solid", 0.0, 0.8), FindingView("right", "RLL", 8.0, "solid", 0.0, 0.5)]
    claims = [_claim(size_mm=8.0, side="right", lobe="RLL"), _claim(size_mm=31.0, side="left")]
    assert match_claims(claims, findings) == [1, 0]
    assert match_claims([], findings) == []
    assert match_claims(claims, []) == [None, None]


def test_discordance_rules() -> None:
    f = FindingView("left", "LUL", 30.0, "solid", 0.0, 0.8)
    assert pair_discordances(_claim(size_mm=31.0, side="left", texture="solid"), f) == []
    reasons = pair_discordances(_claim(size_mm=31.0, side="right"), f)
    assert len(reasons) == 1 and "right lung" in reasons[0] and "left lung" in reasons[0]
    assert "lobe" in pair_discordances(_claim(side="left", lobe="LLL"), f)[0]
    # size: both 3 mm and 30 % must be exceeded
    assert pair_discordances(_claim(size_mm=26.0), f) == []  # 4 mm but 15 %
    assert "size" in pair_discordances(_claim(size_mm=15.0), f)[0]
    small = FindingView("left", None, 8.0, "solid", 0.0, 0.8)
    assert pair_discordances(_claim(size_mm=6.0), small) == []  # 33 % but 2 mm
    assert "texture" in pair_discordances(_claim(texture="ground-glass"), f)[0]
    assert pair_discordances(_claim(texture="part-solid"), f) == []
    assert "calcification" in pair_discordances(_claim(calcification=True), f)[0]
    calc = FindingView("left", None, 8.0, "solid", 0.5, 0.8)
    assert "calcification" in pair_discordances(_claim(calcification=False), calc)[0]


def test_every_discordance_sentence_has_its_code() -> None:
    from lungfuse.pipelines.analysis.codes import ReasonCode
    from lungfuse.pipelines.analysis.wording import (
        discordance_code,
        low_consistency_sentence,
        low_score_sentence,
        no_match_sentence,
    )

    f = FindingView("left", "LUL", 30.0, "solid", 0.0, 0.8)
    calc = FindingView("left", None, 8.0, "solid", 0.5, 0.8)
    cases = [
        (pair_discordances(_claim(side="right"), f), ReasonCode.SIDE),
        (pair_discordances(_claim(side="left", lobe="LLL"), f), ReasonCode.LOBE),
        (pair_discordances(_claim(size_mm=15.0), f), ReasonCode.SIZE),
        (pair_discordances(_claim(texture="ground-glass"), f), ReasonCode.TEXTURE),
        (pair_discordances(_claim(calcification=True), f), ReasonCode.CALCIFICATION),
        (pair_discordances(_claim(calcification=False), calc), ReasonCode.CALCIFICATION),
        ([no_match_sentence(_claim(size_mm=5.0, lobe="RUL", side="right"))], ReasonCode.CLAIM_NOT_FOUND),
        ([low_consistency_sentence(0.12, 0.3)], ReasonCode.LOW_CONSISTENCY),
        ([low_score_sentence(0.02, 0.05)], ReasonCode.LOW_DETECTION_SCORE),
    ]
    for sentences, code in cases:
        assert len(sentences) == 1 and discordance_code(sentences[0]) == code, sentences
    # the sentences a reader sees are the ones written before reasons had codes
    assert no_match_sentence(_claim(size_mm=5.0, lobe="RUL", side="right")) == \
        "no image finding matches the claimed 5 mm nodule in the right upper lobe"
    assert low_consistency_sentence(0.12, 0.3) == "image and report features disagree (consistency 0.12 < threshold 0.30)"
    with pytest.raises(ValueError, match="no reason code"):
        discordance_code("the moon is full")


def test_consistency_calibration_fit_and_validate() -> None:
    rng = np.random.default_rng(0)
    t, f = rng.normal(0.4, 0.1, 500), rng.normal(0.1, 0.1, 500)
    cal = fit_consistency(t, f, false_alarm=0.05)
    assert cal.fitted and cal.val_auc > 0.9 and cal.slope > 0
    assert np.mean(cal.score(t) < cal.threshold) == pytest.approx(0.05, abs=0.01)
    assert cal.mismatch_caught > 0.5
    assert cal.score(0.5) > cal.score(0.0)
    with pytest.raises(ValueError, match="threshold"):
        ConsistencyCalibration(threshold=1.5)


def test_word_occlusion_spans_and_sign() -> None:
    text = "A spiculated solid mass."

    def score(texts: list[str]) -> np.ndarray:
        return np.array([1.0 if "spiculated" in t else 0.0 for t in texts])

    ws = word_occlusion(text, score, offset=10)
    by = {w.word: w for w in ws}
    assert by["spiculated"].score == 1.0 and by["solid"].score == 0.0
    assert (by["mass"].start, by["mass"].end) == (10 + text.index("mass"), 10 + text.index("mass") + 4)


def test_patch_around_pads_with_air() -> None:
    g = np.ones((10, 10, 10), np.float32)
    p, start = patch_around(g, (0, 0, 0), size=8)
    assert p.shape == (8, 8, 8) and tuple(start) == (-4, -4, -4)
    assert p[0, 0, 0] == 0.0 and p[4, 4, 4] == 1.0


def test_fpr_train_smoke(tmp_path) -> None:  # noqa: ANN001
    from lungfuse.pipelines.inference.fpr import (
        DEFAULT_VIEWS,
        TTA_VIEWS,
        FPRClassifier,
        classify,
        load_fpr,
        rescore,
    )
    from lungfuse.pipelines.lab.fpr_train import FPRConfig, FPRExamples, train_fpr

    rng = np.random.default_rng(0)
    vol = rng.random((40, 40, 40)).astype(np.float16)
    ex = FPRExamples([vol], [0] * 8, rng.uniform(10, 30, (8, 3)), [0, 1] * 4)
    pt = train_fpr(ex, FPRConfig(steps=2, batch_size=4), tmp_path, log=lambda m: None)
    model = load_fpr(pt)
    p = classify(model, rng.random((40, 40, 40)).astype(np.float32), [(20, 20, 20), (5, 5, 5)])
    assert p.shape == (2,) and np.all((p > 0) & (p < 1))
    # test-time views (TTA_VIEWS): the mean over the crop and its in-plane mirror images.  A 32^3
    # grid is exactly the crop at (16, 16, 16), so its mirror images are the crop's.
    g = rng.random((32, 32, 32)).astype(np.float32)
    one = lambda grid: classify(model, np.ascontiguousarray(grid), [(16, 16, 16)], views=((),))[0]  # noqa: E731
    views = [one(g), one(g[:, :, ::-1]), one(g[:, ::-1]), one(g[:, ::-1, ::-1])]
    assert classify(model, g, [(16, 16, 16)], views=TTA_VIEWS)[0] == pytest.approx(float(np.mean(views)), abs=1e-6)
    assert len({round(float(v), 6) for v in views}) > 1  # the views do differ
    # default: the views fpr.json names; a new classifier ships with the crop alone
    assert isinstance(model, FPRClassifier) and not model.network.training
    assert model.test_time_views == DEFAULT_VIEWS == ((),)
    assert classify(model, g, [(16, 16, 16)])[0] == views[0]
    # views named in fpr.json travel with the weights into classify and rescore
    meta = json.loads((tmp_path / "fpr.json").read_text())
    meta["test_time_views"] = [[], [2]]
    (tmp_path / "fpr.json").write_text(json.dumps(meta))
    two = load_fpr(pt)
    assert two.test_time_views == ((), (2,))
    assert classify(two, g, [(16, 16, 16)])[0] == pytest.approx((views[0] + views[1]) / 2, abs=1e-6)
    (q,) = rescore(two, g, [(16, 16, 16, 0.25, 8.0)])
    assert q[3] == pytest.approx(np.sqrt(0.25 * (views[0] + views[1]) / 2), abs=1e-6)
    # a classifier whose fpr.json predates the key runs on the crop alone
    del meta["test_time_views"]
    (tmp_path / "fpr.json").write_text(json.dumps(meta))
    assert load_fpr(pt).test_time_views == ((),)
    with pytest.raises(ValueError, match="at least one view"):
        classify(model, g, [(16, 16, 16)], views=())
    # validated at construction, whatever fpr.json says
    for bad in ([], [[3]], [[2, 2]]):
        with pytest.raises(ValueError, match="view"):
            FPRClassifier(model.network, bad)
    ex.save(tmp_path / "ex.npz")
    back = FPRExamples.load(tmp_path / "ex.npz")
    np.testing.assert_array_equal(back.centres, ex.centres)
    with pytest.raises(ValueError, match="vol_index"):
        FPRExamples([vol], [1], [(1, 2, 3)], [0])


def test_fpr_crop_without_augmentation_is_what_inference_sees() -> None:
    from lungfuse.pipelines.inference.explain import patch_around
    from lungfuse.pipelines.inference.fpr import FPR_PATCH
    from lungfuse.pipelines.lab.fpr_train import FPRExamples, sample_crop

    rng = np.random.default_rng(1)
    vol = rng.random((50, 45, 48)).astype(np.float16)
    ex = FPRExamples([vol], [0, 0], [(25, 22, 24), (3, 40, 2)], [1, 0])
    for i in range(2):
        np.testing.assert_array_equal(sample_crop(ex, i, None), patch_around(vol, ex.centres[i], FPR_PATCH)[0])
    aug = sample_crop(ex, 0, rng)
    assert aug.shape == (FPR_PATCH,) * 3 and aug.min() >= 0.0 and aug.max() <= 1.0


def test_lobe_rule_respects_the_estimate_uncertainty() -> None:
    near_fissure = FindingView("right", "RUL", 20.0, "solid", 0.0, 0.9, plausible_lobes=("RLL", "RML", "RUL"))
    assert pair_discordances(_claim(side="right", lobe="RLL"), near_fissure) == []
    apex = FindingView("right", "RUL", 20.0, "solid", 0.0, 0.9, plausible_lobes=("RUL",))
    assert "lobe" in pair_discordances(_claim(side="right", lobe="RLL"), apex)[0]


def test_fpr_prefetch_gives_the_same_weights(tmp_path) -> None:  # noqa: ANN001
    """The next batch is drawn in a background thread from the same generator in the same order,
    so a seeded run's weights are bit-identical with and without prefetching."""
    import torch

    from lungfuse.pipelines.lab.fpr_train import FPRConfig, FPRExamples, train_fpr

    rng = np.random.default_rng(0)
    vol = rng.random((40, 40, 40)).astype(np.float16)
    ex = FPRExamples([vol], [0] * 8, rng.uniform(10, 30, (8, 3)), [0, 1] * 4)
    w = {}
    for pf in (False, True):
        pt = train_fpr(ex, FPRConfig(steps=3, batch_size=4, prefetch=pf), tmp_path / str(pf), log=lambda m: None)
        w[pf] = torch.load(pt, weights_only=True)
    assert all(torch.equal(w[False][k], w[True][k]) for k in w[False])
    assert any(not torch.equal(w[True][k], v) for k, v in torch.load(
        train_fpr(ex, FPRConfig(steps=3, batch_size=4, seed=1), tmp_path / "s1", log=lambda m: None),
        weights_only=True).items())  # a different seed does change them
