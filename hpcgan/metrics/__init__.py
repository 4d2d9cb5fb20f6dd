"""Science-grade metrics of generated samples against the real data, computed across ranks.

- histogram: pixel-value distances (Kolmogorov-Smirnov, 1-Wasserstein in physical units)
- hpcgan.spectrum (shared with the spectral loss): radially averaged power spectrum
- minkowski: Minkowski functionals of excursion sets over thresholds (2-D V0..V2, 3-D V0..V3)
- frechet: Frechet (FID-style) and kernel (KID-style) distances of feature distributions
- classifier: a small CNN trained on the labelled real data (features, class coverage)
- inception: optional Inception-v3 features through torch-fidelity (local weights only)
- two_sample: classifier two-sample test (ROC AUC of a small CNN, real vs generated)
- features: per-sample high-level features and their histograms' separation power
- precision_recall: k-NN manifold precision and recall (Kynkaanniemi et al. 2019)
- memorisation: nearest-neighbour distances to the training set vs held-out data's
- table: the one table of metric facts (direction, verdict rule, what the data must have, auto
  rank); metrics the data's geometry does not support are skipped, with the reason
- verdict: whether each metric tells the samples from the data, given its noise floor
- by_condition: metrics in bins of each continuous condition, next to matched floors
- sources, stats, compare: where samples come from, their sums, the metrics from the sums
- evaluate: the Evaluator that the training loop and the command-line tools call

sklearn and scipy are imported inside the functions that use them: at the top they added about
1.5 s to the start of every rank, including runs that never evaluate.
"""
