"""``python -m training convert-tf SRC --out DIR``: an official TensorFlow checkpoint (CVRL or ConST-CL) -> a
constcl-zoo checkpoint folder.

SRC is a checkpoint prefix (``.../ckpt-1``), its ``.index`` file, a folder holding one checkpoint, or a published
``.tar.gz`` as downloaded. Writes ``config.json``, ``model.safetensors`` and a ``README.md`` model card, then loads
the result back with ``constcl_zoo.load`` to prove it. The conversion itself lives in ``constcl_zoo.convert`` (so
``load("/path/to/file.tar.gz")`` can use it too); this is its command line. No TensorFlow is needed. Refused or
malformed checkpoints (``ConversionError``, ``TFCheckpointError``) are one-line errors with exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constcl_zoo import load
from constcl_zoo.convert import convert_tf_checkpoint
from constcl_zoo.errors import UsageError
from constcl_zoo.registry import entry_for_source_file


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("convert-tf", help="convert an official TensorFlow checkpoint (CVRL / ConST-CL)",
                       description=__doc__.splitlines()[0].strip("`"))
    p.add_argument("source", type=Path, help="checkpoint prefix, .index file, folder or .tar.gz")
    p.add_argument("--out", type=Path, required=True, help="output checkpoint folder")
    p.add_argument("--context-length", type=int, default=5,
                   help="ConST-CL context memory length (not stored in TF checkpoints; official: 5)")
    p.add_argument("--source-url", help="where SRC was downloaded from (recorded in the model card)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a folder")
    if args.context_length < 0:
        raise UsageError(f"--context-length {args.context_length}: must be >= 0 (official: 5)")
    entry = entry_for_source_file(args.source.name)
    out = convert_tf_checkpoint(args.source, args.out, context_length=args.context_length,
                                source_url=args.source_url or (entry.source_url if entry else None),
                                name=entry.name if entry else None)
    model = load(out, branch="global")
    print(f"converted {args.source} -> {out} ({model.config.arch}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M backbone parameters)")
    return 0
