"""Fuse base + meta-model into one graph: FusedModel (fused.py), the contract carried in the file
(contract.py, pure python), ONNX export (export.py), the model file (modelfile.py, torch-free),
parity checks (verify.py) and the Triton model repository (triton_repo.py)."""
