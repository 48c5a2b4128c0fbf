"""PP-OCRv4 on PyTorch: the ONNX graphs rapidocr ships, converted to torch modules (onnx2torch).

Why torch and not onnxruntime's CUDA build: the torch modules run on the GPU torch already owns
in the actor (one CUDA context and allocator beside YOLO, MTCNN and CLIP), and run on the CPU
too, so the CPU tests prove the very modules a GPU node runs against onnxruntime's answers.
onnxruntime-gpu would be a second ~250 MB runtime, and it installs the same `onnxruntime`
package rapidocr depends on.

The shipped graphs keep their weights in `Constant` nodes and leave a few tensor shapes unknown;
onnx2torch wants initializers and the rank of every BatchNorm input. `_prepared` fixes both
without changing any computation (the converted detector matches onnxruntime to ~1e-7).
"""

from __future__ import annotations

import numpy as np


def _prepared(path: str):
    """The ONNX model at `path`, with Constant tensors lifted to initializers and every
    BatchNormalization input's rank declared (it follows a Conv: the rank of the Conv's weight)."""
    import onnx

    model = onnx.load(path)
    graph = model.graph
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and [a.name for a in node.attribute] == ["value"]:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    shaped = {v.name for v in graph.value_info if v.type.tensor_type.HasField("shape")}
    weights = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type != "BatchNormalization" or node.input[0] in shaped:
            continue
        conv = producer.get(node.input[0])
        if conv is None or conv.op_type != "Conv":
            raise ValueError(f"{path}: cannot tell the rank of {node.name}'s input")
        rank = len(weights[conv.input[1]].dims)
        graph.value_info.append(onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT,
                                                                   [None] * rank))
    return model


def convert(path: str, device: str = "cpu"):
    """The ONNX graph at `path` as an eval-mode torch module on `device` (float32)."""
    import warnings

    from onnx2torch import convert as onnx_to_torch

    with warnings.catch_warnings():  # onnx2torch warns about every opset it was not tested on
        warnings.simplefilter("ignore")
        return onnx_to_torch(_prepared(path)).eval().to(device)


class TorchSession:
    """What rapidocr calls to run a graph (`session(x) -> [output]`, numpy in and out), on torch.

    float32 throughout, on the GPU too: DB's probability map is thresholded at 0.3 and its boxes
    scored against 0.5, and the recogniser's confidence against `min_text_score`; half precision
    would move those decisions, and the CPU test could not see by how much.
    """

    def __init__(self, path: str, device: str = "cpu"):
        self.net = convert(path, device)
        self.device = device

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.net(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device))
        return [out.float().cpu().numpy()]
