"""Classical lung segmentation and lobe estimation on the real LIDC cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lungfuse.pipelines.imaging.lung import closing_edt, estimate_lobe, segment_lungs
from lungfuse.pipelines.io.dicom import load_ct
from lungfuse.pipelines.lab.lidc import malignancy_class, scan_nodules


def test_closing_edt_equals_a_ball_closing() -> None:
    """The distance-transform closing (on the mask's box) equals scipy's closing by a voxel ball."""
    rng = np.random.default_rng(0)
    mask = np.zeros((30, 34, 38), bool)
    mask[5:20, 6:15, 4:30] = rng.random((15, 9, 26)) > 0.55  # a porous blob with gaps to close
    mask[22:24, 25:27, 30:33] = True  # a second, distant piece
    r = 2.0
    g = np.arange(-2, 3)
    ball = (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2) <= r * r
    ref = ndimage.binary_closing(np.pad(mask, 4), structure=ball)[4:-4, 4:-4, 4:-4]
    got = closing_edt(mask, r, (1.0, 1.0, 1.0))
    assert got.sum() > mask.sum()
    np.testing.assert_array_equal(got, ref)
    assert not closing_edt(np.zeros((4, 4, 4), bool), r, (1.0, 1.0, 1.0)).any()


def test_malignancy_class_thresholds() -> None:
    assert malignancy_class(2.5) == "benign"
    assert malignancy_class(3.5) == "malignant"
    assert malignancy_class(3) == "indeterminate"
    assert malignancy_class(1) == "benign" and malignancy_class(5) == "malignant"


@pytest.mark.slow
@pytest.mark.lidc
@pytest.mark.parametrize("patient", ["LIDC-IDRI-0001", "LIDC-IDRI-0002", "LIDC-IDRI-0003"])
def test_lungs_contain_the_real_nodules(lidc_root: Path, patient: str) -> None:
    vol = load_ct(lidc_root / patient)
    lung = segment_lungs(vol.hu, vol.spacing)
    assert 2000 < lung.volume_ml < 9000
    assert lung.right.any() and lung.left.any()
    assert not (lung.right & lung.left).any()
    # Right lung = patient right = smaller LPS x = smaller array x here.
    assert np.nonzero(lung.right)[2].mean() < np.nonzero(lung.left)[2].mean()
    # The lungs are air: median HU well below soft tissue.
    assert np.median(vol.hu[lung.lungs][::97]) < -700
    nods = scan_nodules(patient)
    assert nods
    for n in nods:
        c = tuple(int(round(v)) for v in n.center_zyx)
        assert lung.lungs[c], f"{patient} nodule {n.nodule_index} at {c} outside the lung mask"
        side, lobe = estimate_lobe(n.center_zyx, lung)
        assert side in ("right", "left") and lobe is not None
        assert (side == "left") == (c[2] > 256)
    if patient == "LIDC-IDRI-0003":
        assert sum(n.n_readers >= 2 for n in nods) == 3
