"""Ray-cast geometry of the synthetic rooms (room box, box, sphere, vertical cylinder) and procedural materials.

World coordinates: metres, y up, floor at y = 0. Vectors are stored component-major, ``(3, N)``: numpy is much
faster on three long rows than on N short ones. Every object primitive answers ``hit(orig, dirs)`` = the ray
parameter t of the first hit in front of the origin (``inf`` on a miss) for rays ``orig + t dirs`` from one
point ``orig`` ``(3,)`` (the camera, or the light for shadow rays) along ``dirs`` ``(3, N)``, and, at hit points
``pts`` ``(3, N)`` on its surface, ``normal(pts)`` (outward, unit, world, ``(3, N)``) and ``uv(pts)`` (texture
coordinates in metres, two arrays).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mtlx_core.data.layout import SYNTH_CLASSES

FLOOR, WALL, CEILING, BOX, SPHERE, CYLINDER, TABLE = (SYNTH_CLASSES.index(c) for c in (
    "floor", "wall", "ceiling", "box", "sphere", "cylinder", "table"))
IGNORE = -1
EPS = 1e-4
_SKY = np.array([0.78, 0.86, 1.0], np.float32)


@dataclass
class Material:
    """Procedural albedo: a pattern of two colours times low-frequency value noise, plus a specular weight."""

    c1: np.ndarray
    c2: np.ndarray
    pattern: str  # plain | checker | stripes | planks | noise
    freq: float  # pattern cells per metre
    noise: float  # amplitude of the multiplicative noise
    shift: tuple[float, float]  # offset into the noise lattice, decorrelates materials
    spec: float

    def __post_init__(self) -> None:  # texture maths runs in float32: half the memory traffic of float64
        self.c1, self.c2 = np.asarray(self.c1, np.float32), np.asarray(self.c2, np.float32)
        self.shift = (float(self.shift[0]), float(self.shift[1]))


def noise_table(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A periodic random lattice for :func:`value_noise`: ``table[c, j * size + i]`` holds the value at corner
    c = (i, j), (i+1, j), (i, j+1), (i+1, j+1); ``size`` must be a power of two."""
    g = rng.uniform(-1.0, 1.0, (size, size)).astype(np.float32)
    return np.stack([g, np.roll(g, -1, 1), np.roll(g, -1, 0), np.roll(g, (-1, -1), (0, 1))]).reshape(4, -1)


def value_noise(table: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth value noise in [-1, 1] from a :func:`noise_table`, one lattice cell per unit of x and y."""
    S = math.isqrt(table.shape[1])
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    cell = (y0.astype(np.int32) & (S - 1)) * S + (x0.astype(np.int32) & (S - 1))
    c00, c10, c01, c11 = (np.take(table[k], cell) for k in range(4))
    a = c00 + (c10 - c00) * fx
    return a + (c01 + (c11 - c01) * fx - a) * fy


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot products of the columns of two ``(3, N)`` arrays (or of one ``(3,)`` vector with them)."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def put_cols(a: np.ndarray, idx: np.ndarray, v: np.ndarray | float) -> None:
    """``a[:, idx] = v`` done row by row (numpy's own fancy assignment along axis 1 is several times slower)."""
    v = np.broadcast_to(v, (a.shape[0], len(idx)))
    for k in range(a.shape[0]):
        a[k, idx] = v[k]


def albedo(mat: Material, u: np.ndarray, v: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Colour ``(3, N)`` float32 of ``mat`` at texture coordinates ``(u, v)`` (metres)."""
    u, v = u.astype(np.float32), v.astype(np.float32)
    fu, fv = u * mat.freq, v * mat.freq
    sx, sy = mat.shift
    if mat.pattern == "checker":
        m = (np.floor(fu) + np.floor(fv)) % 2
    elif mat.pattern == "stripes":
        m = np.floor(fu) % 2
    elif mat.pattern == "planks":  # boards of random tone (one lattice value per board) with grain along them
        tone = np.take(table[0], np.floor(fu).astype(np.int32) & (table.shape[1] - 1))
        m = 0.3 * tone + 0.5 + 0.2 * value_noise(table, fu * 4 + sx, fv * 0.3)
    else:
        m = None
    gain = value_noise(table, u * 3 + sx, v * 3 + sy)
    if mat.pattern == "noise":
        gain += 0.5 * value_noise(table, u * 11 + sy, v * 11 + sx)
    gain = 1 + mat.noise * gain
    c1 = mat.c1[:, None]
    col = gain * c1 if m is None else (c1 + (mat.c2 - mat.c1)[:, None] * m) * gain
    return np.clip(col, 0.0, 1.0, out=col)


class Prim:
    """Base of the primitives: a semantic label, a material and a bounding sphere for culling."""

    label: int
    mat: Material
    centre: np.ndarray
    radius: float

    def hit(self, orig: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def normal(self, pts: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def uv(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def may_hit(self, orig: np.ndarray, dirs: np.ndarray, dd: np.ndarray) -> np.ndarray:
        """Rays from the single point ``orig`` (``dd`` = squared lengths of ``dirs``) that meet the bounding sphere
        in front of ``orig``: a superset of the rays that hit the primitive."""
        oc = orig - self.centre
        b = dot(oc, dirs)
        c = float(oc @ oc) - self.radius ** 2
        return b * b > dd * c if c < 0 else (b < 0) & (b * b > dd * c)


def _slab(d: np.ndarray, o: float, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit ray parameters of the slab ``|o + t d| <= h`` (one axis of a box)."""
    inv = 1.0 / d
    ta, tb = (-h - o) * inv, (h - o) * inv
    return np.minimum(ta, tb), np.maximum(ta, tb)


class Box(Prim):
    """A box with half sizes ``half``, centred at ``centre``, turned by ``yaw`` about the vertical axis."""

    def __init__(self, centre: tuple, half: tuple, yaw: float, label: int, mat: Material) -> None:
        self.centre, self.half = np.array(centre, float), np.array(half, float)
        self.c, self.s = math.cos(yaw), math.sin(yaw)
        self.rot = np.array([[self.c, 0, self.s], [0, 1, 0], [-self.s, 0, self.c]])  # local -> world
        self.label, self.mat, self.radius = label, mat, math.hypot(*half)

    def _to_local(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.c * x - self.s * z, self.s * x + self.c * z

    def hit(self, orig: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        o = (orig - self.centre) @ self.rot
        d = (*self._to_local(dirs[0], dirs[2]), dirs[1])
        o = (o[0], o[2], o[1])
        h = (self.half[0], self.half[2], self.half[1])
        with np.errstate(divide="ignore", invalid="ignore"):
            tmin, tmax = _slab(d[0], o[0], h[0])
            for k in (1, 2):
                lo, hi = _slab(d[k], o[k], h[k])
                tmin, tmax = np.maximum(tmin, lo), np.minimum(tmax, hi)
        return np.where((tmax >= tmin) & (tmin > EPS), tmin, np.inf)

    def _local(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Local coordinates x, y, z and the axis of the face each point lies on."""
        x, z = self._to_local(pts[0] - self.centre[0], pts[2] - self.centre[2])
        y = pts[1] - self.centre[1]
        qx, qy, qz = np.abs(x) / self.half[0], np.abs(y) / self.half[1], np.abs(z) / self.half[2]
        return x, y, z, np.where((qx >= qy) & (qx >= qz), 0, np.where(qy >= qz, 1, 2))

    def normal(self, pts: np.ndarray) -> np.ndarray:
        x, y, z, axis = self._local(pts)
        nx, nz = np.where(axis == 0, np.sign(x), 0.0), np.where(axis == 2, np.sign(z), 0.0)
        return np.stack([self.c * nx + self.s * nz, np.where(axis == 1, np.sign(y), 0.0), self.c * nz - self.s * nx])

    def uv(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y, z, axis = self._local(pts)
        return np.where(axis == 0, z, x), np.where(axis == 1, z, y)


class Sphere(Prim):
    def __init__(self, centre: tuple, radius: float, label: int, mat: Material) -> None:
        self.centre, self.radius, self.label, self.mat = np.array(centre, float), float(radius), label, mat

    def hit(self, orig: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        oc = orig - self.centre
        a, b, c = dot(dirs, dirs), dot(oc, dirs), float(oc @ oc) - self.radius ** 2
        disc = b * b - a * c
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        return np.where((disc > 0) & (t > EPS), t, np.inf)

    def normal(self, pts: np.ndarray) -> np.ndarray:
        return (pts - self.centre[:, None]) / self.radius

    def uv(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = (pts - self.centre[:, None]) / self.radius
        return np.arctan2(q[2], q[0]) * self.radius, np.arcsin(np.clip(q[1], -1, 1)) * self.radius


class Cylinder(Prim):
    """A vertical cylinder of radius ``r`` standing at floor position ``xz``, from height ``y0`` to ``y1``."""

    def __init__(self, xz: tuple, r: float, y0: float, y1: float, label: int, mat: Material) -> None:
        self.x, self.z, self.r, self.y0, self.y1 = float(xz[0]), float(xz[1]), float(r), float(y0), float(y1)
        self.label, self.mat = label, mat
        self.centre = np.array([self.x, (y0 + y1) / 2, self.z])
        self.radius = math.hypot(r, (y1 - y0) / 2)

    def hit(self, orig: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        ox, oy, oz = orig[0] - self.x, orig[1], orig[2] - self.z
        dx, dy, dz = dirs
        a, b = dx * dx + dz * dz, dx * ox + dz * oz
        disc = b * b - a * (ox * ox + oz * oz - self.r ** 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            ts = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
            y = oy + ts * dy
            t = np.where((disc > 0) & (ts > EPS) & (y >= self.y0) & (y <= self.y1), ts, np.inf)
            for yc in (self.y0, self.y1):
                tc = (yc - oy) / dy
                px, pz = ox + tc * dx, oz + tc * dz
                t = np.where((tc > EPS) & (px * px + pz * pz <= self.r ** 2) & (tc < t), tc, t)
        return t

    def _parts(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        px, py, pz = pts[0] - self.x, pts[1], pts[2] - self.z
        rho = np.hypot(px, pz)
        dcap = np.minimum(np.abs(py - self.y0), np.abs(py - self.y1))
        return px, py, pz, rho, np.abs(rho - self.r) > dcap  # True on a cap

    def normal(self, pts: np.ndarray) -> np.ndarray:
        px, py, pz, rho, cap = self._parts(pts)
        up = np.where(np.abs(py - self.y1) < np.abs(py - self.y0), 1.0, -1.0)
        rho = np.maximum(rho, 1e-9)
        return np.stack([np.where(cap, 0.0, px / rho), np.where(cap, up, 0.0), np.where(cap, 0.0, pz / rho)])

    def uv(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        px, py, pz, _, cap = self._parts(pts)
        return np.where(cap, px, np.arctan2(pz, px) * self.r), np.where(cap, pz, py)


class Room:
    """The inside of the box [-X/2, X/2] x [0, Y] x [-Z/2, Z/2] seen from within: floor, ceiling and four walls
    with a skirting board, pictures and windows (rectangles ``(face, s0, s1, y0, y1)`` in wall coordinates
    s = z on the x walls, s = x on the z walls). Face index = 2 * axis + (ray direction > 0 on that axis):
    0, 1 = walls x = -X/2, +X/2; 2 = floor; 3 = ceiling; 4, 5 = walls z = -Z/2, +Z/2."""

    def __init__(self, size: tuple[float, float, float], floor: Material, walls: list[Material],
                 ceiling: Material, windows: list[tuple], pictures: list[tuple]) -> None:
        X, Y, Z = size
        self.size, self.lo, self.hi = size, (-X / 2, 0.0, -Z / 2), (X / 2, Y, Z / 2)
        self.floor, self.walls, self.ceiling = floor, walls, ceiling  # walls: faces 0, 1, 4, 5
        self.windows, self.pictures = windows, pictures

    def hit(self, orig: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ray parameter of the exit point from inside and the face index, for rays from one point ``orig``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            best, face = self._exit(orig, dirs, 0)
            for k in (1, 2):
                t, f = self._exit(orig, dirs, k)
                closer = t < best
                best, face = np.where(closer, t, best), np.where(closer, f, face)
        return best, face

    def _exit(self, orig: np.ndarray, dirs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Ray parameter of the exit through the two walls of axis ``k`` (inf where none ahead), and the face."""
        t = (np.where(dirs[k] > 0, self.hi[k], self.lo[k]) - orig[k]) / dirs[k]
        t[~(t > 0)] = np.inf
        return t, 2 * k + (dirs[k] > 0)

    def shade(self, face: np.ndarray, pts: np.ndarray, table: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Albedo, normal (world, inward), label and specular weight at hit points; label -1 = window glass."""
        n = len(face)
        normal, label, col = np.zeros((3, n)), np.full(n, WALL), np.empty((3, n), np.float32)
        order = np.argsort(face, kind="stable")
        bounds = np.searchsorted(face[order], np.arange(7))
        for f in range(6):
            m = order[bounds[f]:bounds[f + 1]]
            if not m.size:
                continue
            normal[f // 2, m] = 1.0 - 2.0 * (f % 2)
            px, py, pz = np.take(pts, m, axis=1)
            if f in (2, 3):
                put_cols(col, m, albedo(self.floor if f == 2 else self.ceiling, px, pz, table))
                label[m] = FLOOR if f == 2 else CEILING
                continue
            s, y = (pz if f < 2 else px), py
            c = albedo(self.walls[f if f < 2 else f - 2], s, y, table)
            c = np.where(y < 0.08, 0.85 * self.ceiling.c1[:, None], c)  # skirting board
            for wf, s0, s1, y0, y1, mat in self.pictures:
                if wf == f:
                    c = np.where((s > s0) & (s < s1) & (y > y0) & (y < y1), np.float32(0.12), c)  # frame
                    inner = np.flatnonzero((s > s0 + 0.03) & (s < s1 - 0.03) & (y > y0 + 0.03) & (y < y1 - 0.03))
                    put_cols(c, inner, albedo(mat, s[inner], y[inner], table))
            for wf, s0, s1, y0, y1 in self.windows:
                if wf == f:
                    c = np.where((s > s0) & (s < s1) & (y > y0) & (y < y1), np.float32(0.92), c)  # frame, mullions
                    glass = np.flatnonzero((s > s0 + 0.05) & (s < s1 - 0.05) & (y > y0 + 0.05) & (y < y1 - 0.05) & (
                        np.abs(s - (s0 + s1) / 2) > 0.025) & (np.abs(y - (y0 + y1) / 2 - 0.2) > 0.025))
                    put_cols(c, glass, _SKY[:, None] * (0.9 + 0.1 * value_noise(table, s[glass] * 2, y[glass] * 2)))
                    label[m[glass]] = IGNORE
            put_cols(col, m, c)
        return col, normal, label, np.where(face == 2, self.floor.spec, 0.0)
