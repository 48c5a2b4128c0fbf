"""Post-training: task heads (pose, body-part segmentation, pointmap, normals, albedo) on a
pretrained Sapiens2 backbone, their losses and metrics, evaluation, inference and export."""
