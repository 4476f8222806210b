"""Convert an official TensorFlow checkpoint (CVRL or ConST-CL) into a constcl-zoo checkpoint folder.

    python -m training.convert_tf SRC --out DIR [--context-length 5] [--source-url URL]

SRC is a checkpoint prefix (``.../ckpt-1``), its ``.index`` file, a folder holding one checkpoint, or a published
``.tar.gz`` as downloaded. Writes ``config.json``, ``model.safetensors`` and a ``README.md`` model card, then loads
the result back with ``constcl_zoo.load`` to prove it. The conversion itself lives in ``constcl_zoo.convert`` (so
``load("/path/to/file.tar.gz")`` can use it too); this is its command line. No TensorFlow is needed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from constcl_zoo import load
from constcl_zoo.convert import ConversionError, convert_tf_checkpoint
from constcl_zoo.pretrained import entry_for_source_file
from constcl_zoo.tf_checkpoint import TFCheckpointError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.convert_tf", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="checkpoint prefix, .index file, folder or .tar.gz")
    parser.add_argument("--out", type=Path, required=True, help="output checkpoint folder")
    parser.add_argument("--context-length", type=int, default=5,
                        help="ConST-CL context memory length (not stored in TF checkpoints; official: 5)")
    parser.add_argument("--source-url", help="where SRC was downloaded from (recorded in the model card)")
    args = parser.parse_args(argv)
    entry = entry_for_source_file(args.source.name)
    try:
        out = convert_tf_checkpoint(args.source, args.out, context_length=args.context_length,
                                    source_url=args.source_url or (entry.source_url if entry else None),
                                    name=entry.name if entry else None)
    except (ConversionError, TFCheckpointError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model = load(out, branch="global")
    print(f"converted {args.source} -> {out} ({model.config.arch}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M backbone parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
