"""The bundled demo CT: a real LIDC-IDRI chest CT, cropped and downsampled (DERIVED DATA).

NOT FOR DIAGNOSTIC USE.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lungfuse.pipelines.core.errors import ConfigurationError
from lungfuse.pipelines.core.resources import resources_dir
from lungfuse.pipelines.demo.case import DemoCase
from lungfuse.pipelines.demo.dicom_writer import SERIES_NUMBER, SeriesLabels, write_series
from lungfuse.pipelines.demo.report import LOBE_NAMES, lung_rads_statement

#: The shipped volume and its human-readable truth, in ``resources/demo/``.
DEMO_NPZ_NAME = "lidc_demo.npz"
DEMO_TRUTH_NAME = "lidc_demo_truth.json"

LIDC_LICENCE = "Creative Commons Attribution 3.0 Unported (CC BY 3.0)"
#: The citations TCIA asks for when LIDC-IDRI data is used or redistributed.
LIDC_CITATIONS = (
    "Armato SG 3rd, McLennan G, Bidaut L, et al. The Lung Image Database Consortium (LIDC) and Image Database "
    "Resource Initiative (IDRI): a completed reference database of lung nodules on CT scans. Medical Physics "
    "38(2):915-931, 2011. doi:10.1118/1.3528204",
    "Armato SG 3rd, et al. Data From LIDC-IDRI [Data set]. The Cancer Imaging Archive, 2015. "
    "doi:10.7937/K9/TCIA.2015.LO9QL9SX",
    "Clark K, et al. The Cancer Imaging Archive (TCIA). Journal of Digital Imaging 26(6):1045-1057, 2013. "
    "doi:10.1007/s10278-013-9622-7",
)


def demo_npz_path() -> Path:
    """The shipped demo volume, ``resources/demo/lidc_demo.npz`` (built by ``lab.demo_builder``)."""
    return resources_dir() / "demo" / DEMO_NPZ_NAME


def load_demo_volume(path: Path | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The shipped demo: (int16 HU z-y-x, metadata with ``geometry``, ``derived_from``, ``nodules``).

    Raises:
        ConfigurationError: the file is missing (a checkout without ``resources/demo``).
    """
    p = path or demo_npz_path()
    if not p.is_file():
        raise ConfigurationError(f"the demo volume {p} is missing; rebuild it with "
                                 "python -m lungfuse.pipelines.lab.demo_builder --lidc LIDC_ROOT")
    with np.load(p, allow_pickle=False) as z:
        meta: dict[str, Any] = json.loads(str(z["meta_json"]))
        return z["hu"], meta


def _report(nodules: list[dict[str, Any]], spacing: tuple[float, float, float], source: str) -> str:
    """The demo's report: a radiologist-style description of the readers' nodule(s), size = the
    consensus long axis rounded to mm, and the closing "No other pulmonary nodules." statement."""
    sz, sy, _ = spacing
    lines = [
        f"DEMO REPORT ON DERIVED DATA ({source}, CC BY 3.0) — NOT FOR DIAGNOSTIC USE",
        "",
        "EXAMINATION: CT chest without contrast.",
        "",
        "CLINICAL INDICATION: Evaluation of pulmonary nodules.",
        "",
        f"TECHNIQUE: Helical CT of the chest without intravenous contrast. Axial images at {sz:g} mm "
        f"slice thickness with a {sy:.2f} mm in-plane pixel size.",
        "",
        "COMPARISON: None available.",
        "",
        "FINDINGS:",
        "Lungs and airways:",
    ]
    impression = []
    for i, n in enumerate(nodules, start=1):
        kind = "mass" if n["diameter_mm_rounded"] > 30 else "nodule"
        where = f"in the {n['lobe_name']} (series {SERIES_NUMBER}, image {n['instance_number']})"
        lines.append(f"There is a {n['diameter_mm_rounded']} x {n['short_axis_mm_rounded']} mm {n['texture']} {kind} "
                     f"with {n['margin']} {where}, without calcification.")
        impression.append(f"{i}. {n['diameter_mm_rounded']} mm {n['texture']} {kind} with {n['margin']} {where}.")
    lines += [
        "No other pulmonary nodules. No consolidation. The central airways are patent.",
        "Pleura: No pleural effusion or pneumothorax.",
        "",
        "IMPRESSION:",
        *impression,
        f"{len(nodules) + 1}. {max(nodules, key=lambda n: n['diameter_mm'])['lung_rads_sentence']}",
    ]
    return "\n".join(lines) + "\n"


def make_lidc_demo_case(out_dir: str | Path, npz: Path | None = None) -> DemoCase:
    """Write the bundled demo: the LIDC-derived CT as a DICOM series (labelled derived), its report and
    ``truth.json`` (the LIDC readers' nodule(s) in the demo geometry).

    Outputs in ``out_dir``: ``ct/IM0000.dcm ..`` (IM0000 = most superior slice, InstanceNumber
    ``nz - k`` for array slice k), ``report.txt``, ``truth.json``.  Deterministic (fixed UIDs).
    """
    hu, meta = load_demo_volume(npz)
    geo, src = meta["geometry"], meta["derived_from"]
    spacing = tuple(float(v) for v in geo["spacing_zyx_mm"])
    origin = tuple(float(v) for v in geo["origin_lps_mm"])
    assert len(spacing) == 3 and len(origin) == 3
    pid = str(src["patient_id"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = SeriesLabels(
        series_description=f"DERIVED FROM {pid} - NOT FOR DIAGNOSTIC USE",
        image_comments=f"Derived data: {pid} (LIDC-IDRI, TCIA, CC BY 3.0), cropped and downsampled by LungFuse. "
                       "NOT FOR DIAGNOSTIC USE.",
        study_description=f"CT CHEST - DEMO DERIVED FROM {pid}",
        model_name="LIDC-IDRI derived demo",
        institution="LungFuse demo (LIDC-IDRI derived data)",
        patient_name="Demo^LIDC",
        derivation=f"Derived from {pid} (LIDC-IDRI, The Cancer Imaging Archive, CC BY 3.0): {src['method']}",
    )
    nz = hu.shape[0]
    series_uid, sop_uids = write_series(out / "ct", hu, spacing, origin, 0, f"lidc|{pid}|{geo['shape_zyx']}",
                                        labels)
    nodules = []
    for n in meta["nodules"]:
        k = int(n["center_voxel_zyx"][0])
        spic = n["margin"] == "spiculated margins"
        cat, sentence = lung_rads_statement(n["diameter_mm"], n["short_axis_mm"], spiculated=spic)
        nodules.append({**n, "instance_number": nz - k, "sop_instance_uid": sop_uids[k],
                        "diameter_mm_rounded": int(round(n["diameter_mm"])),
                        "short_axis_mm_rounded": int(round(n["short_axis_mm"])),
                        "lobe_name": LOBE_NAMES[n["lobe"]], "lung_rads": cat, "lung_rads_sentence": sentence})
    text = _report(nodules, spacing, pid)
    (out / "report.txt").write_text(text, encoding="utf-8")
    truth: dict[str, Any] = {
        "note": meta["note"],
        "generator": "lungfuse.pipelines.demo.lidc_demo.make_lidc_demo_case",
        "derived_from": src,
        "licence": meta["licence"],
        "citations": meta["citations"],
        "geometry": {**geo, "instance_number_rule": "InstanceNumber = nz - k (InstanceNumber 1 = most superior slice)"},
        "series_number": SERIES_NUMBER,
        "series_instance_uid": series_uid,
        "n_slices": nz,
        "nodules": nodules,
        "report_first_line": text.splitlines()[0],
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return DemoCase(out_dir=out, ct_dir=out / "ct", report_path=out / "report.txt", truth=truth,
                    series_instance_uid=series_uid)
