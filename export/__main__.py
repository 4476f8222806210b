"""``python -m export {onnx,serve,triton} ...`` — see each sub-command's ``--help``.

Errors are one line and exit status 2 (``--debug`` or ``CONSTCL_ZOO_DEBUG=1``: the traceback).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from constcl_zoo.argtypes import CLI_SPELLINGS, positive_float, positive_int, resolve_deprecated
from constcl_zoo.errors import UsageError, add_debug_flag, run_command
from constcl_zoo.fileio import prepare_output_dir, prepare_output_file

from .onnx.common import PRECISIONS
from .onnx.encoder import FLOAT_PRECISIONS  # what serve / triton export a model on the way in

PROG = "python -m export"


def _add_model_args(parser: argparse.ArgumentParser, rois: bool = True, int8: bool = False) -> None:
    """The options of a model exported on the way (``onnx``; ``serve`` / ``triton`` given a model, not a file)."""
    parser.add_argument("--branch", choices=("global", "region"), default=None,
                        help="encoder branch (default: global; a task checkpoint uses its own)")
    if rois:
        parser.add_argument("--with-rois", action="store_true", help="region graph taking boxes [B, N, 4]")
    precisions = PRECISIONS if int8 else FLOAT_PRECISIONS
    parser.add_argument("--precision", choices=precisions, default=None,
                        help="the graph's numeric format: fp32 (default), fp16 (fp16 weights and compute, float32 "
                             "I/O)" + (", int8 (static quantization for CPUs: see --calibration)" if int8 else ""))
    # deprecated spellings of --precision: still accepted, with a one-line note on stderr
    parser.add_argument("--fp16", action="store_const", const="fp16", default=None, help=argparse.SUPPRESS)
    if int8:
        parser.add_argument("--int8", action="store_const", const="int8", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--random-init", action="store_true",
                        help="random weights (for a model without published weights; smoke tests)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-init")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    onnx = sub.add_parser("onnx", help="export to ONNX (self-checked with ONNX Runtime)")
    onnx.add_argument("model", help="registered name, checkpoint folder or hf-hub:org/repo")
    _add_model_args(onnx, int8=True)
    onnx.add_argument("--external-data", action="store_true", help="weights in <out>.data beside the graph")
    onnx.add_argument("--opset", type=int, default=None, help="ONNX opset (default and minimum 18)")
    onnx.add_argument("--out", required=True, help="output .onnx file")
    int8 = onnx.add_argument_group("--precision int8: a QDQ graph (per-channel int8 weights, uint8 activations) "
                                   "calibrated on --calibration (see export/quantize.py)")
    int8.add_argument("--calibration", nargs="+", default=None, metavar="VIDEO",
                      help="videos, folders or manifests (as embed takes them) whose windows calibrate the "
                           "activation ranges (without --held-out, the second half is held out for the check)")
    int8.add_argument("--held-out", nargs="+", default=None, metavar="VIDEO",
                      help="videos, folders or manifests for the int8 check (not used for calibration)")
    int8.add_argument("--calibration-windows", type=positive_int, default=32,
                      help="windows for calibration, and for the check (spread over the videos; default 32)")
    int8.add_argument("--calibration-method", choices=("minmax", "entropy", "percentile"), default="minmax",
                      help="activation range estimator (default minmax)")
    int8.add_argument("--int8-min-cosine", type=positive_float, default=0.99,
                      help="fail below this mean cosine of int8 vs fp32 PyTorch on held-out windows (default 0.99)")

    serve = sub.add_parser("serve", help="HTTP embedding service for an exported .onnx file (or a model, exported "
                                         "first to a temporary file)")
    serve.add_argument("model", help="an .onnx file written by `python -m export onnx`, or a model to export first")
    _add_model_args(serve, rois=False)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-batch", type=positive_int, default=8)
    serve.add_argument("--max-wait-ms", type=float, default=5.0)
    serve.add_argument("--max-upload-mb", type=positive_float, default=100.0)
    serve.add_argument("--max-clips", type=positive_int, default=64)
    serve.add_argument("--timeout-s", type=positive_float, default=60.0, help="per-request time limit")
    serve.add_argument("--header-timeout-s", type=positive_float, default=10.0,
                       help="a connection whose request head is not complete this long after its first byte is "
                            "closed (slow clients)")
    serve.add_argument("--body-timeout-s", type=positive_float, default=30.0,
                       help="a request body not received within this time gets 408 and the connection is closed")
    serve.add_argument("--keep-alive-s", type=positive_float, default=5.0, help="idle keep-alive connection limit")
    serve.add_argument("--max-connections", type=positive_int, default=64,
                       help="open connections; requests beyond get 503")
    serve.add_argument("--max-open-connections", type=positive_int, default=512,
                       help="sockets held open at all (at most the file-descriptor limit less 64); beyond, new "
                            "connections are closed at once")
    serve.add_argument("--decode-workers", type=positive_int, default=2, help="threads decoding uploaded videos")
    serve.add_argument("--threads", type=positive_int, default=None, help="ONNX Runtime intra-op threads")
    serve.add_argument("--provider", action="append", default=None,
                       help="ONNX Runtime provider(s) to try, in order (default: TensorRT, CUDA, CPU)")
    serve.add_argument("--model-name", default=None,
                       help="the model's name in the KServe v2 routes /v2/models/NAME (default: the .onnx file's "
                            "stem, as `triton` names it)")
    serve.add_argument("--ort-spinning", action="store_true",
                       help="let ONNX Runtime's idle threads spin between runs (off: they would take the CPU the "
                            "service needs to parse the next requests)")

    triton = sub.add_parser("triton", help="write a Triton Inference Server model repository")
    triton.add_argument("model", help="an exported .onnx file, or a model to export first (as for `onnx`)")
    _add_model_args(triton)
    triton.add_argument("--out", required=True, help="model repository folder")
    triton.add_argument("--name", default=None, help="model name in the repository (default: from MODEL)")
    triton.add_argument("--max-batch", type=positive_int, default=8)
    triton.add_argument("--max-queue-delay-us", type=int, default=2000)
    for command in (onnx, serve, triton):
        add_debug_flag(command)
    return parser


def _onnx_source(args: argparse.Namespace, tmp: str) -> Path:
    """``args.model`` itself when it is an ``.onnx`` file, else the model exported into ``tmp``."""
    from .onnx import export_from_name

    source = Path(args.model)
    if source.suffix == ".onnx":
        if not source.is_file():
            raise FileNotFoundError(f"no ONNX file at {source}; write one with `{PROG} onnx MODEL --out {source}`")
        return source
    name = getattr(args, "name", None) or source.name.replace(":", "_")
    onnx_path = Path(tmp) / f"{name}.onnx"
    export_from_name(args.model, onnx_path, branch=args.branch, with_rois=getattr(args, "with_rois", False),
                     precision=args.precision, random_init=args.random_init, seed=args.seed)
    return onnx_path


def _resolve_precision(args: argparse.Namespace) -> None:
    """``args.precision`` from ``--precision`` or its deprecated spellings ``--fp16`` / ``--int8``."""
    aliases = {"--fp16": args.fp16, "--int8": getattr(args, "int8", None)}
    args.precision = resolve_deprecated(f"{PROG} {args.command}", "--precision", args.precision, aliases, "fp32")


def _run(args: argparse.Namespace) -> int:
    _resolve_precision(args)
    if getattr(args, "with_rois", False) and args.branch != "region":
        raise UsageError("--with-rois needs --branch region (ROI features come from the region branch)")
    if args.command == "onnx":
        return _onnx_int8(args) if args.precision == "int8" else _onnx(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "triton":
        return _triton(args)
    return 2


def _onnx(args: argparse.Namespace) -> int:
    from .onnx import export_from_name

    if args.calibration or args.held_out:
        raise UsageError("--calibration and --held-out are for int8 exports; add --precision int8")
    out = prepare_output_file(args.out, "--out")
    report = export_from_name(args.model, out, branch=args.branch, with_rois=args.with_rois,
                              precision=args.precision, external_data=args.external_data, opset=args.opset,
                              random_init=args.random_init, seed=args.seed)
    print(f"wrote {report.path}: inputs {report.inputs}, outputs {report.outputs}; {report.check_line()}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .serve import ServeConfig, serve

    config = ServeConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                         max_upload_bytes=int(args.max_upload_mb * 2**20), max_clips=args.max_clips,
                         request_timeout_s=args.timeout_s, header_timeout_s=args.header_timeout_s,
                         body_timeout_s=args.body_timeout_s, keep_alive_s=args.keep_alive_s,
                         max_connections=args.max_connections,
                         max_open_connections=args.max_open_connections, decode_workers=args.decode_workers)
    with tempfile.TemporaryDirectory() as tmp:
        serve(str(_onnx_source(args, tmp)), host=args.host, port=args.port, config=config,
              threads=args.threads, providers=args.provider, model_name=args.model_name,
              spinning=args.ort_spinning)
    return 0


def _triton(args: argparse.Namespace) -> int:
    from .triton import write_repository

    out = prepare_output_dir(args.out, "--out")
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_repository(_onnx_source(args, tmp), out, name=args.name, max_batch=args.max_batch,
                                  max_queue_delay_us=args.max_queue_delay_us)
    print(f"wrote {folder}/config.pbtxt and {folder}/1/model.onnx")
    return 0


def _onnx_int8(args: argparse.Namespace) -> int:
    from .quantize import export_int8_from_name, report_line

    if not args.calibration:
        raise UsageError("--precision int8 needs --calibration VIDEO... (real videos whose windows set the int8 "
                         "ranges)")
    for flag, value in (("--with-rois", args.with_rois), ("--external-data", args.external_data)):
        if value:
            raise UsageError(f"--precision int8 does not combine with {flag}")
    from constcl_zoo.workflows.embed_run import collect_jobs

    def expand(inputs: Sequence[str]) -> list[str]:  # folders and manifests expanded, the command line's order kept
        return [str(job.source) for raw in inputs for job in collect_jobs([raw])]

    calibration = expand(args.calibration)
    held_out = expand(args.held_out) if args.held_out else None
    out = prepare_output_file(args.out, "--out")
    report = export_int8_from_name(args.model, out, calibration, branch=args.branch, random_init=args.random_init,
                                   seed=args.seed, held_out=held_out, opset=args.opset,
                                   calibration_windows=args.calibration_windows, method=args.calibration_method,
                                   min_cosine=args.int8_min_cosine)
    print(report_line(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(f"{PROG} {args.command}", lambda: _run(args), debug=args.debug, spellings=CLI_SPELLINGS)


if __name__ == "__main__":
    sys.exit(main())
