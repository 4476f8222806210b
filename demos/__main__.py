"""``python -m demos``: the Gradio demo (tracking, action localization, clip embeddings) on http://127.0.0.1:7860.

    python -m demos                                   # the package's default models
    python -m demos --tracker runs/track/tracker --localizer runs/loc/checkpoint --port 8080

Models are loaded on first use and reused. Uploads over ``--max-upload-mb`` are refused; ``--concurrency``
requests of each kind run at a time, the others wait in the queue; uploads and results are deleted
``--cache-max-age-s`` after they were written.
"""

from __future__ import annotations

import argparse
import sys

from constcl_zoo.argtypes import positive_float, positive_int
from constcl_zoo.errors import add_debug_flag, run_command

from . import DEFAULT_CACHE_MAX_AGE_S, DEFAULT_CONCURRENCY, DEFAULT_MAX_UPLOAD_MB


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=positive_int, default=7860, help="port (default: 7860)")
    p.add_argument("--tracker", default=None, help="tracking checkpoint or encoder (default: the package's tracker)")
    p.add_argument("--localizer", default=None, help="localization checkpoint (default: the package's localizer)")
    p.add_argument("--model", default=None, help="encoder of the Embeddings tab (default: the package's encoder)")
    p.add_argument("--random-init", action="store_true",
                   help="an architecture name given to --tracker / --model gets random weights (trying the demo only)")
    p.add_argument("--max-upload-mb", type=positive_float, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest upload accepted, in MB (default: {DEFAULT_MAX_UPLOAD_MB})")
    p.add_argument("--concurrency", type=positive_int, default=DEFAULT_CONCURRENCY,
                   help=f"requests of each kind run at once, the rest queue (default: {DEFAULT_CONCURRENCY})")
    p.add_argument("--cache-max-age-s", type=positive_int, default=DEFAULT_CACHE_MAX_AGE_S,
                   help=f"uploads and results are deleted this long after they were written "
                        f"(default: {DEFAULT_CACHE_MAX_AGE_S})")
    add_debug_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from .app import build_app, launch
        from .models import Models

        models = Models(tracker=args.tracker, localizer=args.localizer, encoder=args.model,
                        random_init=args.random_init)
        launch(build_app(models), host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
               concurrency=args.concurrency, cache_max_age_s=args.cache_max_age_s)
        return 0

    return run_command("python -m demos", body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
