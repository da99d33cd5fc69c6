"""The demo's procedural chest anatomy, in HU on a z-y-x grid.  SYNTHETIC DATA, NOT FOR DIAGNOSTIC USE.

Anatomy is laid out in "reference millimetres" for a 320 mm x 320 mm x 280 mm field of
view (the default grid) and scaled to the requested grid (:class:`Grid`), so a smaller grid
still holds a whole chest.  :func:`build_phantom` draws the body wall, thoracic cavity,
diaphragm and upper abdomen, heart, great vessels, spine, ribs, sternum, scapulae, both lungs
(with a dependent density gradient and texture), pulmonary vessel and airway trees
(rasterised capsules grown by a branching random walk).  Reference-mm axes: z is height above the lowest
slice (superior +), y posterior +, x patient left +.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

_REF_FOV_XY = 320.0  # mm, in-plane field of view the anatomy is laid out for
_REF_FOV_Z = 280.0  # mm, cranio-caudal coverage the anatomy is laid out for


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


# --------------------------------------------------------------------------------------
# Grid helpers
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
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
    def make(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Grid:
        nz, ny, nx = shape
        sz, sy, sx = spacing
        s_xy = min(nx * sx, ny * sy) / _REF_FOV_XY
        s_z = nz * sz / _REF_FOV_Z
        vox = (sz / s_z, sy / s_xy, sx / s_xy)
        z = (np.arange(nz, dtype=np.float32) * vox[0])[:, None, None]
        y = ((np.arange(ny, dtype=np.float32) - (ny - 1) / 2) * vox[1])[None, :, None]
        x = ((np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * vox[2])[None, None, :]
        return Grid(shape=shape, vox=vox, z=z, y=y, x=x)

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


def _render_tubes(segments: np.ndarray, grid: Grid, soft: float | None = None) -> np.ndarray:
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
    start: npt.ArrayLike,
    direction: npt.ArrayLike,
    radius: float,
    inside: Callable[[np.ndarray], bool],
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
class Phantom:
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


def build_phantom(rng: np.random.Generator, g: Grid) -> Phantom:
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

    return Phantom(hu=hu, lung_right=lung_r, lung_left=lung_l)


def _near_hila(g: Grid) -> np.ndarray:
    """Boolean region around both hila where vessels may leave the lung mask (mediastinal
    end of the pulmonary vessels), so trees connect to the central pulmonary arteries."""
    near = np.zeros(g.shape, dtype=bool)
    for side in (-1.0, 1.0):
        d = np.sqrt(((g.z - 162.0) / 30.0) ** 2 + (g.y / 28.0) ** 2 + ((g.x - 38.0 * side) / 18.0) ** 2)
        near |= d <= 1.0
    return near
