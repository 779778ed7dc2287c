"""Fuse base + meta-model into one graph file: ONNX export of a FusedModel with the contract inside
(export.py), the model file (modelfile.py, torch-free), parity checks (verify.py) and the Triton
model repository (triton_repo.py). Upstream of it: the FusedModel module (metaerr_edge.models.fused)
and the contract (metaerr_edge.contract)."""
