"""Model wrappers used by the per-image stages, apart from the stages themselves.

Each wrapper pins its model id, knows which weight files it needs (`weights.WeightFile`), loads on
CUDA when present and on the CPU otherwise, and exposes `__call__(inputs)`. Tests substitute a
wrapper when the point is the plumbing, and run the real one when the point is the model.
"""
