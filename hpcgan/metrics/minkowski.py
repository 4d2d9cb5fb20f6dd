"""Minkowski functionals of excursion sets {pixel >= threshold}, for every threshold at once.

The excursion set is the union of the closed pixel squares at or above the threshold, on a
periodic grid. Then, with values replaced by their bin index (histogram.bin_index):

* a pixel is in the set iff its bin >= t;
* a grid edge (between two neighbouring pixels) is in it iff the larger of the two is >= t,
  and lies on the boundary iff the larger is >= t but the smaller is not;
* a grid vertex (shared by 2x2 pixels) is in it iff the largest of the four is >= t.

So histograms of pixel bins, edge maxima, edge minima and vertex maxima give, by reverse
cumulative sums, the area V0, the boundary length V1 and the Euler characteristic
V2 = vertices - edges + faces of the set at every threshold. Histograms add across samples and
ranks; thresholds can be chosen afterwards (quantiles of the real data). These are functionals
of pixel squares; :func:`cell_counts_3d` and :func:`functionals` do the same for volumes with
the voxel complex (unit cubes, their faces, edges and vertices), giving V0..V3 (see there). The
evaluator accumulates them for 2-D and 3-D samples (hpcgan.metrics.stats.Layout.minkowski).
"""

from __future__ import annotations

import numpy as np
import torch

from hpcgan.metrics import histogram

NAMES = ("V0", "V1", "V2")
NAMES_3D = ("V0", "V1", "V2", "V3")
CHUNK = 1 << 22  # voxels per pass of cell_counts_3d: bounds its temporary memory


def names(ndim: int) -> tuple[str, ...]:
    """The functionals of ``ndim``-dimensional samples (2 or 3)."""
    return NAMES_3D if ndim == 3 else NAMES


def rows(ndim: int) -> int:
    """Rows of the accumulated histograms: 3 in 2-D, 4 in 3-D."""
    return 4 if ndim == 3 else 3


def edge_vertex_counts(index: torch.Tensor, bins: int = histogram.BINS) -> torch.Tensor:
    """Histograms [3, bins] float64 of edge maxima, edge minima and vertex maxima.

    ``index`` is [N, C, H, W] of bin indices; each channel of each sample is one periodic map.
    """
    right = index.roll(-1, dims=-1)  # the neighbour at (i, j+1)
    down = index.roll(-1, dims=-2)  # the neighbour at (i+1, j)
    h_max, v_max = torch.maximum(index, right), torch.maximum(index, down)
    edge_max = histogram.count(h_max, bins) + histogram.count(v_max, bins)
    edge_min = histogram.count(torch.minimum(index, right), bins) + histogram.count(
        torch.minimum(index, down), bins
    )
    vertex = torch.maximum(h_max, h_max.roll(-1, dims=-2))  # max of the 2x2 block at (i, j)
    return torch.stack([edge_max, edge_min, histogram.count(vertex, bins)])


def cell_counts_3d(index: torch.Tensor, bins: int = histogram.BINS) -> torch.Tensor:
    """Histograms [4, bins] float64 of face maxima, face minima, edge maxima and vertex maxima
    of the voxel complex; ``index`` is [N, C, D, H, W] of bin indices, each channel of each
    sample one periodic volume.

    Voxel (i, j, k) owns the three faces, three edges and one vertex at its upper corner: a
    face is shared by 2 voxels, an edge by 4 (2x2 across it), a vertex by 8 (2x2x2), and each
    is in {bin >= t} iff the largest of them is. Volumes are taken a few at a time.
    """
    out = torch.zeros(4, bins, dtype=torch.float64, device=index.device)
    flat = index.reshape(-1, *index.shape[-3:])  # [N*C, D, H, W]
    step = max(1, CHUNK // max(1, flat[0].numel()))
    dims = (-3, -2, -1)
    for start in range(0, len(flat), step):
        v = flat[start : start + step]
        face = []
        for a in dims:
            nb = v.roll(-1, dims=a)
            face.append(torch.maximum(v, nb))
            out[0] += histogram.count(face[-1], bins)
            out[1] += histogram.count(torch.minimum(v, nb), bins)
        edge_01 = torch.maximum(face[0], face[0].roll(-1, dims=-2))  # edges along W
        for a, b in ((0, -1), (1, -1)):  # edges along H, along D
            out[2] += histogram.count(torch.maximum(face[a], face[a].roll(-1, dims=b)), bins)
        out[2] += histogram.count(edge_01, bins)
        vertex = torch.maximum(edge_01, edge_01.roll(-1, dims=-1))  # max of the 2x2x2 block
        out[3] += histogram.count(vertex, bins)
    return out


def functionals(pixels: np.ndarray, edges_vertices: np.ndarray, thresholds: np.ndarray):
    """Minkowski functionals per pixel (voxel), [3, T] or [4, T], of the sets {bin >= t} for
    each threshold bin t. ``pixels`` [bins] and ``edges_vertices`` [3 or 4, bins] are the
    summed histograms (:func:`edge_vertex_counts`, :func:`cell_counts_3d`).

    2-D: V0 (area fraction), V1 (boundary length per pixel), V2 (Euler characteristic per
    pixel). 3-D: with n3 cubes, n2 faces, n1 edges and n0 vertices in the set (Schmalzing &
    Buchert 1997, ApJ 482, L1, eq. 6 and 7, in units of the voxel), per voxel:
    V0 = n3 (volume fraction), V1 = 2/9 (n2 - 3 n3) (= 1/9 of the boundary faces: the surface
    area / 6 with the 2/3 that undoes, averaged over orientations, a staircase's excess area),
    V2 = 2/9 (3 n3 - 2 n2 + n1) (the integral of k1 + k2 over the surface / (6 pi), with the
    same 2/3) and V3 = n0 - n1 + n2 - n3 (the Euler characteristic). For a digitised ball of
    radius r these approach 4/3 pi r^3, 2/3 pi r^2, 4/3 r and 1.
    """

    def at_or_above(h: np.ndarray) -> np.ndarray:
        return np.cumsum(h[::-1])[::-1][thresholds]

    if len(edges_vertices) == 4:
        volume = max(pixels.sum(), 1.0)
        n3, n2 = at_or_above(pixels), at_or_above(edges_vertices[0])
        n1, n0 = at_or_above(edges_vertices[2]), at_or_above(edges_vertices[3])
        return (
            np.stack([n3, 2 / 9 * (n2 - 3 * n3), 2 / 9 * (3 * n3 - 2 * n2 + n1), n0 - n1 + n2 - n3])
            / volume
        )
    area = max(pixels.sum(), 1.0)
    faces = at_or_above(pixels)
    edges, inner = at_or_above(edges_vertices[0]), at_or_above(edges_vertices[1])
    vertices = at_or_above(edges_vertices[2])
    return np.stack([faces, edges - inner, vertices - edges + faces]) / area


def curve_errors(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per functional [3 or 4]: mean |fake - real| over thresholds, relative to the largest
    |real| (the Euler characteristic changes sign: a pointwise relative error would blow up
    at its zeros)."""
    scale = np.maximum(np.abs(real).max(axis=1), 1e-12)
    return np.abs(fake - real).mean(axis=1) / scale
