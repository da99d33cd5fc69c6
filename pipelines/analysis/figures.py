"""Pictures of a :class:`~lungfuse.pipelines.analysis.result.CaseResult` (matplotlib, no Qt).

Research software, NOT for diagnostic use.

:func:`finding_figure` draws, for each finding, the axial CT slice through its centre (lung
window) and the same slice with the detector attribution and the malignancy Grad-CAM resampled
onto it through their voxel->LPS affines; the report with its word attributions is printed
beneath.  The exports and the GUI reuse :func:`heatmap_on_slice`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["heatmap_on_slice", "finding_figure"]


def heatmap_on_slice(heat: np.ndarray, heat_affine: np.ndarray, ct_affine: np.ndarray, k: int,
                     shape_yx: tuple[int, int]) -> np.ndarray:
    """Resample a heatmap (z-y-x, ``heat_affine`` voxel->LPS) onto axial slice ``k`` of a CT
    (``ct_affine``), trilinear, zero outside; returns ``shape_yx``."""
    jj, ii = np.mgrid[0 : shape_yx[0], 0 : shape_yx[1]]
    vox = np.stack([np.full(jj.shape, k, float), jj, ii], axis=-1).reshape(-1, 3)
    lps = vox @ ct_affine[:3, :3].T + ct_affine[:3, 3]
    inv = np.linalg.inv(heat_affine)
    hv = lps @ inv[:3, :3].T + inv[:3, 3]
    out = ndimage.map_coordinates(heat.astype(np.float32), hv.T, order=1, mode="constant", cval=0.0)
    return out.reshape(shape_yx)


def finding_figure(result: Any, hu: np.ndarray, path: str | Path, max_findings: int = 3) -> Path:
    """Write a PNG: one row per finding (CT, detector attribution, Grad-CAM) + the report's word scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    findings = result.findings[:max_findings]
    ct_aff = np.asarray(result.volume["affine_lps"])
    n = max(len(findings), 1)
    height = 3.9 * n + 1.0  # inches: each row's two-line title needs ~0.4 in above its images
    fig, axes = plt.subplots(n, 3, figsize=(11, height), squeeze=False)
    for row, f in zip(axes, findings, strict=False):
        k = int(round(f.center_voxel[0]))
        sl = hu[k].astype(np.float32)
        cy, cx = f.center_voxel[1], f.center_voxel[2]
        half = max(40.0, 1.5 * f.diameter_mm / float(result.volume["spacing_mm"][1]))
        win = (slice(max(int(cy - half), 0), int(cy + half)), slice(max(int(cx - half), 0), int(cx + half)))
        extent = (win[1].start, win[1].stop, win[0].stop, win[0].start)
        for ax in row:
            ax.imshow(sl[win], cmap="gray", vmin=-1000, vmax=400, extent=extent)
            ax.set_xticks([])
            ax.set_yticks([])
        lo, hi = f.bbox_voxel
        for ax in row:
            ax.add_patch(plt.Rectangle((lo[2] - 0.5, lo[1] - 0.5), hi[2] - lo[2], hi[1] - lo[1], fill=False,
                                       edgecolor="lime", linewidth=1))
        row[0].set_title(f"finding {f.id}: {f.diameter_mm:.0f} mm {f.texture}, {f.side or '?'} {f.lobe or ''}\n"
                         f"detection {f.detection_score:.2f}, malignancy {f.malignancy_probability or 0:.2f}, "
                         f"Lung-RADS {f.lung_rads}", fontsize=9)
        for ax, key, title in ((row[1], "detection", "detector attribution"), (row[2], "gradcam", "malignancy Grad-CAM")):
            h = f.heatmaps.get(key)
            if not h or h["array"] not in result.arrays:
                ax.set_title(f"{title}: not computed", fontsize=9)
                continue
            m = heatmap_on_slice(result.arrays[h["array"]], np.asarray(h["affine_lps"]), ct_aff, k, sl.shape)
            ax.imshow(np.ma.masked_less(m[win], 0.05), cmap="jet", alpha=0.45, vmin=0, vmax=1, extent=extent)
            ax.set_title(title, fontsize=9)
    if not findings:
        axes[0, 0].text(0.5, 0.5, "no finding above the detection threshold", ha="center", va="center")
        for ax in axes[0]:
            ax.axis("off")
    words: list[dict[str, Any]] = next((f.word_attributions for f in findings if f.word_attributions), [])
    top = sorted(words, key=lambda w: -abs(w["score"]))[:8]
    text = (f"status: {result.status}" + (f" - {result.reasons[0]}" if result.reasons else "")
            + ("\nwords that move the malignancy estimate most: "
               + ", ".join(f"{w['word']} ({w['score']:+.2f})" for w in top) if top else ""))
    # wrapped here, not by matplotlib's wrap=True, which lets a long reason run to the canvas edge
    lines = [textwrap.fill(part, width=150) for part in text.split("\n")]
    fig.text(0.01, 0.01, "\n".join([*lines, "LungFuse - research software, NOT FOR DIAGNOSTIC USE."]), fontsize=8,
             va="bottom")
    # the footer (status, words, notice) keeps a fixed ~0.8 in, whatever the number of rows
    fig.tight_layout(rect=(0, 0.8 / height, 1, 1), h_pad=1.5)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, bbox_inches="tight", pad_inches=0.15)  # never clip the titles
    plt.close(fig)
    return out
