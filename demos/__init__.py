"""Demos (run from a checkout): the Gradio tracking, action localization and embeddings demo (``python -m demos``).
Builds on ``constcl_zoo``; see :mod:`demos.app`."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the demo never phones home (set before gradio loads)

DEFAULT_MAX_UPLOAD_MB = 200
DEFAULT_CACHE_MAX_AGE_S = 3600  # uploads and results are deleted this long after they were written
DEFAULT_CONCURRENCY = 1  # CPU inference already uses every core; more parallel requests only slow each one down
