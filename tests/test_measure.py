"""Nodule measurement (``imaging.measure``): the Lung-RADS axes, the sub-solid segmentation and the
solid component, on phantoms and on LIDC-IDRI-0002's real 31 mm ground-glass nodule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lungfuse.pipelines.imaging.measure import NoduleMeasurement, axial_axes, measure_nodule

SP = 1.5
LIDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "lidc-idri"


def _lung(shape: int = 64, hu: float = -850.0, noise: float = 25.0, seed: int = 0) -> np.ndarray:
    """Aerated lung (HU, z-y-x, 1.5 mm voxels) with white noise of ``noise`` HU."""
    rng = np.random.default_rng(seed)
    return (hu + rng.normal(0.0, noise, (shape,) * 3)).astype(np.float32)


def _dist_mm(shape: int) -> np.ndarray:
    c = shape / 2
    zz, yy, xx = np.ogrid[:shape, :shape, :shape]
    return np.sqrt((zz - c) ** 2 + (yy - c) ** 2 + (xx - c) ** 2) * SP


def test_axial_axes_of_a_rectangle_and_empty() -> None:
    m = np.zeros((5, 20, 20), bool)
    m[1:3, 4:16, 6:10] = True  # 12 x 4 pixels on two slices
    long_ax, short_ax = axial_axes(m, SP)
    assert long_ax == pytest.approx(np.hypot(11, 3) * SP + SP)  # the diagonal, pixel edge to edge
    assert short_ax <= long_ax and short_ax > 4 * SP * 0.9
    assert axial_axes(np.zeros((3, 3, 3), bool), SP) == (0.0, 0.0)


def test_ground_glass_nodule_is_measured_at_its_size() -> None:
    """A 24 mm, -700 HU nodule in noisy lung, with the detector's usual under-estimate (12 mm):
    the -600 HU method finds nothing and reports the estimate; the sub-solid path its size."""
    vol = _lung()
    d = _dist_mm(64)
    vol[d <= 12.0] += 150.0  # -700 HU ground glass
    c = np.array([32.0, 32.0, 32.0])
    lung = np.ones(vol.shape, bool)
    old = measure_nodule(vol, c, 12.0, lung_mask=lung, subsolid=False)
    new = measure_nodule(vol, c, 12.0, lung_mask=lung)
    assert old.source == "detector" and old.long_axis_mm == 12.0
    assert new.source == "segmentation" and new.method == "subsolid" and new.texture == "ground-glass"
    assert abs(new.long_axis_mm - 24.0) <= 3.0 and abs(new.mean_diameter_mm - 24.0) <= 3.0, new
    assert new.solid_component_mm is None
    sphere = 4 / 3 * np.pi * 12.0**3
    assert 0.7 * sphere < new.volume_mm3 < 1.3 * sphere


def test_part_solid_nodule_has_its_solid_component() -> None:
    """20 mm of -600 HU ground glass around an 8 mm soft-tissue core: part-solid, total size and
    solid component (mean diameter) both within 2.5 mm."""
    vol = _lung(seed=1)
    d = _dist_mm(64)
    vol[d <= 10.0] += 250.0
    vol[d <= 4.0] = 20.0 + np.random.default_rng(2).normal(0, 25, int((d <= 4.0).sum()))
    m = measure_nodule(vol, (32.0, 32.0, 32.0), 8.0, lung_mask=np.ones(vol.shape, bool))
    assert m.texture == "part-solid" and m.method == "subsolid", m
    assert abs(m.long_axis_mm - 20.0) <= 2.5, m
    assert m.solid_component_mm is not None and abs(m.solid_component_mm - 8.0) <= 2.5, m


def test_solid_nodule_keeps_the_threshold_method() -> None:
    vol = _lung(seed=3)
    vol[_dist_mm(64) <= 6.0] = 40.0
    new = measure_nodule(vol, (32.0, 32.0, 32.0), 12.0)
    old = measure_nodule(vol, (32.0, 32.0, 32.0), 12.0, subsolid=False)
    assert new.method == "threshold" and new.texture == "solid" and new.solid_component_mm is None
    assert new.long_axis_mm == old.long_axis_mm and new.volume_mm3 == old.volume_mm3


def test_ground_glass_does_not_follow_a_vessel() -> None:
    """A 20 mm ground-glass nodule with a 3 mm soft-tissue vessel through its centre along x (in
    the axial plane), a 10 mm size estimate: the nodule's level is taken from the median around
    the centre (not the vessel), and the 3 mm opening detaches the vessel outside the nodule, so
    the long axis is the nodule's.  (Below a 10 mm estimate the maximum is used; see
    ``VESSEL_SPREAD_HU``.)"""
    vol = _lung(seed=4)
    d = _dist_mm(64)
    vol[d <= 10.0] += 150.0
    vol[31:33, 31:33, :] = 40.0
    m = measure_nodule(vol, (32.0, 32.0, 32.0), 10.0, lung_mask=np.ones(vol.shape, bool))
    assert m.method == "subsolid" and abs(m.long_axis_mm - 20.0) <= 3.5, m
    assert m.texture != "solid"


def test_measurement_validates_the_solid_component() -> None:
    kw = dict(centroid_zyx=(1.0, 1.0, 1.0), bbox_lo=(0, 0, 0), bbox_hi=(2, 2, 2), volume_mm3=10.0,
              long_axis_mm=10.0, short_axis_mm=8.0, mean_diameter_mm=9.0, mean_hu=-500.0, solid_fraction=0.3,
              calcified_fraction=0.0, calcified=False, source="segmentation", n_voxels=8)
    assert NoduleMeasurement(texture="part-solid", solid_component_mm=4.0, **kw).solid_component_mm == 4.0  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="part-solid"):
        NoduleMeasurement(texture="ground-glass", solid_component_mm=4.0, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mean diameter"):
        NoduleMeasurement(texture="part-solid", solid_component_mm=9.5, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        NoduleMeasurement(texture="part-solid", method="learned", **kw)  # type: ignore[arg-type]


@pytest.mark.skipif(not (LIDC / "LIDC-IDRI-0002" / "ct").is_dir(), reason="LIDC-IDRI-0002 not unpacked")
def test_real_ground_glass_nodule_lidc_0002() -> None:
    """LIDC-IDRI-0002's ground-glass nodule (readers: 30.0 and 31.5 mm) from its consensus centre,
    with the detector's 15.1 mm estimate: the -600 HU method reported 15.1 mm (its fallback); the
    sub-solid path must come within the consistency rule's tolerance (3 mm or 30 %, here 9 mm) of
    the readers' median, and within 5 mm."""
    from lungfuse.pipelines.imaging.lung import segment_lungs
    from lungfuse.pipelines.imaging.preprocess import DETECTION_SPACING_MM, to_model_grid
    from lungfuse.pipelines.io.dicom import load_ct
    from lungfuse.pipelines.lab.lidc import scan_nodules

    v = load_ct(LIDC / "LIDC-IDRI-0002" / "ct")
    g = to_model_grid(v.hu, v.spacing, v.affine, target_mm=DETECTION_SPACING_MM)
    lungs = segment_lungs(g.array, (DETECTION_SPACING_MM,) * 3, x_axis_sign=1.0, working_mm=3.0).lungs
    (nod,) = scan_nodules("LIDC-IDRI-0002", v.series_instance_uid)
    c = g.from_source_voxel(np.array(nod.center_zyx))
    m = measure_nodule(g.array, c, 15.1, spacing_mm=float(g.spacing[0]), lung_mask=lungs)
    assert m.method == "subsolid" and m.texture == "ground-glass", m
    assert abs(m.long_axis_mm - nod.diameter_mm) <= 5.0, (m.long_axis_mm, nod.diameter_mm)
    old = measure_nodule(g.array, c, 15.1, spacing_mm=float(g.spacing[0]), lung_mask=lungs, subsolid=False)
    assert old.long_axis_mm < 0.6 * nod.diameter_mm  # the bug this fixes


# -- what the measurement feeds: the size rule, the finding, Lung-RADS ------------------------------


def test_size_rule_accepts_the_long_axis_or_the_mean_diameter() -> None:
    """'A 3 cm ground-glass nodule in the left lung' on LIDC-IDRI-0002 (long axis 27.2 mm, mean
    22.7 mm) agrees; a size matching only the mean diameter agrees too; a size matching neither
    is a size discordance, quoting the long axis."""
    from lungfuse.pipelines.analysis.consistency import FindingView, pair_discordances
    from lungfuse.pipelines.nlp.claims import NoduleClaim

    ggn = FindingView("left", None, 27.2, "ground-glass", 0.0, 0.6, mean_diameter_mm=22.7)
    claim = NoduleClaim(size_mm=30.0, side="left", texture="ground-glass")  # type: ignore[call-arg]
    assert pair_discordances(claim, ggn) == []
    elongated = FindingView("left", None, 30.0, "solid", 0.0, 0.6, mean_diameter_mm=21.0)
    assert pair_discordances(NoduleClaim(size_mm=20.0, side="left"), elongated) == []  # type: ignore[call-arg]
    assert pair_discordances(NoduleClaim(size_mm=20.0, side="left"),  # type: ignore[call-arg]
                             FindingView("left", None, 30.0, "solid", 0.0, 0.6)) != []  # no mean: long axis only
    (reason,) = pair_discordances(NoduleClaim(size_mm=60.0, side="left"), ggn)  # type: ignore[call-arg]
    assert reason.startswith("size:") and "27.2 mm" in reason


def _finding(**kw: object) -> object:
    from lungfuse.pipelines.analysis.result import Finding

    base: dict[str, object] = dict(id="F1", tracking_uid="1.2.3", center_voxel=[1.0, 2.0, 3.0],
                                   center_lps_mm=[1.0, 2.0, 3.0], bbox_voxel=[[0, 0, 0], [2, 2, 2]], diameter_mm=20.0,
                                   mean_diameter_mm=18.0, volume_mm3=100.0, side="left", lobe=None,
                                   detection_score=0.7, texture="part-solid", calcified=False, measurement={})
    base.update(kw)
    return Finding(**base)  # type: ignore[arg-type]


def test_finding_validates_axes_and_solid_component() -> None:
    f = _finding(long_axis_mm=20.0, short_axis_mm=16.0, solid_component_mm=7.0)
    assert f.solid_component_mm == 7.0  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="part-solid"):
        _finding(texture="ground-glass", solid_component_mm=7.0)
    with pytest.raises(ValueError, match="exceeds the nodule"):
        _finding(solid_component_mm=25.0)
    with pytest.raises(ValueError, match="short_axis_mm"):
        _finding(long_axis_mm=10.0, short_axis_mm=12.0)
    with pytest.raises(ValueError, match="finite"):
        _finding(short_axis_mm=float("nan"))


def test_part_solid_lung_rads_follows_the_solid_component() -> None:
    """Lung-RADS v2022 baseline part-solid >= 6 mm: 3 below a 6 mm solid component, 4A for 6-8 mm,
    4B from 8 mm; without the solid component the category is 0 (what the analysis gave part-solid
    findings before it passed the measured one)."""
    from lungfuse.pipelines.analysis.guidance import guidance_for

    cats = [guidance_for(20.0, "part-solid", mean_diameter_mm=18.0, solid_component_mm=s)["lung_rads"]["category"]
            for s in (4.0, 7.0, 9.0, None)]
    assert cats == ["3", "4A", "4B", "0"]
