"""Deduplication algorithms used by the global `phash` and `semdedup` stages.

Plain numpy / faiss / scipy modules, one concept per file, testable without Ray:
  perceptual_hash  - 64-bit pHash of encoded bytes, at a reduced JPEG decode
  hamming_bands    - multi-index banding: candidate pairs within Hamming distance d, verified
  union_find       - connected components of verified pairs (scipy), star forests
  near_duplicates  - hashes -> near-duplicate group labels (single machine; the benchmark's path)
  keep_policy      - which member of a group is kept
  semantic         - SemDeDup: within-cluster cosine groups, one kept per group
  cache, ray_ops   - Parquet/npy caches through pyarrow.fs and Ray Data helpers shared by the
                     global stages
"""
