"""Convert official TensorFlow checkpoints (CVRL and ConST-CL) into constcl-zoo checkpoint folders.

Handled layouts (variable names as ``tf.train.Checkpoint`` writes them, without ``/.ATTRIBUTES/VARIABLE_VALUE``):

1. CVRL backbone checkpoints as published (``backbone/layer_with_weights-N/...``, functional ``ResNet3D``);
2. full CVRL model checkpoints (the same backbone plus ``model/layer_with_weights-1..7``: CVRL's MLP head);
3. ConST-CL trainer checkpoints (``backbone/_stem_conv``, ``backbone/_blocks/res_S/cell_I``,
   ``backbone/_res_5_1_layers/cell_I``; ``model/layer_with_weights-1/_layers/I`` global MLP;
   ``model/layer_with_weights-2/...`` instance reconstructor).

Layouts: conv kernels ``[kt, kh, kw, in, out]`` -> ``[out, in, kt, kh, kw]``; dense kernels ``[in, out]`` are
transposed; BN (gamma, beta, moving_mean, moving_variance) -> (weight, bias, running_mean, running_var). The
decoder's k/v input rows are already ordered [features 0..C-1 | temporal 8 | spatial 8] and layer>=1 q rows
[head 0 | head 1 | head 2], which is how our memory and unit concatenation are ordered, so a transpose is exact.
The architecture (width, blocks, temporal kernels, head sizes) is read from the tensor shapes; what shapes cannot
tell (the context length of the memory, a hyper-parameter) is an argument. Optimizer slots, the step counter and
the object graph are skipped; any other variable the converter does not understand is an error, never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from .card import ModelCard
from .config import BackboneConfig, GlobalHeadConfig, ModelConfig, RegionHeadConfig, custom_arch_name
from .errors import ConstclZooError
from .fileio import atomic_write
from .nn.model import build_model
from .registry import arch_config
from .tf_checkpoint import open_tf_checkpoint

_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_SKIP = re.compile(r"(^_CHECKPOINTABLE_OBJECT_GRAPH$|^global_step$|^save_counter$|^optimizer/|OPTIMIZER_SLOT)")
_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_BLOCK_PARTS = {"_temporal_conv": "temporal_conv", "_spatial_conv": "spatial_conv", "_expand_conv": "expand_conv",
                "_shortcut_conv": "shortcut_conv", "_norm0": "shortcut_bn", "_norm1": "bn1", "_norm2": "bn2",
                "_norm3": "bn3"}
LICENSE = "Apache-2.0 (TensorFlow Model Garden)"


class ConversionError(ConstclZooError, ValueError):
    """The checkpoint has variables the converter does not understand, or misses some it needs."""


def _conv(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(4, 3, 0, 1, 2)))


def _dense(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.T))


def _plain(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


class _Mapper:
    """Collects (TF name -> torch name, layout) assignments and reports every variable nobody claimed."""

    def __init__(self, names: dict[str, tuple[int, ...]]) -> None:
        self.shapes = names
        self.plan: dict[str, tuple[str, Callable[[np.ndarray], torch.Tensor]]] = {}

    def take(self, tf_name: str, torch_name: str, layout: Callable[[np.ndarray], torch.Tensor]) -> None:
        if tf_name not in self.shapes:
            raise ConversionError(f"expected variable {tf_name!r} is missing")
        self.plan[tf_name] = (torch_name, layout)

    def take_layer(self, tf_prefix: str, torch_prefix: str, kind: str) -> None:
        """A conv/dense kernel (+bias) or a BN layer under ``tf_prefix``."""
        if kind == "bn":
            for tf_attr, attr in _BN.items():
                self.take(f"{tf_prefix}/{tf_attr}", f"{torch_prefix}.{attr}", _plain)
            return
        self.take(f"{tf_prefix}/kernel", f"{torch_prefix}.weight", _conv if kind == "conv" else _dense)
        if f"{tf_prefix}/bias" in self.shapes:
            self.take(f"{tf_prefix}/bias", f"{torch_prefix}.bias", _plain)

    def unclaimed(self) -> list[str]:
        return sorted(set(self.shapes) - set(self.plan))


def _numbered(names: list[str], pattern: str) -> list[int]:
    found = {int(m.group(1)) for n in names if (m := re.match(pattern, n))}
    return sorted(found)


def _map_block(m: _Mapper, tf_block: str, torch_block: str) -> int:
    for tf_part, part in _BLOCK_PARTS.items():
        if any(n.startswith(f"{tf_block}/{tf_part}/") for n in m.shapes):
            m.take_layer(f"{tf_block}/{tf_part}", f"{torch_block}.{part}", "bn" if "norm" in tf_part else "conv")
    return m.shapes[f"{tf_block}/_temporal_conv/kernel"][0]


def _map_backbone(m: _Mapper) -> BackboneConfig:
    names = list(m.shapes)
    kernels: list[list[int]] = []
    region_branch = False
    if "backbone/_stem_conv/kernel" in m.shapes:  # ConST-CL ResNet3DY (subclassed model: attribute names)
        m.take_layer("backbone/_stem_conv", "backbone.stem.conv", "conv")
        m.take_layer("backbone/_stem_bn", "backbone.stem.bn", "bn")
        for stage in (2, 3, 4, 5):
            cells = _numbered(names, rf"backbone/_blocks/res_{stage}/cell_(\d+)/")
            kernels.append([_map_block(m, f"backbone/_blocks/res_{stage}/cell_{i}", f"backbone.res{stage}.{i}")
                            for i in cells])
        cells = _numbered(names, r"backbone/_res_5_1_layers/cell_(\d+)/")
        region = [_map_block(m, f"backbone/_res_5_1_layers/cell_{i}", f"backbone.res5_region.{i}") for i in cells]
        if region:
            region_branch = True
            if region != kernels[3]:
                raise ConversionError(f"the two res5 branches differ in temporal kernels: {kernels[3]} vs {region}")
        stem = m.shapes["backbone/_stem_conv/kernel"]
    elif "backbone/layer_with_weights-0/kernel" in m.shapes:  # CVRL functional ResNet3D: layers by index
        m.take_layer("backbone/layer_with_weights-0", "backbone.stem.conv", "conv")
        m.take_layer("backbone/layer_with_weights-1", "backbone.stem.bn", "bn")
        stage = -1
        for n in _numbered(names, r"backbone/layer_with_weights-(\d+)/_"):
            tf_block = f"backbone/layer_with_weights-{n}"
            if f"{tf_block}/_shortcut_conv/kernel" in m.shapes:  # each stage opens with a projection shortcut
                stage += 1
                kernels.append([])
            if stage < 0:
                raise ConversionError(f"{tf_block}: a residual block before the first stage")
            kernels[stage].append(_map_block(m, tf_block, f"backbone.res{stage + 2}.{len(kernels[stage])}"))
        stem = m.shapes["backbone/layer_with_weights-0/kernel"]
    else:
        raise ConversionError("no backbone found (expected backbone/_stem_conv or backbone/layer_with_weights-0)")
    if len(kernels) != 4 or not all(kernels):
        raise ConversionError(f"expected 4 residual stages, found blocks per stage {[len(k) for k in kernels]}")
    width = stem[4]
    return BackboneConfig(width=width, temporal_kernels=tuple(tuple(k) for k in kernels),
                          stem_kernel=(stem[0], stem[1], stem[2]), region_branch=region_branch)


def _map_mlp(m: _Mapper, layers: list[tuple[str, str]], torch_prefix: str, template: GlobalHeadConfig
             ) -> GlobalHeadConfig:
    """``layers``: the MLP's TF layers in order as (prefix, 'dense'|'bn'); the last must be the output Dense."""
    hidden = 0
    for i, (tf_prefix, kind) in enumerate(layers[:-1]):
        if kind == "dense":
            m.take_layer(tf_prefix, f"{torch_prefix}.hidden.{3 * hidden}", "dense")
        else:
            m.take_layer(tf_prefix, f"{torch_prefix}.hidden.{3 * hidden + 1}", "bn")
            hidden += 1
        if kind == ("dense" if i % 2 else "bn"):
            raise ConversionError(f"{tf_prefix}: expected alternating Dense and BN layers in the MLP head")
    out_prefix, kind = layers[-1]
    if kind != "dense":
        raise ConversionError(f"{out_prefix}: the MLP head must end with a Dense layer")
    m.take_layer(out_prefix, f"{torch_prefix}.out", "dense")
    first = m.shapes[f"{layers[0][0]}/kernel"] if layers[:-1] else m.shapes[f"{out_prefix}/kernel"]
    return GlobalHeadConfig(
        hidden_layers=hidden, hidden_dim=first[1], out_dim=m.shapes[f"{out_prefix}/kernel"][1],
        hidden_bias=f"{layers[0][0]}/bias" in m.shapes if layers[:-1] else template.hidden_bias,
        bn_eps=template.bn_eps, bn_momentum=template.bn_momentum, normalize_inputs=template.normalize_inputs)


def _layer_kind(m: _Mapper, prefix: str) -> str:
    return "bn" if f"{prefix}/gamma" in m.shapes else "dense"


def _map_cvrl_head(m: _Mapper, template: GlobalHeadConfig) -> GlobalHeadConfig | None:
    idx = _numbered(list(m.shapes), r"model/layer_with_weights-(\d+)/(kernel|gamma)$")
    if not idx:
        return None
    layers = [(f"model/layer_with_weights-{i}", _layer_kind(m, f"model/layer_with_weights-{i}")) for i in idx]
    return _map_mlp(m, layers, "global_head", template)


def _map_constcl_heads(m: _Mapper, global_template: GlobalHeadConfig, context_length: int
                       ) -> tuple[GlobalHeadConfig | None, RegionHeadConfig | None]:
    names = list(m.shapes)
    g = "model/layer_with_weights-1/_layers"
    idx = _numbered(names, rf"{g}/(\d+)/(kernel|gamma)$")
    global_head = _map_mlp(m, [(f"{g}/{i}", _layer_kind(m, f"{g}/{i}")) for i in idx], "global_head",
                           global_template) if idx else None
    r = "model/layer_with_weights-2"
    layers = _numbered(names, rf"{r}/_attention_decoder/_layers/(\d+)/")
    if not layers:
        return global_head, None
    heads = _numbered(names, rf"{r}/_attention_decoder/_layers/0/_mha_units/(\d+)/")
    for layer in layers:
        for head in heads:
            unit_tf = f"{r}/_attention_decoder/_layers/{layer}/_mha_units/{head}"
            unit = f"region_head.layers.{layer}.units.{head}"
            for tf_name, name in (("layer_q", "q"), ("layer_k", "k"), ("layer_v", "v"), ("ffn1", "ffn1"),
                                  ("ffn2", "ffn2")):
                m.take_layer(f"{unit_tf}/{tf_name}", f"{unit}.{name}", "dense")
            m.take(f"{unit_tf}/layer_norm/gamma", f"{unit}.norm.weight", _plain)
            m.take(f"{unit_tf}/layer_norm/beta", f"{unit}.norm.bias", _plain)
    positional = f"{r}/_temporal_mlp/0/kernel" in m.shapes
    if positional:
        for mlp in ("temporal_mlp", "spatial_mlp"):
            m.take_layer(f"{r}/_{mlp}/0", f"region_head.{mlp}.0", "dense")
            m.take_layer(f"{r}/_{mlp}/1", f"region_head.{mlp}.2", "dense")
    m.take_layer(f"{r}/_projection_layer", "region_head.projection", "dense")
    head_dim = m.shapes[f"{r}/_attention_decoder/_layers/0/_mha_units/0/layer_q/kernel"][1]
    region = RegionHeadConfig(context_length=context_length, num_layers=len(layers), num_heads=len(heads),
                              head_dim=head_dim, positional_embedding=positional,
                              vanilla_mlp=global_head or global_template)
    return global_head, region


def model_variables(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Checkpoint keys -> model variables (suffix stripped), without optimizer slots, counters or object graph."""
    names = {key.removesuffix(_SUFFIX): shape for key, shape in shapes.items()}
    return {name: shape for name, shape in names.items() if not _SKIP.search(name)}


def convert_variables(shapes: dict[str, tuple[int, ...]], read: Callable[[str], np.ndarray],
                      context_length: int = 5) -> tuple[ModelConfig, dict[str, torch.Tensor], str]:
    """Map official variables to our config and state dict.

    Args:
        shapes: TF variable name (no ``/.ATTRIBUTES/VARIABLE_VALUE``) -> shape.
        read: returns the value of a TF variable by that name.
        context_length: frames in the instance reconstructor's context memory (not stored in checkpoints).

    Returns:
        ``(config, tensors, layout)`` with layout ``"cvrl"`` or ``"constcl"``.
    """
    m = _Mapper(shapes)
    backbone = _map_backbone(m)
    if "backbone/_stem_conv/kernel" in shapes:
        layout, base = "constcl", arch_config("constcl_r3d50")
        global_head, region_head = _map_constcl_heads(m, base.global_head, context_length)
        if not backbone.region_branch and region_head is not None:
            raise ConversionError("an instance reconstructor without the backbone's region branch (_res_5_1_layers)")
    else:
        layout, base = "cvrl", arch_config("cvrl_r3d50")
        global_head, region_head = _map_cvrl_head(m, base.global_head), None
    unknown = m.unclaimed()
    if unknown:
        shown = "\n".join(f"  {n} {list(shapes[n])}" for n in unknown[:30])
        more = f"\n  ... and {len(unknown) - 30} more" if len(unknown) > 30 else ""
        raise ConversionError(f"{len(unknown)} variable(s) the converter does not understand:\n{shown}{more}")
    is_r3d50 = backbone == BackboneConfig(region_branch=backbone.region_branch)
    arch = f"{layout}_r3d50" if is_r3d50 else custom_arch_name(layout)
    config = base.replace(arch=arch, backbone=backbone, global_head=global_head or base.global_head,
                          region_head=region_head if layout == "constcl" else None)
    with torch.device("meta"):
        reference = build_model(config, "full").state_dict()
    tensors, bad = {}, []
    for tf_name, (name, layout_fn) in m.plan.items():
        tensors[name] = layout_fn(read(tf_name)).float()
        if name not in reference or reference[name].shape != tensors[name].shape:
            expected = list(reference[name].shape) if name in reference else "no such parameter"
            bad.append(f"{tf_name} -> {name}: {list(tensors[name].shape)}, model {expected}")
    if bad:
        raise ConversionError("converted tensors do not fit the inferred architecture:\n  " + "\n  ".join(bad))
    return config, tensors, layout


def convert_tf_checkpoint(source: str | Path, out_dir: str | Path, *, context_length: int = 5,
                          source_url: str | None = None, name: str | None = None) -> Path:
    """Convert ``source`` (a checkpoint prefix, ``.index`` file, folder or ``.tar.gz``) into ``out_dir``.

    Writes ``config.json``, ``model.safetensors`` and a ``README.md`` model card (a file source's sha256 and size
    recorded in both). Unknown, missing or mis-shaped variables raise :class:`ConversionError` with a listing.
    """
    from .checkpoint import sha256_of, write_checkpoint

    source = Path(source).expanduser()
    source_sha = sha256_of(source) if source.is_file() else None
    source_size = source.stat().st_size if source.is_file() else None
    with open_tf_checkpoint(source) as ckpt:
        shapes = model_variables(ckpt.shapes())
        config, tensors, layout = convert_variables(
            shapes, lambda n: ckpt.read(n + _SUFFIX if n + _SUFFIX in ckpt else n), context_length)
    parts = {"backbone"} | {k.split(".")[0] for k in tensors}
    branch = "full" if {"global_head"} <= parts else "backbone"
    provenance = {"converted_from": source_url or source.name, "source_sha256": source_sha, "layout": layout,
                  "license": LICENSE, "converted_at": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                  "converter": "constcl_zoo.convert"}
    if name:
        provenance["name"] = name
    if source_size is not None:
        provenance["source_size"] = source_size
    config = config.replace(provenance=provenance)
    out_dir = write_checkpoint(config, tensors, out_dir, branch=branch)
    atomic_write(out_dir / "README.md", model_card(config, len(shapes), branch))
    return out_dir


def model_card(config: ModelConfig, num_variables: int, branch: str) -> str:
    """A Hub model card for a converted checkpoint (:class:`~constcl_zoo.card.ModelCard`)."""
    p = config.provenance
    pre = config.preprocess
    heads = "backbone only (no SSL heads)" if branch == "backbone" else "backbone and SSL heads"
    card = ModelCard(tags=("video", "self-supervised", config.family, "r3d"))
    card.title(f"{p.get('name') or config.arch} (converted from the official TensorFlow checkpoint)")
    card.add(f"- Source: {p['converted_from']}" + (f" (sha256 {p['source_sha256']})" if p.get("source_sha256") else ""))
    if p.get("source_size") is not None:
        card.add(f"- Size: {p['source_size']} bytes")
    card.add(f"- License: {p['license']}",
             f"- Architecture: `{config.arch}` ({config.family}), {heads}; {num_variables} TF variables converted on",
             f"  {p['converted_at']} by `constcl_zoo.convert` (conv kernels permuted to [out, in, t, h, w], dense "
             "kernels",
             "  transposed, BN statistics kept).",
             f"- Preprocessing: {pre.num_frames} frames every {pre.frame_stride}, short side {pre.resize_short_side}, "
             "centre crop",
             f"  {pre.crop_size}, values in {list(pre.value_range)}.", "")
    return card.code("python", "from constcl_zoo import load",
                     f'model = load("path/to/this/folder", branch="global")   # clip embeddings [B, '
                     f'{config.feature_dim}]').render()
