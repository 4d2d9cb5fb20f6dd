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
of pixel squares, 2-D by nature: the evaluator accumulates them only for 2-D samples
(hpcgan.metrics.stats.Layout.minkowski).
"""

from __future__ import annotations

import numpy as np
import torch

from hpcgan.metrics import histogram

NAMES = ("V0", "V1", "V2")


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


def functionals(pixels: np.ndarray, edges_vertices: np.ndarray, thresholds: np.ndarray):
    """V0 (area fraction), V1 (boundary length per pixel) and V2 (Euler characteristic per
    pixel), [3, T], of the sets {bin >= t} for each threshold bin t.

    ``pixels`` [bins] and ``edges_vertices`` [3, bins] are the summed histograms.
    """

    def at_or_above(h: np.ndarray) -> np.ndarray:
        return np.cumsum(h[::-1])[::-1][thresholds]

    area = max(pixels.sum(), 1.0)
    faces = at_or_above(pixels)
    edges, inner = at_or_above(edges_vertices[0]), at_or_above(edges_vertices[1])
    vertices = at_or_above(edges_vertices[2])
    return np.stack([faces, edges - inner, vertices - edges + faces]) / area


def curve_errors(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per functional [3]: mean |fake - real| over thresholds, relative to the largest |real|
    (V2 changes sign, so a pointwise relative error would blow up at its zeros)."""
    scale = np.maximum(np.abs(real).max(axis=1), 1e-12)
    return np.abs(fake - real).mean(axis=1) / scale
