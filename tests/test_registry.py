"""The registries: explicit default weights per architecture, listing, and the errors for missing weights."""

from __future__ import annotations

import pytest

from constcl_zoo import PretrainedWeights, WeightsNotAvailableError, list_pretrained, load, register_weights
from constcl_zoo.registry import (
    default_tags,
    default_weights,
    set_default_weights,
    unregister_weights,
    weights_entry,
)

TINY = "cvrl_r3d14_w16"  # a small architecture without weights of its own
SHIPPED = ["constcl_r3d14_w16.real_cpu", "constcl_r3d14_w16.synth_cpu", "constcl_r3d14_w16.synth_cpu_localization",
           "constcl_r3d14_w16.synth_cpu_tracking"]  # the package's ConST-CL models (constcl_zoo/models)
CVRL_TAGS = ["imagenet_inflated", "k400_200ep", "k400_800ep", "k600_800ep"]


@pytest.fixture()
def tiny_entries():
    entries = [PretrainedWeights(name=f"{TINY}.{tag}", how_to_get=f"Download {tag}.tar.gz.") for tag in ("b", "a")]
    for entry in entries:
        register_weights(entry)
    yield entries
    for entry in entries:
        unregister_weights(entry.name)
    set_default_weights(TINY, None)


def test_published_defaults_are_explicit():
    assert default_tags() == {"cvrl_r3d50": "k600_800ep", "constcl_r3d14_w16": "real_cpu"}
    assert default_weights("cvrl_r3d50") is weights_entry("cvrl_r3d50.k600_800ep")
    assert default_weights("constcl_r3d14_w16") is weights_entry("constcl_r3d14_w16.real_cpu")
    assert weights_entry("siamfc_ncc.pixels").training_free  # the default tracker: a config, no architecture
    assert default_weights("constcl_r3d50") is None
    assert list_pretrained("cvrl_r3d50.*") == [f"cvrl_r3d50.{t}" for t in CVRL_TAGS]
    assert list_pretrained("constcl*") == SHIPPED


def test_registering_weights_does_not_make_a_default(tiny_entries, tmp_path):
    assert default_weights(TINY) is None
    with pytest.raises(WeightsNotAvailableError,
                       match=rf"'{TINY}' has weights \({TINY}.a, {TINY}.b\) but no default: load one by name, "
                             rf"e.g. load\('{TINY}.a'\), or name a default with "
                             rf"constcl_zoo.registry.set_default_weights\('{TINY}', TAG\)"):
        load(TINY, cache_dir=tmp_path)
    set_default_weights(TINY, "b")
    assert default_weights(TINY).name == f"{TINY}.b" and default_tags()[TINY] == "b"
    with pytest.raises(WeightsNotAvailableError, match=r"not on the Hugging Face Hub. Download b.tar.gz"):
        load(TINY, cache_dir=tmp_path)
    unregister_weights(f"{TINY}.b")  # forgetting the default weights forgets the default
    assert default_weights(TINY) is None


def test_set_default_weights_refuses_what_is_not_registered(tiny_entries):
    with pytest.raises(ValueError, match=rf"no weights {TINY}.c registered .*; {TINY} has {TINY}.a, {TINY}.b"):
        set_default_weights(TINY, "c")
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        set_default_weights("nope", "a")


def test_arch_without_weights_error_lists_what_has_weights():
    with pytest.raises(WeightsNotAvailableError) as err:
        load("constcl_r3d50")
    msg = str(err.value)
    assert msg.startswith("'constcl_r3d50' has no published weights. Names with weights: "
                          f"{', '.join(SHIPPED)}, cvrl_r3d50.imagenet_inflated")
    assert "pretrained=False" in msg
