"""The bundled trainer: Sapiens2 backbone, joint MAE + [CLS] self-distillation pretraining, heads.

Reads only WebDataset shards and their manifest; it does not depend on the curation stages.
"""
