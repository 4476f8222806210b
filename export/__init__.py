"""Deployment side (run from a checkout: ``python -m export ...``): ONNX export and ONNX-Runtime-served
embedding extraction. Builds on ``constcl_zoo``; ``constcl_zoo`` never imports this package."""
