"""``python -m export {onnx,serve,triton} ...`` — see each sub-command's ``--help``."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="registered name, checkpoint folder or hf-hub:org/repo")
    parser.add_argument("--branch", choices=("global", "region"), default="global")
    parser.add_argument("--with-rois", action="store_true", help="region graph taking boxes [B, N, 4]")
    parser.add_argument("--fp16", action="store_true", help="fp16 weights and compute (float32 I/O)")
    parser.add_argument("--external-data", action="store_true", help="weights in <out>.data beside the graph")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default and minimum 18)")
    parser.add_argument("--random-init", action="store_true", help="random weights (pretrained=False)")
    parser.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    onnx = sub.add_parser("onnx", help="export to ONNX (self-checked with ONNX Runtime)")
    _add_model_args(onnx)
    onnx.add_argument("--out", required=True, help="output .onnx file")

    serve = sub.add_parser("serve", help="HTTP embedding service for an exported .onnx file")
    serve.add_argument("model", help="an .onnx file written by `python -m export onnx`")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-batch", type=int, default=8)
    serve.add_argument("--max-wait-ms", type=float, default=5.0)
    serve.add_argument("--max-upload-mb", type=float, default=100.0)
    serve.add_argument("--max-clips", type=int, default=64)
    serve.add_argument("--timeout-s", type=float, default=60.0, help="per-request time limit")
    serve.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    serve.add_argument("--provider", action="append", default=None,
                       help="ONNX Runtime provider(s) to try, in order (default: TensorRT, CUDA, CPU)")

    triton = sub.add_parser("triton", help="write a Triton Inference Server model repository")
    triton.add_argument("model", help="an exported .onnx file, or a model to export first (as for `onnx`)")
    triton.add_argument("--out", required=True, help="model repository folder")
    triton.add_argument("--name", default=None, help="model name in the repository (default: from MODEL)")
    triton.add_argument("--max-batch", type=int, default=8)
    triton.add_argument("--max-queue-delay-us", type=int, default=2000)
    triton.add_argument("--branch", choices=("global", "region"), default="global")
    triton.add_argument("--with-rois", action="store_true")
    triton.add_argument("--fp16", action="store_true")
    triton.add_argument("--random-init", action="store_true")
    triton.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "onnx":
        from .onnx_export import export_from_name

        report = export_from_name(args.model, args.out, branch=args.branch, with_rois=args.with_rois,
                                  fp16=args.fp16, external_data=args.external_data, opset=args.opset,
                                  random_init=args.random_init, seed=args.seed)
        print(f"wrote {report.path}: inputs {report.inputs}, outputs {report.outputs}; ONNX Runtime vs PyTorch "
              f"max abs diff {report.max_abs_diff:.3g} ({report.relative_diff:.3g} relative)")
        return 0
    if args.command == "serve":
        from .serve import ServeConfig, serve

        config = ServeConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                             max_upload_bytes=int(args.max_upload_mb * 2**20), max_clips=args.max_clips,
                             request_timeout_s=args.timeout_s)
        serve(args.model, host=args.host, port=args.port, config=config, threads=args.threads,
              providers=args.provider)
        return 0
    if args.command == "triton":
        from .onnx_export import export_from_name
        from .triton import write_repository

        source = Path(args.model)
        with tempfile.TemporaryDirectory() as tmp:
            if source.suffix != ".onnx":
                name = args.name or source.name.replace("/", "_").replace(":", "_")
                onnx_path = Path(tmp) / f"{name}.onnx"
                export_from_name(args.model, onnx_path, branch=args.branch, with_rois=args.with_rois,
                                 fp16=args.fp16, random_init=args.random_init, seed=args.seed)
                source = onnx_path
            folder = write_repository(source, args.out, name=args.name, max_batch=args.max_batch,
                                      max_queue_delay_us=args.max_queue_delay_us)
        print(f"wrote {folder}/config.pbtxt and {folder}/1/model.onnx")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
