"""ROAD's noisy linear imputation (Rong et al. 2022), fast and replayable (decision D28).

pytorch-grad-cam 1.5.7's ``NoisyLinearImputer`` (and Quantus 0.6.0's ``noisy_linear_imputation``, the same
code from tleemann/road_evaluation) fills every removed pixel ``i`` by solving, for all removed pixels at once,

    s_i * v_i - sum_{removed n in N(i)} w_n v_n = sum_{kept n in N(i)} w_n x_n        (per channel)

with the 8-neighbourhood weights ``1/6`` (4-neighbours) and ``1/12`` (diagonals), ``s_i`` = 1 minus the weights
of the neighbours that fall outside the image (subtracted one by one in the table's order), then adds
``noise * N(0, 1)``. The system is built here with vectorised NumPy instead of a ``lil_matrix`` loop; it is the
same canonical CSC matrix, solved by SciPy's SuperLU in symmetric mode (the libraries' ``spsolve`` gives the
same solution up to ~1e-14 and float32 results that agree in practice; ``_solve``).

Noise conventions (what must be replayed to reproduce a library's image):

- pytorch-grad-cam: ``res = torch.tensor(spsolve(A, b), dtype=torch.float)`` of shape ``(k, C)``, removed pixels in
  ascending flat index; the image gets ``res.T + noise * torch.randn_like(res.T)`` in float32. SciPy's ``spsolve``
  returns a Fortran-ordered ``(k, C)`` array and ``torch.tensor`` keeps those strides, so ``res.T`` is contiguous
  and the draw is exactly ``torch.randn(C, k)`` from torch's global CPU generator (checked with SciPy 1.17 /
  torch 2.14). Mind the layout: a C-ordered ``res`` would make ``res.T`` non-contiguous, which torch fills with
  its serial sampler, and ``torch.randn(k, C).T`` differs from both. :func:`gradcam_noise`.
- Quantus: variables in the order of the ``indices`` it is given (the saliency order), noise
  ``np.random.randn(C, k)`` from NumPy's global legacy RNG, added in float64, then cast to the image's float32:
  :func:`quantus_noisy_linear_impute` with ``rs = np.random.RandomState(seed)``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import splu, spsolve

NEIGHBOUR_WEIGHTS: tuple[tuple[tuple[int, int], float], ...] = (
    ((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
    ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
)


def imputation_system(image: np.ndarray, removed: np.ndarray) -> tuple[csc_matrix, np.ndarray, np.ndarray]:
    """``(A, b, idx)``: the libraries' sparse system for the removed pixels ``idx`` (ascending flat indices).

    ``image`` ``(C, H, W)`` (float32 as the libraries see it: ``weight * value`` is a float32 product),
    ``removed`` ``(H, W)`` bool. ``A`` is ``(k, k)``, ``b`` is ``(k, C)`` float64.
    """
    c, h, w = image.shape
    flat_removed = np.asarray(removed, dtype=bool).reshape(-1)
    if flat_removed.size != h * w:
        raise ValueError(f"removed has shape {np.shape(removed)}, expected {(h, w)}")
    img = image.reshape(c, -1)
    idx = np.flatnonzero(flat_removed)
    k = len(idx)
    var_of = np.zeros(h * w, dtype=np.int64)
    var_of[idx] = np.arange(k)
    row, col = np.divmod(idx, w)
    b = np.zeros((k, c))
    diag = np.ones(k)
    rows, cols, vals = [np.arange(k)], [np.arange(k)], []
    for (dr, dc), weight in NEIGHBOUR_WEIGHTS:
        rr, cc = row + dr, col + dc
        valid = (rr >= 0) & (cc >= 0) & (rr < h) & (cc < w)
        ids = np.flatnonzero(valid)
        nb = (idx + dr * w + dc)[valid]
        known = ~flat_removed[nb]
        b[ids[known], :] -= weight * img[:, nb[known]].T
        rows.append(ids[~known])
        cols.append(var_of[nb[~known]])
        vals.append(np.full(len(rows[-1]), weight))
        diag[~valid] = diag[~valid] - weight
    data = np.concatenate([-diag, *vals])
    a = csc_matrix((data, (np.concatenate(rows), np.concatenate(cols))), shape=(k, k))
    return a, b, idx


def linear_impute_solution(image: np.ndarray, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(res, idx)``: float64 solution ``(k, C)`` of the noiseless system and the removed pixels' flat indices."""
    a, b, idx = imputation_system(image, removed)
    if len(idx) == 0:
        return np.zeros((0, image.shape[0])), idx
    res = _solve(a, b)
    return (res if res.ndim == 2 else res.reshape(len(idx), image.shape[0])), idx


def _solve(a: csc_matrix, b: np.ndarray) -> np.ndarray:
    """``spsolve(a, b)`` as a Fortran-ordered float64 array (the layout ``spsolve`` returns, which the noise
    draw depends on: module docstring). ``-a`` is symmetric and diagonally dominant (positive definite when
    every removed region touches a kept pixel), so SuperLU's symmetric mode (minimum degree on A + A^T, no
    pivoting) factorises it about twice as fast as ``spsolve``'s default with the same solution up to ~1e-14;
    a system SuperLU finds singular (every pixel removed) falls back to ``spsolve``, as the libraries solve it."""
    try:
        lu = splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        res = lu.solve(np.asarray(b, dtype=np.float64))
    except RuntimeError:  # exactly singular
        res = spsolve(a, b)
    return np.asfortranarray(np.asarray(res, dtype=np.float64))


def gradcam_noise(k: int, channels: int, generator: torch.Generator | None = None,
                  fortran: bool = True) -> torch.Tensor:
    """pytorch-grad-cam's draw ``torch.randn_like(res.T)`` for ``k`` removed pixels: ``(C, k)`` float32.

    ``fortran``: ``res`` is Fortran-ordered, as ``spsolve`` returns it (the draw is ``torch.randn(C, k)``);
    else C-ordered (the draw is ``torch.empty(k, C).T.normal_()``, torch's serial sampler).
    """
    if fortran:
        return torch.empty((channels, k)).normal_(generator=generator)
    return torch.empty((k, channels)).t().normal_(generator=generator)


def noisy_linear_impute(image: np.ndarray, removed: np.ndarray, noise: float = 0.01, seed: int | None = None, *,
                        generator: torch.Generator | None = None,
                        draw: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """pytorch-grad-cam's ``NoisyLinearImputer()(image, mask)`` with ``mask = ~removed``: ``(C, H, W)`` float32.

    The noise is ``draw`` ``(C, k)`` (pixels in ascending flat index) if given, else drawn as the library does
    from ``generator``, or from a fresh generator seeded with ``seed``, or from torch's global CPU generator.
    """
    img = np.ascontiguousarray(image, dtype=np.float32)
    c = img.shape[0]
    res64, idx = linear_impute_solution(img, removed)
    out = torch.from_numpy(img.reshape(c, -1).copy())
    if len(idx) == 0:
        return out.numpy().reshape(img.shape)
    res = torch.tensor(res64, dtype=torch.float)  # keeps the solution's memory layout, as the library does
    if draw is None:
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        draw_t = torch.empty_like(res.t()).normal_(generator=generator)  # = randn_like(res.T), same layout
    else:
        draw_t = torch.as_tensor(np.asarray(draw, dtype=np.float32))
        if tuple(draw_t.shape) != (c, len(idx)):
            raise ValueError(f"draw has shape {tuple(draw_t.shape)}, expected {(c, len(idx))}")
    out[:, torch.from_numpy(idx)] = res.t() + noise * draw_t
    return out.numpy().reshape(img.shape)


def quantus_noisy_linear_impute(image: np.ndarray, indices: np.ndarray, noise: float = 0.01, *,
                                rs: np.random.RandomState | None = None,
                                draw: np.ndarray | None = None) -> np.ndarray:
    """Quantus' ``noisy_linear_imputation(arr=image, indices=indices, noise=noise)``: ``(C, H, W)`` in image dtype.

    ``indices`` are flat pixel indices in the order Quantus passes them (the saliency order); the noise is
    ``draw`` ``(C, k)`` aligned with that order, else ``rs.randn(C, k)`` (``rs`` defaults to NumPy's global RNG).
    """
    c, h, w = image.shape
    indices = np.asarray(indices, dtype=np.int64)
    removed = np.zeros(h * w, dtype=bool)
    removed[indices] = True
    res64, idx = linear_impute_solution(image, removed.reshape(h, w))
    pos = np.searchsorted(idx, indices)  # row of each given index in the ascending solution
    if draw is None:
        draw = (rs.randn(c, len(indices)) if rs is not None else np.random.randn(c, len(indices)))
    out = np.copy(image.reshape(c, -1))
    out[:, indices] = res64[pos].T + noise * np.asarray(draw, dtype=np.float64)
    return out.reshape(image.shape)
