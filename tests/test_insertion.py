"""Lesion insertion: appearance from visual ratings only, geometry and HU of the inserted nodule."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from lungfuse.pipelines.insertion import (
    appearance_from_ratings,
    insert_into,
    render_patch,
    sample_location,
    texture_name,
    thicken_slices,
)
from lungfuse.pipelines.lidc import NoduleRatings


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
