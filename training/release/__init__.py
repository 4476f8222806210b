"""Releasing weights: ``export-checkpoint`` (a run -> a ``constcl_zoo`` checkpoint folder, :mod:`.checkpoint`),
its model card (:mod:`.card`), ``publish`` to the Hugging Face Hub (:mod:`.publish`) and ``convert-tf`` (official
TensorFlow checkpoints -> checkpoint folders, :mod:`.convert_tf`). ONNX export is the separate ``export`` package.
"""
