"""Lesion insertion: appearance from visual ratings only, geometry and HU of the inserted nodule."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from lungfuse.pipelines.lab.insertion import (
    appearance_from_ratings,
    insert_into,
    render_patch,
    sample_location,
    texture_name,
    thicken_slices,
)
from lungfuse.pipelines.lab.lidc import NoduleRatings


def ratings(**kw: float) -> NoduleRatings:
    base = dict(texture=5, calcification=6, margin=4, spiculation=1, lobulation=1, sphericity=4,
                internalStructure=1, subtlety=5)
    base.update(kw)
    return NoduleRatings(**base)  # type: ignore[arg-type]


def sphere(r: float, n: int = 21) -> np.ndarray:
    z, y, x = np.indices((n, n, n)) - n // 2
    return (z**2 + y**2 + x**2) <= r**2


def test_appearance_never_sees_malignancy() -> None:
    assert "malignancy" not in inspect.signature(appearance_from_ratings).parameters
    assert "malignancy" not in NoduleRatings.__dataclass_fields__


@pytest.mark.parametrize(("tex", "name"), [(1, "ground-glass"), (2, "ground-glass"), (3, "part-solid"),
                                           (4, "part-solid"), (5, "solid")])
def test_texture_names(tex: int, name: str) -> None:
    assert texture_name(tex) == name


def _insert(r: NoduleRatings, spacing=(1.0, 0.7, 0.7), seed: int = 0):
    rng = np.random.default_rng(seed)
    app = appearance_from_ratings(r, rng)
    alpha, value = render_patch(sphere(5), app, rng)
    bg = rng.normal(-850, 20, (40, 60, 60)).astype(np.float32)
    before = bg.copy()
    a = insert_into(bg, spacing, (20.0, 30.0, 30.0), alpha, value, 20.0, rng)
    return app, before, bg, a


def test_solid_nodule_hu_and_position() -> None:
    app, before, after, a = _insert(ratings())
    core = a > 0.95
    assert core.any()
    c = np.argwhere(core).mean(axis=0)
    np.testing.assert_allclose(c, (20, 30, 30), atol=1.0)
    assert -40 < float(np.median(after[core])) < 100
    # Untouched far away.
    np.testing.assert_array_equal(after[:3], before[:3])
    # Physical size: ~11 mm diameter sphere -> ~11/0.7 voxels across in-plane.
    width = np.nonzero((a > 0.5)[20, 30])[0]
    assert 13 <= width.size <= 19


def test_ground_glass_and_calcified() -> None:
    _, _, ggo, a = _insert(ratings(texture=1))
    assert -750 < float(np.median(ggo[a > 0.95])) < -400
    _, _, calc, a = _insert(ratings(calcification=3))
    assert float(np.median(calc[a > 0.95])) > 300


def test_thick_slices_partial_volume() -> None:
    _, _, thin, _ = _insert(ratings(), spacing=(1.0, 0.7, 0.7))
    thick, sp = thicken_slices(thin, (1.0, 0.7, 0.7), 5.0)
    assert sp[0] == 5.0 and thick.shape[0] == 8
    assert thick.max() < thin.max()


def test_sample_location_respects_depth_and_forbidden() -> None:
    rng = np.random.default_rng(1)
    dist = np.zeros((20, 20, 20))
    dist[5:15, 5:15, 5:15] = 6.0
    forbidden = np.zeros_like(dist, bool)
    forbidden[5:15, 5:15, 5:10] = True
    for _ in range(20):
        c = sample_location(dist, 3.0, rng, forbidden, juxtapleural_p=0.0)
        assert c is not None and dist[c] >= 4.0 and not forbidden[c]
    assert sample_location(dist, 10.0, rng, juxtapleural_p=0.0) is None


def test_insertion_side_and_lobe_from_the_background_lungs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each insertion's side/lobe is estimate_lobe's for its centre, and the lung extents behind
    it are measured once per background (not once per nodule)."""
    from lungfuse.pipelines.imaging import lung as lung_mod
    from lungfuse.pipelines.imaging.lung import LungMask, estimate_lobe
    from lungfuse.pipelines.lab.library import LibraryNodule
    from lungfuse.pipelines.lab.training_data import Background, insert_all

    shape, spacing = (48, 64, 64), (2.0, 2.0, 2.0)
    right = np.zeros(shape, bool)
    right[4:44, 8:56, 4:30] = True
    left = np.zeros(shape, bool)
    left[4:44, 8:56, 34:60] = True
    lungs = right | left
    hu = np.where(lungs, -850.0, 40.0).astype(np.float32)
    step = (2, 2, 2)
    from scipy import ndimage

    coarse = lungs[::2, ::2, ::2]
    bg = Background(patient_id="synthetic", hu=hu, spacing=spacing, noise_sigma_hu=15.0, slice_thickness_mm=2.0,
                    lung=LungMask(lungs, right, left, float(lungs.sum()) * 8e-3), place_step=step,
                    place_dist_mm=ndimage.distance_transform_edt(coarse, sampling=(4.0, 4.0, 4.0)).astype(np.float32),
                    forbidden=np.zeros(coarse.shape, bool))
    nods = [LibraryNodule("LIDC-IDRI-9999", "train", i, sphere(2.5, 7), 5.0, 65.0, (ratings(),), (3,), (5.0,))
            for i in range(6)]
    built = []
    real_init = lung_mod.LobeLocator.__init__

    def counting_init(self, *a, **kw) -> None:  # noqa: ANN001, ANN002, ANN003
        built.append(1)
        real_init(self, *a, **kw)

    monkeypatch.setattr(lung_mod.LobeLocator, "__init__", counting_init)
    out = insert_all(nods, [bg], np.random.default_rng(0))
    assert len(out) == 6 and len(built) == 1
    monkeypatch.setattr(lung_mod.LobeLocator, "__init__", real_init)
    for ins in out:
        assert (ins.side, ins.lobe) == estimate_lobe(ins.center_in_volume, bg.lung)
        assert ins.side == ("right" if ins.center_in_volume[2] < 32 else "left")
    assert bg.lobes is bg.lobes
