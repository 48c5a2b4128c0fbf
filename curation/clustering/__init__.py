"""Clustering algorithms behind the global `cluster` and `sample` stages (and `semdedup`'s
k-means): plain numpy / faiss modules, testable without Ray.

  faiss_ops            - k-means, nearest-centroid search, normalisation; GPU when faiss sees one
  hierarchical_kmeans  - Vo et al. 2024: greedy k-means++ init, resampling steps, one level per k
  balanced_sampling    - capping allocation down the hierarchy, random / closest at the bottom
  synthetic            - planted power-law mixtures and balance measures (benchmarks, tests)
"""
