"""Published weights, the models shipped inside the package, and which of them each bare name means.

The package ships a small trained ConST-CL and its tracking and localization models (``constcl_zoo/models/``,
listed with their sha256 in ``models/index.json``, written by ``python -m training install-default``): ``load()``
with no name, ``load(task="tracking")`` and ``load(task="localization")`` use them, offline.

No ConST-CL checkpoint was ever published. The CVRL R3D-50 checkpoints of the official TF code are: they are TF2
checkpoints in tarballs (~127 MB each) on the TF Model Garden bucket, not on the Hugging Face Hub.
``load("cvrl_r3d50.<tag>")`` downloads the tarball into the cache (resumable, with a progress bar), converts it once
into ``<cache>/converted/<name>`` (recording the tarball's URL, sha256 and size) and then loads offline from there.
``load("/path/to/<file>.tar.gz")`` and ``python -m training convert-tf`` convert a tarball fetched by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

from .registry import (
    PretrainedWeights,
    WeightsNotAvailableError,
    list_pretrained,
    register_weights,
    set_default_weights,
    weights_entry,
)

_CVRL_BUCKET = "https://storage.googleapis.com/tf_model_garden/vision/cvrl"
_CVRL = {
    "k600_800ep": ("r3d_1x_k600_800ep.tar.gz", "CVRL self-supervised on Kinetics-600, 800 epochs"),
    "k400_800ep": ("r3d_1x_k400_800ep.tar.gz", "CVRL self-supervised on Kinetics-400, 800 epochs"),
    "k400_200ep": ("r3d_1x_k400_200ep.tar.gz", "CVRL self-supervised on Kinetics-400, 200 epochs"),
    "imagenet_inflated": ("imagenet.tar.gz", "R3D-50 inflated from an ImageNet-pretrained ResNet-50 (CVRL's baseline)"),
}
# What load(arch) means, per architecture; an architecture absent here has no default weights.
DEFAULT_TAGS = {"cvrl_r3d50": "k600_800ep"}


def source_file(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def entry_for_source_file(filename: str) -> PretrainedWeights | None:
    """The registered weights published as ``filename`` (e.g. ``r3d_1x_k600_800ep.tar.gz``), if any."""
    for name in list_pretrained():
        entry = weights_entry(name)
        if entry.source_url and source_file(entry.source_url) == filename:
            return entry
    return None


for _tag, (_file, _description) in _CVRL.items():
    _url = f"{_CVRL_BUCKET}/{_file}"
    register_weights(PretrainedWeights(
        name=f"cvrl_r3d50.{_tag}",
        license="Apache-2.0 (TensorFlow Model Garden)",
        source_url=_url,
        description=_description + " (backbone only).",
        how_to_get=(f"It is published as a TensorFlow checkpoint (~127 MB) at {_url}: with network access "
                    f"load('cvrl_r3d50.{_tag}') downloads and converts it itself. By hand: download it, then "
                    f"load('/path/to/{_file}') (converted once into the local cache, after which "
                    f"load('cvrl_r3d50.{_tag}') works offline) or run "
                    f"`python -m training convert-tf /path/to/{_file} --out DIR` and load(DIR)."),
    ))
for _arch, _tag in DEFAULT_TAGS.items():
    set_default_weights(_arch, _tag)


# -- models shipped inside the package ------------------------------------------------------------------------------
MODELS_DIR = Path(__file__).resolve().parent / "models"
INDEX_NAME = "index.json"


def packaged_models_dir() -> Path:
    """The folder of the checkpoints shipped in the package (``constcl_zoo/models``)."""
    return MODELS_DIR


def read_index() -> dict | None:
    """``models/index.json`` (the shipped models, defaults and sample video), or ``None`` if absent."""
    path = MODELS_DIR / INDEX_NAME
    return json.loads(path.read_text()) if path.is_file() else None


_NOT_INSTALLED = ("the package's default model is not installed (no constcl_zoo/models/index.json); "
                  "reinstall constcl-zoo, or name a model, e.g. load('constcl_r3d14_w16', pretrained=False)")


def default_model_name(task: str | None = None) -> str:
    """The registered name ``load()`` uses without a name: the default tracker / localizer for those tasks, else
    the default encoder (a new task head on it for other tasks)."""
    index = read_index()
    if index is None:
        raise WeightsNotAvailableError(_NOT_INSTALLED)
    defaults = index["defaults"]
    return defaults.get(task, defaults["encoder"]) if task is not None else defaults["encoder"]


def sample_video() -> Path:
    """The short sample video shipped with the package (see ``models/index.json`` for its source and licence)."""
    index = read_index()
    if index is None or "sample" not in index:
        raise WeightsNotAvailableError(_NOT_INSTALLED)
    return MODELS_DIR / index["sample"]["file"]


def _register_packaged() -> None:
    index = read_index()
    if index is None:
        return
    for m in index["models"]:
        register_weights(PretrainedWeights(name=m["name"], package_dir=m["folder"], sha256=m["sha256"],
                                           license=m.get("license", "Apache-2.0"),
                                           description=m.get("description", ""), metrics=m.get("metrics", {}),
                                           training_free=bool(m.get("training_free", False))))
    arch, tag = index["defaults"]["encoder"].split(".", 1)
    set_default_weights(arch, tag)


_register_packaged()
