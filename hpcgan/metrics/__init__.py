"""Science-grade metrics of generated samples against the real data, computed across ranks.

- histogram: pixel-value distances (Kolmogorov-Smirnov, 1-Wasserstein in physical units)
- hpcgan.spectrum (shared with the spectral loss): radially averaged power spectrum
- minkowski: Minkowski functionals of excursion sets over thresholds (2-D V0..V2, 3-D V0..V3)
- frechet: Frechet (FID-style) and kernel (KID-style) distances of feature distributions
- classifier: a small CNN trained on the labelled real data (features, class coverage)
- inception: optional Inception-v3 features through torch-fidelity (local weights only)
- sources, stats, compare: where samples come from, their sums, the metrics from the sums
- evaluate: the Evaluator that the training loop and the command-line tools call
"""
