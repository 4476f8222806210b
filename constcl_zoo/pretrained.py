"""Published weights, and which of them each architecture's bare name means.

No ConST-CL checkpoint was ever published. The CVRL R3D-50 checkpoints of the official TF code are: they are TF2
checkpoints in tarballs (~127 MB each) on the TF Model Garden bucket, not on the Hugging Face Hub.
``load("cvrl_r3d50.<tag>")`` downloads the tarball into the cache (resumable, with a progress bar), converts it once
into ``<cache>/converted/<name>`` (recording the tarball's URL, sha256 and size) and then loads offline from there.
``load("/path/to/<file>.tar.gz")`` and ``python -m training convert-tf`` convert a tarball fetched by hand.
"""

from __future__ import annotations

from .registry import PretrainedWeights, list_pretrained, register_weights, set_default_weights, weights_entry

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
