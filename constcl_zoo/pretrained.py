"""Published weights.

No ConST-CL checkpoint was ever published. The CVRL R3D-50 checkpoints of the official TF code are: they are TF2
checkpoints in tarballs (~127 MB each) on the TF Model Garden bucket, not on the Hugging Face Hub, so their
entries say where to download them; ``load("/path/to/<file>.tar.gz")`` (or ``python -m training convert-tf``)
converts one once into the local cache, after which ``load("<name>")`` finds it.
"""

from __future__ import annotations

from .registry import PretrainedWeights, list_pretrained, register_weights, weights_entry

_CVRL_BUCKET = "https://storage.googleapis.com/tf_model_garden/vision/cvrl"
_CVRL = {  # the first is what load("cvrl_r3d50") uses
    "k600_800ep": ("r3d_1x_k600_800ep.tar.gz", "CVRL self-supervised on Kinetics-600, 800 epochs"),
    "k400_800ep": ("r3d_1x_k400_800ep.tar.gz", "CVRL self-supervised on Kinetics-400, 800 epochs"),
    "k400_200ep": ("r3d_1x_k400_200ep.tar.gz", "CVRL self-supervised on Kinetics-400, 200 epochs"),
    "imagenet_inflated": ("imagenet.tar.gz", "R3D-50 inflated from an ImageNet-pretrained ResNet-50 (CVRL's baseline)"),
}


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
        how_to_get=(f"It is published as a TensorFlow checkpoint: download {_url} (~127 MB), then either "
                    f"load('/path/to/{_file}') — converted once into the local cache, after which "
                    f"load('cvrl_r3d50.{_tag}') works offline — or run "
                    f"`python -m training convert-tf /path/to/{_file} --out DIR` and load(DIR)."),
    ))
