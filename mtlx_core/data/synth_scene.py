"""Ray-cast synthetic indoor rooms: one RGB-D frame with labels and normals, vectorised numpy.

Conventions (recorded in the dataset's meta.json):

- World: metres, y up, floor at y = 0; the room is the box [-X/2, X/2] x [0, Y] x [-Z/2, Z/2].
- Camera: pinhole, x right, y down, z forward. Pixel (u, v) = (column, row) index looks along
  ((u - cx) / fx, (v - cy) / fy, 1), so a pixel with depth Z back-projects to
  X = (u - cx) Z / fx, Y = (v - cy) Z / fy.
- depth = camera z of the first hit (not the ray length), metres; 0 = invalid.
- normal = true surface normal of the hit surface in camera coordinates, unit length, pointing toward the
  camera (n . ray < 0); all-zero = invalid.
- label = index into ``SYNTH_CLASSES``. Window glass is -1 (ignore) with depth 0 and zero normal (no sensor
  return); Kinect-like holes (blobs, far side of depth edges) keep their label but lose depth and normal.
"""

from __future__ import annotations

import colorsys
import math
import random
from dataclasses import dataclass

import numpy as np

from mtlx_core.data.synth_prims import (
    BOX,
    CYLINDER,
    IGNORE,
    SPHERE,
    TABLE,
    Box,
    Cylinder,
    Material,
    Prim,
    Room,
    Sphere,
    albedo,
    dot,
    noise_table,
    put_cols,
)

FX_PER_WIDTH = 0.81  # fx / width, as the NYUv2 Kinect (518.8 / 640): about 63 degrees horizontal field of view


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (see the module docstring for the pixel convention)."""

    fx: float
    fy: float
    cx: float
    cy: float


def camera_intrinsics(height: int, width: int) -> Intrinsics:
    """The fixed intrinsics of a ``height x width`` synthetic frame (square pixels, centred principal point)."""
    f = FX_PER_WIDTH * width
    return Intrinsics(fx=f, fy=f, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0)


@dataclass
class Scene:
    """Everything one frame needs: the room, camera pose, light and objects."""

    room: Room
    origin: np.ndarray  # camera centre, world
    cam_to_world: np.ndarray  # columns: camera right, down, forward in world coordinates
    light: np.ndarray
    light_power: float
    ambient: float
    prims: list[Prim]


# Scene parameters are drawn with Python's random (much cheaper per scalar than numpy's Generator), seeded
# from the frame's numpy Generator, so a frame stays a pure function of its seed.
def _colour(r: random.Random, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(r.random(), r.uniform(*sat), r.uniform(*val)))


def _material(r: random.Random, patterns: tuple[str, ...], sat: tuple[float, float], val: tuple[float, float],
              freq: tuple[float, float], spec: float = 0.0) -> Material:
    c1 = _colour(r, sat, val)
    c2 = c1 * r.uniform(0.45, 0.8) if r.random() < 0.6 else _colour(r, sat, val)
    return Material(c1, c2, r.choice(patterns), r.uniform(*freq), r.uniform(0.04, 0.25),
                    (r.uniform(0, 100), r.uniform(0, 100)), spec * r.random())


def _object_material(r: random.Random) -> Material:
    return _material(r, ("plain", "plain", "checker", "stripes", "noise", "planks"), (0.15, 0.9), (0.3, 0.95),
                     (3.0, 12.0), spec=0.35)


def _place(r: random.Random, taken: list[tuple[float, float, float]], radius: float, size: tuple,
           z_min: float) -> tuple[float, float] | None:
    """A free floor position (x, z) for a footprint of ``radius``, or None after a few tries."""
    X, _, Z = size
    for _ in range(25):
        x = r.uniform(-X / 2 + radius + 0.02, X / 2 - radius - 0.02)
        z = r.uniform(min(z_min + radius, Z / 2 - radius - 0.02), Z / 2 - radius - 0.02)
        if all(math.hypot(x - tx, z - tz) > radius + tr + 0.05 for tx, tz, tr in taken):
            taken.append((x, z, radius))
            return x, z
    return None


def _camera(r: random.Random, size: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre near the z = -Z/2 wall, looking roughly along +z: random yaw, downward pitch, small roll.

    The ranges are those of a person holding a camera at chest height and looking a little down into the room
    (like NYUv2's Kinect sweeps); they are kept narrow so that the CPU-sized demo models can learn the geometry
    in a couple of minutes. Generator 3 narrowed the height (1.3-1.5 m before) and lowered the pitch (0.12-0.3
    before): with the horizon row and the camera height nearly fixed, the image row where the floor meets a wall or
    an object tells its distance (docs/demo_tuning.md, round 4). Generator 4 narrowed the yaw (+-0.35 before) and
    the sideways offset (+-0.25 X before): side walls, whose depth changes along the wall, were a quarter of the
    demo models' depth error (round 5)."""
    X, _, Z = size
    origin = np.array([r.uniform(-0.15, 0.15) * X, r.uniform(1.38, 1.42), -Z / 2 + r.uniform(0.3, 0.8)])
    yaw, pitch, roll = r.uniform(-0.2, 0.2), r.uniform(0.27, 0.33), r.uniform(-0.04, 0.04)
    cp, sp = math.cos(pitch), math.sin(pitch)
    right, down, fwd = np.array([1.0, 0, 0]), np.array([0, -cp, -sp]), np.array([0, -sp, cp])
    right, down = math.cos(roll) * right + math.sin(roll) * down, -math.sin(roll) * right + math.cos(roll) * down
    cy, sy = math.cos(yaw), math.sin(yaw)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return origin, ry @ np.stack([right, down, fwd], axis=1)


def _table(r: random.Random, taken: list, size: tuple, z_min: float) -> list[Prim]:
    """A table top on four legs (all labelled table), sometimes with small spheres and cylinders on it."""
    w, d, h, top = r.uniform(0.8, 1.6), r.uniform(0.6, 1.0), r.uniform(0.68, 0.8), r.uniform(0.03, 0.06)
    pos = _place(r, taken, math.hypot(w, d) / 2, size, z_min)
    if pos is None:
        return []
    yaw = r.uniform(-math.pi, math.pi)
    mat = _material(r, ("planks", "plain", "noise"), (0.1, 0.7), (0.25, 0.9), (6.0, 14.0), spec=0.3)
    c, s = math.cos(yaw), math.sin(yaw)
    prims: list[Prim] = [Box((pos[0], h - top / 2, pos[1]), (w / 2, top / 2, d / 2), yaw, TABLE, mat)]
    leg = r.uniform(0.02, 0.04)
    for lx in (-1, 1):
        for lz in (-1, 1):
            ox, oz = lx * (w / 2 - leg - 0.04), lz * (d / 2 - leg - 0.04)
            prims.append(Box((pos[0] + c * ox + s * oz, (h - top) / 2, pos[1] - s * ox + c * oz),
                             (leg, (h - top) / 2, leg), yaw, TABLE, mat))
    for _ in range(r.randrange(3)):
        ox, oz = r.uniform(-0.35, 0.35) * w, r.uniform(-0.35, 0.35) * d
        x, z = pos[0] + c * ox + s * oz, pos[1] - s * ox + c * oz
        if r.random() < 0.5:
            rad = r.uniform(0.06, 0.14)
            prims.append(Sphere((x, h + rad, z), rad, SPHERE, _object_material(r)))
        else:
            rad = r.uniform(0.04, 0.1)
            prims.append(Cylinder((x, z), rad, h, h + r.uniform(0.1, 0.35), CYLINDER, _object_material(r)))
    return prims


def _openings(r: random.Random, size: tuple) -> tuple[list, list]:
    """Windows (likely on the far wall, sometimes on a side wall) and framed pictures on random walls."""
    X, Y, Z = size
    windows = []
    for face, p in ((5, 0.8), (r.randrange(2), 0.35)):
        if r.random() < p:
            half = (X if face >= 4 else Z) / 2
            w = r.uniform(0.7, min(1.8, half))
            s0, y0 = r.uniform(-half + 0.2, half - 0.2 - w), r.uniform(0.6, 1.0)
            windows.append((face, s0, s0 + w, y0, min(Y - 0.2, y0 + r.uniform(1.0, 1.6))))
    pictures = []
    for _ in range(r.randrange(4)):
        face = r.choice((0, 1, 4, 5))
        half = (X if face >= 4 else Z) / 2
        w, h = r.uniform(0.3, 1.0), r.uniform(0.3, 0.8)
        s0, y0 = r.uniform(-half + 0.1, half - 0.1 - w), r.uniform(1.0, min(Y - 0.3 - h, 1.8))
        mat = _material(r, ("noise", "stripes", "checker"), (0.2, 1.0), (0.2, 1.0), (2.0, 10.0))
        pictures.append((face, s0, s0 + w, y0, y0 + h, mat))
    return windows, pictures


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw a random room, camera pose, light, objects, windows and pictures."""
    r = random.Random(int(rng.integers(2**63)))
    size = (r.uniform(4.0, 6.0), r.uniform(2.6, 3.0), r.uniform(4.5, 6.5))
    X, Y, Z = size
    origin, cam_to_world = _camera(r, size)
    taken: list[tuple[float, float, float]] = [(origin[0], origin[2], 0.5)]  # keep objects off the camera
    # objects stand at least 1.6 m ahead of the camera: nearer ones have their foot below the bottom image row
    # (nothing in the frame tells their distance), and were a third of the demo models' depth error
    z_min = origin[2] + 1.6
    prims: list[Prim] = _table(r, taken, size, z_min) if r.random() < 0.75 else []
    # boxes at most 0.7 m and cylinders at most 0.6 m tall (generator 4; 1.5 m and 1.3 m before): a tall object's
    # upper pixels are far from the floor contact that tells its depth, and objects were the demo models' largest
    # depth error after the side walls (docs/demo_tuning.md, round 5)
    for _ in range(r.randrange(1, 4)):
        sx, sz, sy = r.uniform(0.15, 0.5), r.uniform(0.15, 0.5), r.uniform(0.15, 0.35)
        pos = _place(r, taken, math.hypot(sx, sz), size, z_min)
        if pos is None:
            continue
        prims.append(Box((pos[0], sy, pos[1]), (sx, sy, sz), r.uniform(-math.pi, math.pi), BOX, _object_material(r)))
        if r.random() < 0.3:  # a smaller box stacked on top
            s2 = (r.uniform(0.5, 0.9) * sx, r.uniform(0.1, 0.3), r.uniform(0.5, 0.9) * sz)
            prims.append(Box((pos[0], 2 * sy + s2[1], pos[1]), s2, r.uniform(-math.pi, math.pi), BOX,
                             _object_material(r)))
    for _ in range(r.randrange(3)):
        rad = r.uniform(0.12, 0.45)
        pos = _place(r, taken, rad, size, z_min)
        if pos is not None:
            prims.append(Sphere((pos[0], rad, pos[1]), rad, SPHERE, _object_material(r)))
    for _ in range(r.randrange(3)):
        rad = r.uniform(0.08, 0.35)
        pos = _place(r, taken, rad, size, z_min)
        if pos is not None:
            prims.append(Cylinder(pos, rad, 0.0, r.uniform(0.25, 0.6), CYLINDER, _object_material(r)))
    windows, pictures = _openings(r, size)
    wall = _material(r, ("plain", "noise", "stripes"), (0.0, 0.35), (0.55, 0.95), (3.0, 10.0))
    walls = [_material(r, ("plain", "noise"), (0.1, 0.7), (0.3, 0.9), (3.0, 8.0)) if r.random() < 0.15  # accent
             else Material(wall.c1 * r.uniform(0.9, 1.05), wall.c2, wall.pattern, wall.freq, wall.noise, wall.shift,
                           0.0) for _ in range(4)]
    floor = _material(r, ("planks", "planks", "checker", "noise"), (0.05, 0.6), (0.2, 0.85), (2.0, 6.0), 0.15)
    ceiling = _material(r, ("plain", "noise"), (0.0, 0.1), (0.8, 0.97), (1.0, 3.0))
    return Scene(
        room=Room(size, floor, walls, ceiling, windows, pictures), origin=origin, cam_to_world=cam_to_world,
        light=np.array([r.uniform(-0.3, 0.3) * X, Y - 0.05, r.uniform(-0.2, 0.4) * Z]),
        light_power=r.uniform(1.0, 1.6), ambient=r.uniform(0.35, 0.5), prims=prims,
    )


def _kinect_holes(rng: np.random.Generator, depth: np.ndarray) -> np.ndarray:
    """Mask of Kinect-like missing depth: the far side left of depth edges, and a few random blobs."""
    H, W = depth.shape
    holes = np.zeros((H, W), bool)
    jump = depth[:, :-1] - depth[:, 1:] > 0.15 + 0.03 * depth[:, :-1]  # right neighbour much nearer
    holes[:, :-1] = jump & (rng.uniform(size=jump.shape) < 0.7)
    holes[:, :-2] |= holes[:, 1:-1] & (rng.uniform(size=(H, W - 2)) < 0.4)
    for _ in range(rng.integers(0, 4)):
        cv, cu = rng.uniform(0, H), rng.uniform(0, W)
        rv, ru = rng.uniform(0.01, 0.05, 2) * W
        v0, v1, u0, u1 = max(int(cv - rv), 0), min(int(cv + rv) + 1, H), max(int(cu - ru), 0), min(int(cu + ru) + 1, W)
        vv, uu = np.ogrid[v0:v1, u0:u1]
        holes[v0:v1, u0:u1] |= ((vv - cv) / rv) ** 2 + ((uu - cu) / ru) ** 2 < 1
    return holes


def _groups(keys: np.ndarray, n: int) -> list[np.ndarray]:
    """Indices of the elements whose key is -1, 0, ..., n - 1 (one sort instead of n boolean masks)."""
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(-1, n + 1))
    return [order[bounds[k]:bounds[k + 1]] for k in range(n + 1)]


def render_frame(rng: np.random.Generator, height: int, width: int) -> dict[str, np.ndarray]:
    """Render one random frame: ``image`` HxWx3, ``label`` HxW, ``depth`` HxWx1, ``normal`` HxWx3 (float32)."""
    scene = sample_scene(rng)
    table = noise_table(rng)
    K = camera_intrinsics(height, width)
    N = height * width
    ray_cam = np.ones((3, N))  # component-major, like everything below
    ray_cam[0] = np.tile((np.arange(width) - K.cx) / K.fx, height)
    ray_cam[1] = np.repeat((np.arange(height) - K.cy) / K.fy, width)
    rays, orig = scene.cam_to_world @ ray_cam, scene.origin
    t, face = scene.room.hit(orig, rays)  # t is the camera z of the hit because ray_cam has z = 1
    owner, dd = np.full(N, -1), dot(rays, rays)
    for j, prim in enumerate(scene.prims):
        idx = np.flatnonzero(prim.may_hit(orig, rays, dd))
        if idx.size:
            tj = prim.hit(orig, np.take(rays, idx, axis=1))
            closer = tj < t[idx]
            t[idx[closer]], owner[idx[closer]] = tj[closer], j
    pts = rays * t
    pts += orig[:, None]
    col, nrm = np.empty((3, N), np.float32), np.empty((3, N))
    spec, label = np.zeros(N), np.empty(N, np.int64)
    room, *objects = _groups(owner, len(scene.prims))
    c, n, label[room], spec[room] = scene.room.shade(face[room], np.take(pts, room, axis=1), table)
    put_cols(col, room, c)
    put_cols(nrm, room, n)
    for prim, idx in zip(scene.prims, objects, strict=True):
        if idx.size:
            p = np.take(pts, idx, axis=1)
            put_cols(nrm, idx, prim.normal(p))
            put_cols(col, idx, albedo(prim.mat, *prim.uv(p), table))
            label[idx], spec[idx] = prim.label, prim.mat.spec
    # Lambert + ambient + a little Blinn-Phong from one ceiling light, with hard shadows. Shadow rays go from the
    # light (one origin, so bounding-sphere culling works) to just above each lit point.
    to_light = scene.light[:, None] - pts
    dist = np.sqrt(dot(to_light, to_light))
    ndl = dot(nrm, to_light) / dist
    lit = np.flatnonzero(ndl > 0)
    dirs = np.take(pts, lit, axis=1) + 1e-3 * np.take(nrm, lit, axis=1) - scene.light[:, None]
    dd_lit, shadow = dot(dirs, dirs), np.zeros(len(lit), bool)
    for prim in scene.prims:
        idx = np.flatnonzero(prim.may_hit(scene.light, dirs, dd_lit) & ~shadow)
        if idx.size:
            shadow[idx[prim.hit(scene.light, np.take(dirs, idx, axis=1)) < 1.0]] = True
    lit = lit[~shadow]
    r2 = ((np.arange(width) - K.cx) / width) ** 2 + ((np.arange(height)[:, None] - K.cy) / width) ** 2
    gain = rng.uniform(0.85, 1.15) * (1.0 - 0.6 * r2).ravel()  # exposure and vignetting
    shade = np.full(N, scene.ambient)
    shade[lit] += scene.light_power * ndl[lit] / (1.0 + (dist[lit] / 4.0) ** 2)
    glass = label == IGNORE
    shade[glass] = 1.0  # the window shows the bright outside, unshaded
    shiny = lit[spec[lit] > 0]
    half = np.take(to_light, shiny, axis=1) / dist[shiny] - np.take(rays, shiny, axis=1) / np.sqrt(dd[shiny])
    ndh = np.maximum(dot(np.take(nrm, shiny, axis=1), half) / np.sqrt(dot(half, half)), 0.0)
    highlight = np.zeros(N)
    highlight[shiny] = spec[shiny] * ndh ** 40
    img = col * (shade * gain).astype(np.float32)
    img += (highlight * gain).astype(np.float32)
    img = np.ascontiguousarray(img.reshape(3, height, width).transpose(1, 2, 0))
    img += np.float32(0.01) * rng.standard_normal(img.shape, dtype=np.float32)
    # Outputs in camera coordinates; invalid pixels: glass and Kinect holes.
    nrm_cam = scene.cam_to_world.T @ nrm
    nrm_cam *= np.where(dot(nrm_cam, ray_cam) > 0, -1.0, 1.0)
    depth = t.reshape(height, width)
    invalid = glass.reshape(height, width) | _kinect_holes(rng, depth)
    nrm_cam[:, invalid.ravel()] = 0.0
    return {
        "image": np.clip(img, 0.0, 1.0, out=img),
        "label": label.reshape(height, width).astype(np.float32),
        "depth": np.where(invalid, 0.0, depth)[:, :, None].astype(np.float32),
        "normal": np.ascontiguousarray(nrm_cam.reshape(3, height, width).transpose(1, 2, 0), dtype=np.float32),
    }
