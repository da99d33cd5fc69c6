"""The bundled demo case: a procedural chest-CT phantom with real LIDC nodule shapes.

LungFuse cannot ship LIDC-IDRI images, so the default input of the app and the test case
that needs no ``../shared`` data is generated here: a synthetic chest CT (in HU), written
as a CT DICOM series, with a free-text radiology report that describes its nodules, and a
``truth.json`` with the exact geometry. SYNTHETIC DATA, NOT FOR DIAGNOSTIC USE.

Outputs of :func:`make_demo_case` in ``out_dir``::

    ct/IM0000.dcm .. IM{n-1:04d}.dcm   one CT slice per file, IM0000 = most superior slice
    report.txt                         free-text report (first line: SYNTHETIC DEMO REPORT ...)
    truth.json                         geometry + per-nodule ground truth

Geometry convention (the project's): arrays are z-y-x; voxel (k, j, i) maps to
``LPS = origin + direction @ (spacing * [k, j, i])`` where ``origin`` is the LPS position
(x, y, z mm) of voxel (0, 0, 0) and the COLUMNS of ``direction`` are the LPS unit vectors
of the z, y, x array axes. The phantom array has k increasing toward the head (superior),
j toward posterior and i toward the patient's left, so ``direction`` has columns
[0, 0, 1], [0, 1, 0], [1, 0, 0]. The DICOM files are numbered from the top:
``InstanceNumber = nz - k`` (file ``IM{nz-1-k:04d}.dcm``).

Anatomy is laid out in "reference millimetres" for a 320 mm x 320 mm x 280 mm field of view
(the default grid) and scaled to the requested grid, so a smaller grid still holds a whole
chest; the LIDC nodule shapes always keep their true physical size.

Nodule shapes: the readers' consensus masks of the single nodules of LIDC-IDRI-0001
(solid, spiculated) and LIDC-IDRI-0002 (readers rated it ground-glass; the phantom renders
every nodule solid), both TRAIN patients per :func:`lungfuse.pipelines.lab.lidc.patient_split`
(a test patient is refused), shipped as ``resources/demo/nodule_shapes.npz``
(:mod:`.shapes`). They are resampled to the demo spacing, placed at random
(seeded) positions fully inside a lung with a margin from the pleura and the mediastinum,
and rendered as solid tissue (+30 HU, soft edge). ``truth.json`` and the report say where.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from lungfuse.pipelines.demo.shapes import DEMO_NODULE_SOURCES, DemoNoduleShape, load_demo_shapes

__all__ = ["DemoCase", "DEMO_NODULE_SOURCES", "make_demo_case"]


_REF_FOV_XY = 320.0  # mm, in-plane field of view the anatomy is laid out for
_REF_FOV_Z = 280.0  # mm, cranio-caudal coverage the anatomy is laid out for
_ORIGIN_Z = -300.0  # mm, LPS z of the most inferior slice (arbitrary, LIDC-like)

# Tissue HU values (non-contrast CT).
HU_AIR = -1000.0
HU_FAT = -100.0
HU_SOFT = 40.0
HU_MUSCLE = 48.0
HU_LIVER = 58.0
HU_LUNG = -860.0
HU_CORTEX = 700.0
HU_MARROW = 250.0
HU_CARTILAGE = 120.0
HU_NODULE = 30.0
NOISE_SIGMA_HU = 20.0

_SERIES_NUMBER = 2
_STUDY_DATE = "20250101"
_DISCLAIMER_ASCII = "NOT FOR DIAGNOSTIC USE - synthetic phantom"

_LOBE_NAMES = {
    "RUL": "right upper lobe",
    "RML": "right middle lobe",
    "RLL": "right lower lobe",
    "LUL": "left upper lobe",
    "LLL": "left lower lobe",
}


@dataclass(frozen=True)
class DemoCase:
    """Paths and ground truth of a generated demo case.

    Attributes
    ----------
    out_dir: the case folder.
    ct_dir: ``out_dir / "ct"``, the DICOM series (one file per slice).
    report_path: ``out_dir / "report.txt"``.
    truth: the content of ``out_dir / "truth.json"`` (geometry + nodules).
    series_instance_uid: SeriesInstanceUID of the CT series.
    """

    out_dir: Path
    ct_dir: Path
    report_path: Path
    truth: dict[str, Any]
    series_instance_uid: str

    @property
    def truth_path(self) -> Path:
        """``out_dir / "truth.json"``."""
        return self.out_dir / "truth.json"


# --------------------------------------------------------------------------------------
# Grid helpers
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """The voxel grid in reference millimetres (see module docstring).

    ``z`` is height above the lowest slice (superior +), ``y`` posterior +, ``x`` patient
    left +, the latter two centred on the volume. Broadcastable arrays z (nz,1,1),
    y (1,ny,1), x (1,1,nx).
    """

    shape: tuple[int, int, int]
    vox: tuple[float, float, float]  # voxel size in reference mm, z-y-x
    z: np.ndarray
    y: np.ndarray
    x: np.ndarray

    @staticmethod
    def make(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> _Grid:
        nz, ny, nx = shape
        sz, sy, sx = spacing
        s_xy = min(nx * sx, ny * sy) / _REF_FOV_XY
        s_z = nz * sz / _REF_FOV_Z
        vox = (sz / s_z, sy / s_xy, sx / s_xy)
        z = (np.arange(nz, dtype=np.float32) * vox[0])[:, None, None]
        y = ((np.arange(ny, dtype=np.float32) - (ny - 1) / 2) * vox[1])[None, :, None]
        x = ((np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * vox[2])[None, None, :]
        return _Grid(shape=shape, vox=vox, z=z, y=y, x=x)

    def to_index(self, p: np.ndarray) -> np.ndarray:
        """Reference-mm points (..., 3) z-y-x -> fractional voxel indices (..., 3)."""
        nz, ny, nx = self.shape
        off = np.array([0.0, (ny - 1) / 2, (nx - 1) / 2])
        return np.asarray(p, dtype=np.float64) / np.array(self.vox) + off

    def to_ref(self, idx: np.ndarray) -> np.ndarray:
        """Voxel indices (..., 3) z-y-x -> reference-mm points (..., 3)."""
        nz, ny, nx = self.shape
        off = np.array([0.0, (ny - 1) / 2, (nx - 1) / 2])
        return (np.asarray(idx, dtype=np.float64) - off) * np.array(self.vox)


def _smoothstep(e0: float, e1: float, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


# --------------------------------------------------------------------------------------
# Tubes (vessels, airways, great vessels): batched, vectorised rasterisation
# --------------------------------------------------------------------------------------


def _render_tubes(segments: np.ndarray, grid: _Grid, soft: float | None = None) -> np.ndarray:
    """Rasterise capsules (line segments with a radius) into an occupancy volume.

    Parameters
    ----------
    segments: (N, 7) array ``[z0, y0, x0, z1, y1, x1, radius]`` in reference mm.
    soft: width (ref mm) of the linear edge ramp; default = in-plane voxel size. The
        occupancy is ``clip(0.5 + (r - d) / soft, 0, 1)`` with d the distance to the segment
        axis, i.e. a cheap partial-volume model.

    Returns
    -------
    float32 z-y-x volume in [0, 1] (max over segments).

    WHY this shape: thousands of small vessel segments are far too slow one by one, so
    long segments are first cut into short pieces (similar, near-cubic bounding boxes),
    then pieces are processed in batches sharing one padded stencil, with the distance
    computed by per-axis broadcasting in float32.
    """
    occ = np.zeros(grid.shape, dtype=np.float32)
    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 7)
    if len(seg) == 0:
        return occ
    soft = float(grid.vox[2] if soft is None else soft)
    # Cut into pieces no longer than max(3 mm, 2 r).
    length = np.linalg.norm(seg[:, 3:6] - seg[:, 0:3], axis=1)
    n_pieces = np.maximum(np.ceil(length / np.maximum(3.0, 2.0 * seg[:, 6])), 1).astype(int)
    rep = np.repeat(np.arange(len(seg)), n_pieces)
    part = np.arange(len(rep)) - np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces)
    frac0 = (part / n_pieces[rep])[:, None]
    frac1 = ((part + 1) / n_pieces[rep])[:, None]
    a0, b0 = seg[rep, 0:3], seg[rep, 3:6]
    a = a0 + (b0 - a0) * frac0
    b = a0 + (b0 - a0) * frac1
    r = seg[rep, 6]

    shp = np.array(grid.shape)
    reach = (r + soft)[:, None]
    lo = np.clip(np.floor(grid.to_index(np.minimum(a, b) - reach)).astype(int), 0, shp)
    hi = np.clip(np.ceil(grid.to_index(np.maximum(a, b) + reach)).astype(int) + 1, 0, shp)
    dims = hi - lo
    keep = np.all(dims > 0, axis=1)
    a, b, r, lo, dims = a[keep], b[keep], r[keep], lo[keep], dims[keep]
    order = np.lexsort((dims[:, 2], dims[:, 1], dims[:, 0]))
    a, b, r, lo, dims = a[order], b[order], r[order], lo[order], dims[order]
    vox = np.array(grid.vox)
    off = np.array([0.0, (grid.shape[1] - 1) / 2, (grid.shape[2] - 1) / 2])
    # Segment ends relative to voxel (0,0,0)'s reference-mm position, per axis.
    a_rel = (a + off * vox).astype(np.float32)
    ab = (b - a).astype(np.float32)
    den = np.maximum((ab * ab).sum(1), 1e-9).astype(np.float32)
    flat = occ.reshape(-1)
    budget = 2_000_000  # (piece, voxel) pairs per batch: bounds the temporary memory
    n = len(r)
    start = 0
    while start < n:
        bd = dims[start].copy()
        stop = start + 1
        while stop < n:
            nd = np.maximum(bd, dims[stop])
            if (stop + 1 - start) * int(nd.prod()) > budget:
                break
            bd = nd
            stop += 1
        sl = slice(start, stop)
        B = stop - start
        # Per-axis voxel coordinates (ref mm) of the stencil, broadcast to (B, dz, dy, dx).
        pz = ((lo[sl, 0, None] + np.arange(bd[0])) * vox[0]).astype(np.float32) - a_rel[sl, 0, None]
        py = ((lo[sl, 1, None] + np.arange(bd[1])) * vox[1]).astype(np.float32) - a_rel[sl, 1, None]
        px = ((lo[sl, 2, None] + np.arange(bd[2])) * vox[2]).astype(np.float32) - a_rel[sl, 2, None]
        pz = pz.reshape(B, -1, 1, 1)
        py = py.reshape(B, 1, -1, 1)
        px = px.reshape(B, 1, 1, -1)
        abz = ab[sl, 0].reshape(B, 1, 1, 1)
        aby = ab[sl, 1].reshape(B, 1, 1, 1)
        abx = ab[sl, 2].reshape(B, 1, 1, 1)
        t = (pz * abz + py * aby + px * abx) / den[sl].reshape(B, 1, 1, 1)
        np.clip(t, 0.0, 1.0, out=t)
        d2 = (pz - t * abz) ** 2
        d2 += (py - t * aby) ** 2
        d2 += (px - t * abx) ** 2
        f = 0.5 + (r[sl].astype(np.float32).reshape(B, 1, 1, 1) - np.sqrt(d2)) / soft
        bi, kz, ky, kx = np.nonzero(f > 0)
        if bi.size:
            gz, gy, gx = lo[sl][bi, 0] + kz, lo[sl][bi, 1] + ky, lo[sl][bi, 2] + kx
            ok = (gz < shp[0]) & (gy < shp[1]) & (gx < shp[2])
            lin = (gz[ok] * shp[1] + gy[ok]) * shp[2] + gx[ok]
            vals = np.minimum(f[bi[ok], kz[ok], ky[ok], kx[ok]], 1.0)
            np.maximum.at(flat, lin, vals)
        start = stop
    return occ


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _perp(rng: np.random.Generator, d: np.ndarray) -> np.ndarray:
    """A random unit vector perpendicular to unit vector d."""
    while True:
        u = rng.standard_normal(3)
        u -= u.dot(d) * d
        n = np.linalg.norm(u)
        if n > 1e-6:
            return u / n


def _grow_tree(
    rng: np.random.Generator,
    start: Sequence[float],
    direction: Sequence[float],
    radius: float,
    inside: Any,
    *,
    min_radius: float,
    length_per_radius: tuple[float, float] = (3.0, 5.0),
    max_segments: int = 3000,
) -> list[tuple[float, ...]]:
    """Grow a branching tube tree by a random walk with bifurcations.

    Each segment has length ~ radius x U(length_per_radius) + 2 mm, each bifurcation
    splits the radius asymmetrically following Murray's law (r^3 = r1^3 + r2^3) and
    deflects the children by 15-50 degrees in a random plane, with a pull away from the
    root so trees spread toward the periphery. A segment whose end leaves the allowed
    region (``inside(point) -> bool``) is retried shorter/deflected, then dropped. Points
    and radius in reference mm, z-y-x. Returns ``[(z0, y0, x0, z1, y1, x1, r), ...]``.
    """
    root = np.asarray(start, dtype=np.float64)
    stack = [(root, _unit(np.asarray(direction, dtype=np.float64)), float(radius))]
    segs: list[tuple[float, ...]] = []
    while stack and len(segs) < max_segments:
        p, d, r = stack.pop()
        length = r * rng.uniform(*length_per_radius) + 2.0
        q = None
        for attempt in range(4):
            dd = d if attempt == 0 else _unit(d + 0.6 * _perp(rng, d))
            cand = p + dd * length
            if inside(cand):
                q, d = cand, dd
                break
            length *= 0.7
        if q is None:
            continue
        segs.append((*p, *q, r))
        if r < min_radius:
            continue
        alpha = rng.uniform(0.55, 1.0)
        r1 = r * (1.0 / (1.0 + alpha**3)) ** (1.0 / 3.0)
        r2 = alpha * r1
        u = _perp(rng, d)
        out = _unit(q - root)
        a1 = math.radians(rng.uniform(15, 30))
        a2 = math.radians(rng.uniform(30, 50))
        d1 = _unit(math.cos(a1) * d + math.sin(a1) * u + 0.25 * out)
        d2 = _unit(math.cos(a2) * d - math.sin(a2) * u + 0.25 * out)
        stack.append((q, d1, r1))
        stack.append((q, d2, r2))
    return segs


# --------------------------------------------------------------------------------------
# The phantom
# --------------------------------------------------------------------------------------


@dataclass
class _Phantom:
    hu: np.ndarray  # float32 z-y-x HU (noise-free until _finish)
    lung_right: np.ndarray  # bool z-y-x, parenchyma region of the right lung
    lung_left: np.ndarray  # bool z-y-x


# Central anatomy landmarks (reference mm; z above the lowest slice, y + posterior,
# x + patient left).
_SPINE_Y = 45.0  # vertebral body centre
_CARINA = np.array([186.0, 2.0, 0.0])
_RIGHT_BRONCHUS_END = np.array([170.0, -2.0, -34.0])  # right main bronchus: short, steep
_LEFT_BRONCHUS_END = np.array([164.0, 6.0, 36.0])  # left main bronchus: longer, more horizontal
_MAIN_AIRWAYS: tuple[tuple[float, ...], ...] = (
    (280.0, 0.0, 0.0, *_CARINA, 9.5),  # trachea
    (*_CARINA, *_RIGHT_BRONCHUS_END, 7.0),
    (*_CARINA, *_LEFT_BRONCHUS_END, 6.0),
)


def _ellipse_rho(x: np.ndarray, y: np.ndarray, ax: Any, ay_ant: Any, ay_post: Any, p: float = 2.0) -> np.ndarray:
    """Normalised 'radius' of a super-ellipse with different anterior/posterior semi-axes."""
    ay = np.where(y < 0, ay_ant, ay_post)
    return (np.abs(x / ax) ** p + np.abs(y / ay) ** p) ** (1.0 / p)


def _build_phantom(rng: np.random.Generator, g: _Grid) -> _Phantom:
    """Procedural chest: body wall, lungs, mediastinum, heart, bones, upper abdomen."""
    nz, ny, nx = g.shape
    z, y, x = g.z, g.y, g.x
    y2, x2 = y[0], x[0]  # (ny,1), (1,nx) in-plane

    # ---- body wall (constant along z): skin, subcutaneous fat, muscle --------------------
    body_rho = _ellipse_rho(x2, y2, 150.0, 112.0, 110.0, p=2.3)
    wall = np.full((ny, nx), HU_AIR, dtype=np.float32)
    wall[body_rho <= 1.0] = 30.0  # skin
    wall[_ellipse_rho(x2, y2, 147.0, 109.0, 107.0, p=2.3) <= 1.0] = HU_FAT
    # Fat thickness varies with angle (thicker laterally and posteriorly).
    theta2 = np.arctan2(x2, y2)  # 0 = posterior, +-pi = anterior
    fat = 12.0 + 4.0 * np.sin(theta2) ** 2
    muscle2d = _ellipse_rho(x2, y2, 147.0 - fat, 109.0 - fat, 107.0 - fat, p=2.3) <= 1.0
    wall[muscle2d] = HU_MUSCLE
    # Thin fat planes between muscle groups (pectoralis / serratus / paraspinal): WHY:
    # homogeneous walls look synthetic.
    mrho = _ellipse_rho(x2, y2, 147.0 - fat - 9.0, 109.0 - fat - 9.0, 107.0 - fat - 9.0, p=2.3)
    wall[muscle2d & (np.abs(mrho - 1.0) < 0.012)] = -60.0
    # CT table under the patient (posterior), a thin curved plate.
    table_y = 128.0 + 0.0008 * x2**2
    wall[(np.abs(y2 - table_y) < 2.5) & (np.abs(x2) < 150.0)] = 150.0
    hu = np.empty(g.shape, dtype=np.float32)
    hu[:] = wall

    # ---- thoracic cavity (inside the ribs); narrows toward the thoracic inlet ------------
    # WHY the taper: the lungs (and the upper ribs) are bell-shaped in coronal view.
    ac = 118.0 - 0.0016 * np.maximum(z - 120.0, 0.0) ** 2  # (nz,1,1)
    bc = 84.0 - 0.0008 * np.maximum(z - 150.0, 0.0) ** 2
    cav_rho = _ellipse_rho(x, y, ac, bc, bc + 2.0, p=2.15)
    theta = np.arctan2(x2, y2)[None]  # (1,ny,nx)
    r_xy = np.hypot(x2, y2)[None]
    # Radial offset from the cavity boundary (mm, + outside): r - R(theta), exact for rho.
    t_out = r_xy - r_xy / np.maximum(cav_rho, 1e-6)
    cavity = cav_rho <= 1.0
    # Mediastinal half-width (mm) as a function of y: narrow anterior junction, wider
    # around trachea/aorta/esophagus; the heart and spine are excluded separately.
    m_half = 5.0 + 7.0 * _smoothstep(-60.0, -30.0, y)
    # Default cavity content: fat in the mediastinum, soft tissue elsewhere (it only shows
    # where no lung is, i.e. around the apices / thoracic inlet); organs overwrite.
    hu = np.where(cavity, np.where(np.abs(x) < m_half + 6.0, HU_FAT, HU_MUSCLE), hu)

    # ---- diaphragm domes and upper abdomen ---------------------------------------------
    def dome(xc: float, top: float) -> np.ndarray:
        # Flat-topped dome, steeper laterally, deepest in the posterior recesses.
        d = np.hypot(x2 - xc, 1.1 * (y2 + 10.0))
        return np.maximum(top - 75.0 * (d / 110.0) ** 2.2 - 0.35 * np.maximum(y2, 0.0), 10.0)

    dome_r = dome(-42.0, 100.0)  # right dome higher (liver)
    dome_l = dome(42.0, 90.0)
    z_dia = np.where(x2 < 0, dome_r, dome_l)[None]  # (1,ny,nx)
    z_dia = np.minimum(z_dia, np.maximum(dome_r, dome_l)[None])
    below = cavity & (z < z_dia)
    muscle_sheet = cavity & (z >= z_dia) & (z < z_dia + 4.0)
    abdomen = np.full(g.shape, HU_FAT, dtype=np.float32)
    liver = (((x + 25.0) / 115.0) ** 2 + ((y - 5.0) / 95.0) ** 2 + ((z - 30.0) / 80.0) ** 2) <= 1.0
    abdomen = np.where(liver, HU_LIVER, abdomen)
    stomach = (((x - 50.0) / 36.0) ** 2 + ((y + 25.0) / 30.0) ** 2 + ((z - 55.0) / 30.0) ** 2) <= 1.0
    # Supine: gas rises anteriorly (air-fluid level in the gastric fundus).
    abdomen = np.where(stomach, np.where(y < -46.0, HU_AIR, 15.0), abdomen)
    spleen = (((x - 82.0) / 22.0) ** 2 + ((y - 45.0) / 40.0) ** 2 + ((z - 48.0) / 36.0) ** 2) <= 1.0
    abdomen = np.where(spleen, 50.0, abdomen)
    hu = np.where(below, abdomen, hu)
    hu[muscle_sheet] = HU_MUSCLE

    # ---- heart with pericardial fat ----------------------------------------------------
    heart_rho = np.sqrt(((x - 22.0) / 66.0) ** 2 + ((y + 30.0) / 52.0) ** 2 + ((z - 112.0) / 50.0) ** 2)
    above_dia = z >= z_dia
    heart = (heart_rho <= 1.0) & above_dia
    pericard = (heart_rho <= 1.09) & above_dia & cavity
    hu[pericard] = HU_FAT
    hu[heart] = HU_SOFT

    # ---- great vessels, esophagus (tubes) -----------------------------------------------
    med_tubes = np.array(
        [
            # z0, y0, x0, z1, y1, x1, r   (ref mm; x + = patient left, y + = posterior)
            [140, -18, -6, 198, -10, -4, 15],  # ascending aorta
            [198, -10, -4, 208, 15, 8, 13],  # aortic arch
            [208, 15, 8, 200, 30, 22, 12],
            [200, 30, 22, 0, 32, 20, 12],  # descending aorta (left of the spine)
            [140, -22, -30, 250, -15, -30, 10],  # superior vena cava -> right brachiocephalic
            [250, -15, -30, 280, -10, -40, 8],
            [225, -18, 5, 250, -15, -30, 6],  # left brachiocephalic vein crossing
            [205, 0, 0, 280, -5, -12, 7],  # brachiocephalic trunk
            [205, 10, 10, 280, 5, 18, 5],  # left common carotid / subclavian
            [205, 20, 18, 280, 20, 40, 6],
            [145, -38, 12, 168, -10, 22, 13],  # pulmonary trunk
            [168, -10, 22, 172, 0, 40, 10],  # left pulmonary artery -> left hilum
            [165, -8, 12, 168, -2, -38, 9],  # right pulmonary artery (behind the aorta)
            [280, 17, 3, 40, 18, 8, 7],  # esophagus (collapsed, soft tissue)
            [0, 24, -20, 95, 0, -15, 11],  # inferior vena cava -> right atrium
        ],
        dtype=np.float64,
    )
    med_occ = _render_tubes(med_tubes, g)
    hu = np.where(cavity & (med_occ > 0), hu * (1 - med_occ) + HU_SOFT * med_occ, hu)
    # Lungs keep a few mm of mediastinal fat around the great vessels and central airways.
    excl_tubes = np.vstack([med_tubes, np.array(_MAIN_AIRWAYS)])
    med_excl = _render_tubes(excl_tubes + np.array([0, 0, 0, 0, 0, 0, 5.0]), g) > 0

    # ---- spine: vertebral bodies with discs, canal, posterior elements -----------------
    disc_phase = np.mod(z + 5.0, 27.0)
    disc = disc_phase < 5.0  # intervertebral discs every 27 mm
    vb_r = np.hypot(x2, y2 - _SPINE_Y)[None]
    vert = vb_r <= 17.0
    vb_hu = np.where(vb_r > 14.5, 520.0, 210.0)  # cortical shell, cancellous core
    hu = np.where(vert, np.where(disc, 85.0, vb_hu), hu)
    canal_y = _SPINE_Y + 27.0
    canal_r = np.hypot(x2, y2 - canal_y)
    ring = (canal_r > 8.5) & (canal_r < 13.5) & (y2 > canal_y - 2.0)
    spinous = (np.abs(x2) < 3.5) & (y2 >= canal_y + 10.0) & (y2 < canal_y + 25.0)
    transverse = (
        (np.abs(y2 - canal_y + 6.0 - 0.35 * np.abs(x2)) < 3.5) & (np.abs(x2) > 8.0) & (np.abs(x2) < 34.0)
    )
    pedicle = (np.abs(np.abs(x2) - 11.0) < 3.5) & (y2 > _SPINE_Y + 12.0) & (y2 < canal_y)
    post_el = (ring | spinous | transverse | pedicle)[None] & ~disc
    hu = np.where(post_el, 480.0, hu)
    hu = np.where((canal_r <= 8.5)[None], 25.0, hu)  # cord/CSF

    # ---- ribs: sloping bony arcs just outside the cavity --------------------------------
    phi = np.abs(theta) / np.pi  # 0 posterior .. 1 anterior
    drop = 80.0 * phi  # ribs descend anteriorly (short oblique arcs on axial slices)
    delta = 21.0  # posterior rib spacing, mm
    z_first = 258.0
    q = (z_first - z - drop) / delta
    n0 = np.rint(q)
    dz = (q - n0) * delta
    t_rib = 6.0
    rib_rho = np.sqrt((dz / 4.8) ** 2 + ((t_out - t_rib) / 3.6) ** 2)
    rib_band = (n0 >= 0) & (n0 <= 11) & (phi > 0.12) & (phi < 0.87) & (rib_rho <= 1.0)
    # Lower ribs stop earlier anteriorly (floating ribs 11-12).
    rib_band &= phi < (0.87 - 0.04 * np.maximum(n0 - 8, 0))
    cartilage = phi > 0.74
    rib_val = np.where(cartilage, HU_CARTILAGE, np.where(rib_rho > 0.62, HU_CORTEX, HU_MARROW))
    hu = np.where(rib_band, rib_val, hu)
    # Sternum (anterior midline) and scapulae (posterolateral, upper chest).
    stern = (np.abs(x2 / 15.0) ** 2 + ((y2 + 93.0) / 6.5) ** 2 <= 1.0)[None] & (z > 85.0) & (z < 245.0)
    stern_val = np.where((np.abs(x2 / 15.0) ** 2 + ((y2 + 93.0) / 6.5) ** 2 > 0.45)[None], 550.0, 230.0)
    hu = np.where(stern, stern_val, hu)
    scap = (np.abs(t_out - 22.0) < 2.2) & (phi > 0.16) & (phi < 0.42) & (z > 165.0) & (z < 262.0)
    hu = np.where(scap, 600.0, hu)

    # ---- lungs --------------------------------------------------------------------------
    pleura_in = cav_rho <= 1.0 - 3.0 / 84.0
    heart_excl = (heart_rho <= 1.12) & above_dia
    # The lungs wrap around the vertebral body but never reach behind the spine.
    paraspinal = (np.abs(x2) / 32.0) ** 2.5 + (np.abs(y2 - _SPINE_Y - 32.0) / 36.0) ** 2.5 <= 1.0
    spine_excl = ((np.hypot(x2, y2 - _SPINE_Y) <= 21.0) | paraspinal)[None]
    hu = np.where(cavity & paraspinal[None] & (hu < 100.0), HU_MUSCLE, hu)
    base = pleura_in & (z >= z_dia + 4.0) & ~heart_excl & ~spine_excl & ~med_excl
    lungs = []
    for side in (-1.0, 1.0):  # right lung at x < 0 (patient right), left at x > 0
        cx = 62.0 * side
        apex = np.where(
            z > 170.0, ((x - cx) / 62.0) ** 2 + ((y - 8.0) / 86.0) ** 2 + ((z - 170.0) / 95.0) ** 2, 0.0
        )
        lungs.append(base & (side * x > m_half) & (apex <= 1.0))
    lung_r, lung_l = lungs
    lung = lung_r | lung_l

    # Parenchyma: dependent (posterior) density gradient + smooth texture noise.
    lo_shape = (nz, max(ny // 4, 2), max(nx // 4, 2))
    tex = ndimage.gaussian_filter(rng.standard_normal(lo_shape).astype(np.float32), (0.8, 1.0, 1.0))
    tex = ndimage.zoom(tex, np.array(g.shape) / np.array(lo_shape), order=1)
    tex *= 22.0 / max(float(tex.std()), 1e-6)
    paren = HU_LUNG + 45.0 * _smoothstep(-80.0, 85.0, y) + tex
    hu = np.where(lung, paren, hu)

    # ---- pulmonary vessels (arteries + veins) from the hila ------------------------------
    def inside_lung(p: np.ndarray) -> bool:
        k, j, i = np.rint(g.to_index(p)).astype(int)
        if not (0 <= k < nz and 0 <= j < ny and 0 <= i < nx):
            return False
        return bool(lung[k, j, i])

    segs: list[tuple[float, ...]] = []
    for side, lung_mask in ((-1.0, lung_r), (1.0, lung_l)):
        hilum = np.array([170.0, 0.0, 40.0 * side])
        trunks = [  # (direction z,y,x ; radius mm ; start offset)
            ((0.85, -0.1, 0.5 * side), 4.5, (0, 0, 0)),  # upper lobe
            ((-0.3, -0.8, 0.55 * side), 3.8, (-8, -8, 0)),  # middle lobe / lingula
            ((-0.9, 0.3, 0.35 * side), 5.0, (-6, 6, 0)),  # lower lobe
            ((-0.05, 0.9, 0.45 * side), 3.5, (-4, 10, 0)),  # superior segment
            ((0.3, 0.3, 0.9 * side), 3.2, (0, 4, 0)),  # lateral
            # veins, from the lower hilum toward the left atrium
            ((-0.6, -0.3, 0.75 * side), 4.0, (-22, 10, 5 * side)),
            ((-0.8, 0.5, 0.4 * side), 4.2, (-28, 14, 5 * side)),
            ((0.5, -0.5, 0.7 * side), 3.5, (-14, -6, 5 * side)),
        ]
        for direction, radius, offset in trunks:
            start = hilum + np.array(offset, dtype=np.float64)
            segs += _grow_tree(rng, start, direction, radius, inside_lung, min_radius=0.55)
        del lung_mask
    vessels = _render_tubes(np.array(segs), g)
    # Vessels live in the lungs; near the hila they may cross into the mediastinum.
    vessels *= lung | _near_hila(g)
    hu = hu * (1 - vessels) + HU_SOFT * vessels

    # ---- airways: trachea, main bronchi, lobar trees --------------------------------------
    aw_segs: list[tuple[float, ...]] = list(_MAIN_AIRWAYS)
    for side, end in ((-1.0, _RIGHT_BRONCHUS_END), (1.0, _LEFT_BRONCHUS_END)):
        for direction, radius in (
            ((0.85, 0.0, 0.55 * side), 4.0),
            ((-0.35, -0.75, 0.55 * side), 3.2),
            ((-0.9, 0.35, 0.3 * side), 4.5),
        ):
            aw_segs += _grow_tree(
                rng, end, direction, radius, inside_lung, min_radius=1.8, length_per_radius=(3.0, 5.0)
            )
    aw = np.array(aw_segs)
    wall_t = np.maximum(0.15 * aw[:, 6], 0.8)
    aw_wall = _render_tubes(aw + np.c_[np.zeros((len(aw), 6)), wall_t], g)
    hu = hu * (1 - aw_wall) + HU_SOFT * aw_wall
    aw_lumen = _render_tubes(aw, g)
    hu = hu * (1 - aw_lumen) + HU_AIR * aw_lumen

    return _Phantom(hu=hu, lung_right=lung_r, lung_left=lung_l)


def _near_hila(g: _Grid) -> np.ndarray:
    """Boolean region around both hila where vessels may leave the lung mask (mediastinal
    end of the pulmonary vessels), so trees connect to the central pulmonary arteries."""
    near = np.zeros(g.shape, dtype=bool)
    for side in (-1.0, 1.0):
        d = np.sqrt(((g.z - 162.0) / 30.0) ** 2 + (g.y / 28.0) ** 2 + ((g.x - 38.0 * side) / 18.0) ** 2)
        near |= d <= 1.0
    return near


# --------------------------------------------------------------------------------------
# Nodules
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PlacedNodule:
    source_patient_id: str
    source_nodule_index: int
    mask: np.ndarray  # bool, cropped, demo voxel grid
    weight: np.ndarray  # float32 soft occupancy, same crop
    corner: tuple[int, int, int]  # voxel index of mask[0,0,0] in the volume (z, y, x)
    side: str
    ratings: dict[str, float]


def _resample_shape(iso_mask: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """1 mm isotropic mask -> (bool mask, float soft weight) on the demo grid (z-y-x mm).

    Linear interpolation of the float mask with ``grid_mode=True`` (voxel boxes keep their
    physical extent), threshold 0.5 for the mask. The soft weight is the interpolated
    fraction, lightly smoothed (sigma 0.5 voxel) to give the nodule a soft edge.
    """
    padded = np.pad(iso_mask.astype(np.float32), 2)
    frac = ndimage.zoom(padded, [1.0 / s for s in spacing], order=1, mode="grid-constant", grid_mode=True)
    frac = np.pad(frac, 2)
    mask = frac >= 0.5
    weight = np.clip(ndimage.gaussian_filter(frac, 0.5), 0.0, 1.0)
    weight = np.maximum(weight, mask * 0.9)  # keep the interior solid after smoothing
    return mask, weight.astype(np.float32)


def _place_nodules(
    rng: np.random.Generator, ph: _Phantom, g: _Grid, spacing: Sequence[float], shapes: list[DemoNoduleShape]
) -> list[_PlacedNodule]:
    """Choose positions fully inside a lung, >= 6 mm from the pleura/mediastinum, not
    touching each other; the two nodules go to different lungs when there are two."""
    placed: list[_PlacedNodule] = []
    taken = np.zeros(g.shape, dtype=bool)
    sides = ["right", "left"]
    rng.shuffle(sides)
    margin_mm = 6.0
    for n, shape in enumerate(shapes):
        mask, weight = _resample_shape(shape.mask, spacing)
        # Margin ball on the demo grid (anisotropic voxels).
        rad = [max(1, math.ceil(margin_mm / s)) for s in spacing]
        zz, yy, xx = np.ogrid[-rad[0] : rad[0] + 1, -rad[1] : rad[1] + 1, -rad[2] : rad[2] + 1]
        ball = (zz * spacing[0]) ** 2 + (yy * spacing[1]) ** 2 + (xx * spacing[2]) ** 2 <= margin_mm**2
        grown = ndimage.binary_dilation(np.pad(mask, [(r, r) for r in rad]), structure=ball)
        side = sides[n % 2]
        lung = ph.lung_right if side == "right" else ph.lung_left
        # Candidate centres: lung voxels far from its border (cheap coarse distance map).
        cands = np.argwhere(lung[:, ::2, ::2]) * np.array([1, 2, 2])
        if len(cands) == 0:
            raise RuntimeError(f"the phantom has no {side} lung on this grid")
        half = np.array(grown.shape) // 2
        ok = None
        for _ in range(400):
            c = cands[rng.integers(len(cands))]
            lo = c - half
            hi = lo + np.array(grown.shape)
            if np.any(lo < 0) or np.any(hi > np.array(g.shape)):
                continue
            sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
            if np.all(lung[sl][grown]) and not np.any(taken[sl][grown]):
                ok = lo + np.array(rad)
                taken[sl] |= grown
                break
        if ok is None:
            raise RuntimeError(f"could not place nodule {n} ({shape.patient_id}) fully inside the {side} lung")
        placed.append(
            _PlacedNodule(
                source_patient_id=shape.patient_id,
                source_nodule_index=shape.nodule_index,
                mask=mask,
                weight=weight,
                corner=tuple(int(v) for v in ok),
                side=side,
                ratings=dict(shape.ratings),
            )
        )
    return placed


def _render_nodules(hu: np.ndarray, placed: list[_PlacedNodule]) -> None:
    for nod in placed:
        sl = tuple(slice(c, c + s) for c, s in zip(nod.corner, nod.mask.shape, strict=True))
        w = nod.weight
        # Solid nodule: uniform +30 HU with a little internal heterogeneity from the
        # underlying texture; the soft edge blends into the parenchyma.
        hu[sl] = hu[sl] * (1 - w) + HU_NODULE * w


def _axial_diameters(mask2d: np.ndarray, sy: float, sx: float) -> tuple[float, float]:
    """Longest in-plane diameter and the perpendicular extent (mm) of a 2D mask.

    Long axis = max distance between foreground pixel centres + one pixel (pixel extent);
    short axis = extent of the pixel centres projected on the perpendicular + one pixel.
    """
    pts = np.argwhere(mask2d) * np.array([sy, sx])
    if len(pts) == 0:
        return 0.0, 0.0
    if len(pts) == 1:
        return float(sx), float(sx)
    if len(pts) > 4000:  # keep pdist small: only the border pixels matter
        border = mask2d & ~ndimage.binary_erosion(mask2d)
        pts = np.argwhere(border) * np.array([sy, sx])
    diff = pts[:, None, :] - pts[None, :, :]
    d2 = (diff**2).sum(-1)
    i, j = np.unravel_index(int(d2.argmax()), d2.shape)
    long_vec = pts[j] - pts[i]
    long_len = float(np.sqrt(d2[i, j]))
    u = long_vec / max(long_len, 1e-9)
    perp = np.array([-u[1], u[0]])
    proj = pts @ perp
    pix = float(min(sx, sy))
    return long_len + pix, float(proj.max() - proj.min()) + pix


def _lobe(side: str, center_ref: np.ndarray, lung: np.ndarray, g: _Grid) -> str:
    """Simple, documented lobe rule on the phantom lung of the nodule's side.

    t = relative height of the nodule centre within the lung's z-extent (0 = lowest lung
    voxel, 1 = apex). Right lung: t >= 2/3 -> RUL; t < 1/3 -> RLL; in the middle third,
    anterior to the lung's mean y at that slice -> RML, else RLL. Left lung: t >= 1/2 ->
    LUL (with the lingula), else LLL.
    """
    ks = np.nonzero(lung.any(axis=(1, 2)))[0]
    zlo, zhi = g.to_ref(np.array([ks[0], 0, 0]))[0], g.to_ref(np.array([ks[-1], 0, 0]))[0]
    t = (center_ref[0] - zlo) / max(zhi - zlo, 1e-6)
    if side == "left":
        return "LUL" if t >= 0.5 else "LLL"
    if t >= 2.0 / 3.0:
        return "RUL"
    if t < 1.0 / 3.0:
        return "RLL"
    k = int(np.rint(g.to_index(center_ref)[0]))
    jj = np.nonzero(lung[k])[0]
    y_mean = g.to_ref(np.array([0, float(jj.mean()), 0]))[1]
    return "RML" if center_ref[1] < y_mean else "RLL"


def _margin_phrase(r: dict[str, float]) -> str:
    """Margin wording from the median reader ratings (LIDC scales, see NoduleRatings)."""
    if r["spiculation"] >= 3:
        return "spiculated margins"
    if r["margin"] <= 2:
        return "ill-defined margins"
    if r["lobulation"] >= 3:
        return "lobulated margins"
    if r["margin"] >= 4:
        return "smooth, well-circumscribed margins"
    return "mildly irregular margins"


def _lung_rads(size_mm: float) -> tuple[str, str]:
    """Lung-RADS-style category and management sentence for a SOLID nodule (mm)."""
    if size_mm >= 15:
        return "4B", (
            "Lung-RADS 4B (very suspicious): diagnostic chest CT with or without contrast, "
            "PET/CT and/or tissue sampling is recommended."
        )
    if size_mm >= 8:
        return "4A", "Lung-RADS 4A (suspicious): 3-month low-dose chest CT; PET/CT may be considered."
    if size_mm >= 6:
        return "3", "Lung-RADS 3 (probably benign): 6-month low-dose chest CT is recommended."
    return "2", "Lung-RADS 2 (benign appearance): continue annual screening with low-dose chest CT in 12 months."


# --------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------


def _uid(seed: int, params: str, *parts: str) -> str:
    # Deterministic: the same seed and grid give the same UIDs (generate_uid hashes the
    # entropy sources under pydicom's UID root).
    return str(generate_uid(entropy_srcs=["lungfuse-demo", str(seed), params, *parts]))


def _write_series(
    ct_dir: Path,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    seed: int,
    params: str,
) -> tuple[str, list[str]]:
    """Write one CT Image Storage file per slice; returns (series UID, SOP UIDs by k)."""
    nz, ny, nx = hu.shape
    sz, sy, sx = spacing
    study_uid = _uid(seed, params, "study")
    series_uid = _uid(seed, params, "series")
    for_uid = _uid(seed, params, "frame-of-reference")
    stored = (np.clip(np.rint(hu), -1024, 3071) + 1024).astype(np.int16)  # HU + 1024
    ct_dir.mkdir(parents=True, exist_ok=True)
    for old in ct_dir.glob("IM*.dcm"):  # a re-run must not leave stale slices behind
        old.unlink()
    sop_uids = [_uid(seed, params, "sop", str(k)) for k in range(nz)]
    for k in range(nz):
        idx = nz - 1 - k  # file / instance order: top (superior) slice first
        zpos = origin[2] + k * sz
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uids[k]
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "LUNGFUSE_010"
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uids[k]
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = _STUDY_DATE
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "090000"
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = "LungFuse"
        ds.ManufacturerModelName = "Procedural chest phantom"
        ds.InstitutionName = "LungFuse synthetic data"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "CT CHEST - SYNTHETIC DEMO"
        ds.SeriesDescription = "SYNTHETIC PHANTOM - NOT FOR DIAGNOSTIC USE"
        ds.PatientName = "Demo^Phantom"
        ds.PatientID = "LUNGFUSE-DEMO"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = f"{sz:g}"
        ds.SpacingBetweenSlices = f"{sz:g}"
        ds.KVP = "120"
        ds.ConvolutionKernel = "STANDARD"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = _SERIES_NUMBER
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = idx + 1
        ds.ImagePositionPatient = [f"{origin[0]:.4f}", f"{origin[1]:.4f}", f"{zpos:.4f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{zpos:.4f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ny
        ds.Columns = nx
        ds.PixelSpacing = [f"{sy:g}", f"{sx:g}"]  # row spacing (y), column spacing (x)
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = "-600"
        ds.WindowWidth = "1500"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.ImageComments = _DISCLAIMER_ASCII
        ds.PixelData = stored[k].tobytes()
        ds["PixelData"].VR = "OW"
        ds.save_as(ct_dir / f"IM{idx:04d}.dcm", enforce_file_format=True)
    return series_uid, sop_uids


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def _write_report(path: Path, nodules: list[dict[str, Any]], spacing: Sequence[float]) -> str:
    sz, sy, _sx = spacing
    lines = [
        "SYNTHETIC DEMO REPORT — NOT FOR DIAGNOSTIC USE",
        "",
        "EXAMINATION: CT chest without contrast (low-dose).",
        "",
        "CLINICAL INDICATION: Lung cancer screening. 64-year-old former smoker, 35 pack-years.",
        "",
        f"TECHNIQUE: Low-dose helical CT of the chest without intravenous contrast, acquired at "
        f"120 kVp. Axial images reconstructed at {sz:g} mm slice thickness with a "
        f"{sy:g} mm in-plane pixel size; coronal and sagittal reformats reviewed.",
        "",
        "COMPARISON: None available.",
        "",
        "FINDINGS:",
    ]
    if nodules:
        lines.append("Lungs and airways:")
        for i, n in enumerate(nodules):
            lead = "There is a" if i == 0 else "A second"
            sentence = (
                f"{lead} {n['diameter_mm_rounded']} x {n['short_axis_mm_rounded']} mm solid nodule with "
                f"{n['margin']} in the {_LOBE_NAMES[n['lobe']]} (series {_SERIES_NUMBER}, image "
                f"{n['instance_number']})"
            )
            sentence += ", without calcification." if i == 0 else ", also without calcification."
            lines.append(sentence)
        lines.append(
            "No other pulmonary nodules. No consolidation. The central airways are patent. "
            "No bronchiectasis."
        )
    else:
        lines.append("Lungs and airways: No pulmonary nodules. No consolidation. The central airways are patent.")
    lines += [
        "Pleura: No pleural effusion or pneumothorax.",
        "Heart and mediastinum: Normal heart size. No pericardial effusion. No mediastinal or hilar "
        "lymphadenopathy by size criteria. Normal caliber thoracic aorta.",
        "Upper abdomen: Unremarkable within the limits of a non-contrast study.",
        "Bones and soft tissues: No suspicious osseous lesion.",
        "",
        "IMPRESSION:",
    ]
    if nodules:
        worst = max(nodules, key=lambda n: n["diameter_mm"])
        for i, n in enumerate(nodules, start=1):
            lines.append(
                f"{i}. {n['diameter_mm_rounded']} mm solid nodule with {n['margin']} in the "
                f"{_LOBE_NAMES[n['lobe']]} (series {_SERIES_NUMBER}, image {n['instance_number']})."
            )
        lines.append(f"{len(nodules) + 1}. {worst['lung_rads_sentence']}")
    else:
        lines.append(
            "1. No pulmonary nodules. Lung-RADS 1 (negative): continue annual screening with "
            "low-dose chest CT in 12 months."
        )
    text = "\n".join(lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return text


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def make_demo_case(
    out_dir: str | Path,
    *,
    seed: int = 0,
    shape: tuple[int, int, int] = (112, 256, 256),
    spacing: tuple[float, float, float] = (2.5, 1.25, 1.25),
    n_nodules: int = 2,
) -> DemoCase:
    """Generate the synthetic demo chest CT with its report and ground truth.

    Parameters
    ----------
    out_dir: folder to write (created); existing ``ct/IM*.dcm`` files are replaced.
    seed: seeds everything (anatomy noise, vessel trees, nodule positions, UIDs); the same
        seed and grid give byte-identical outputs.
    shape: grid size (nz, ny, nx), z-y-x.
    spacing: voxel size (z, y, x) in mm; z is the slice spacing = slice thickness.
    n_nodules: 0, 1 or 2 nodules (shapes from LIDC-IDRI-0001 then LIDC-IDRI-0002).

    Returns
    -------
    DemoCase

    Raises
    ------
    ValueError: bad arguments.
    RuntimeError: a nodule does not fit.
    """
    if not 0 <= n_nodules <= len(DEMO_NODULE_SOURCES):
        raise ValueError(f"n_nodules must be 0..{len(DEMO_NODULE_SOURCES)}, got {n_nodules}")
    shape = tuple(int(v) for v in shape)  # type: ignore[assignment]
    spacing = tuple(float(v) for v in spacing)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be 3 sizes >= 16 (z, y, x), got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive mm values (z, y, x), got {spacing}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # Load the nodule shapes first: a missing shapes file must fail before any heavy work.
    shapes = load_demo_shapes(n_nodules) if n_nodules else []

    rng = np.random.default_rng(seed)
    g = _Grid.make(shape, spacing)
    ph = _build_phantom(rng, g)
    placed = _place_nodules(rng, ph, g, spacing, shapes)
    _render_nodules(ph.hu, placed)

    # Scanner blur (in-plane PSF) then quantum noise.
    hu = ndimage.gaussian_filter(ph.hu, (0.35, 0.7, 0.7))
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * NOISE_SIGMA_HU

    nz, ny, nx = shape
    sz, sy, sx = spacing
    origin = (-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, _ORIGIN_Z)  # LPS x, y, z of voxel (0,0,0)
    direction = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # columns: z, y, x axes

    params = f"{shape}|{spacing}|{n_nodules}"
    series_uid, sop_uids = _write_series(out / "ct", hu, spacing, origin, seed, params)

    nod_truth: list[dict[str, Any]] = []
    for nod in placed:
        idx = np.argwhere(nod.mask)
        cen = idx.mean(axis=0)
        # The centroid of a non-convex shape can fall outside it: use the nearest mask voxel.
        near = idx[int(np.argmin(((idx - cen) ** 2).sum(-1)))]
        center = np.array(nod.corner) + near
        k = int(center[0])
        lo = np.array(nod.corner) + idx.min(axis=0)
        hi = np.array(nod.corner) + idx.max(axis=0) + 1
        long_mm, short_mm = 0.0, 0.0
        for kk in range(nod.mask.shape[0]):
            lm, sm = _axial_diameters(nod.mask[kk], sy, sx)
            if lm > long_mm:
                long_mm, short_mm = lm, sm
        lung = ph.lung_right if nod.side == "right" else ph.lung_left
        lobe = _lobe(nod.side, g.to_ref(center), lung, g)
        lps = np.array(origin) + direction @ (np.array(spacing) * center)
        cat, sentence = _lung_rads(long_mm)
        nod_truth.append(
            {
                "source_patient_id": nod.source_patient_id,
                "source_nodule_index": nod.source_nodule_index,
                "center_voxel_zyx": [int(v) for v in center],
                "center_lps_mm": [round(float(v), 3) for v in lps],
                "instance_number": nz - k,
                "sop_instance_uid": sop_uids[k],
                "diameter_mm": round(long_mm, 2),
                "diameter_mm_rounded": int(round(long_mm)),
                "short_axis_mm": round(short_mm, 2),
                "short_axis_mm_rounded": int(round(short_mm)),
                "volume_mm3": round(float(nod.mask.sum()) * sz * sy * sx, 1),
                "side": nod.side,
                "lobe": lobe,
                "lobe_name": _LOBE_NAMES[lobe],
                "texture": "solid",
                "margin": _margin_phrase(nod.ratings),
                "hu": HU_NODULE,
                "bbox_voxels_zyx": {"min": [int(v) for v in lo], "max_exclusive": [int(v) for v in hi]},
                "reader_ratings_median": nod.ratings,
                "lung_rads": cat,
                "lung_rads_sentence": sentence,
            }
        )

    report_text = _write_report(out / "report.txt", nod_truth, spacing)
    truth: dict[str, Any] = {
        "note": "SYNTHETIC PHANTOM - NOT FOR DIAGNOSTIC USE",
        "generator": "lungfuse.pipelines.demo.phantom.make_demo_case",
        "seed": seed,
        "geometry": {
            "axis_order": "zyx",
            "shape_zyx": list(shape),
            "spacing_zyx_mm": list(spacing),
            "origin_lps_mm": [float(v) for v in origin],
            "direction": direction.tolist(),
            "direction_note": "row-major 3x3; COLUMNS are the LPS unit vectors of the z, y, x array axes",
            "instance_number_rule": "InstanceNumber = nz - k (InstanceNumber 1 = most superior slice)",
        },
        "series_number": _SERIES_NUMBER,
        "series_instance_uid": series_uid,
        "n_slices": nz,
        "nodules": nod_truth,
        "report_first_line": report_text.splitlines()[0],
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return DemoCase(
        out_dir=out,
        ct_dir=out / "ct",
        report_path=out / "report.txt",
        truth=truth,
        series_instance_uid=series_uid,
    )
