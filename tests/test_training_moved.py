"""The training package's old module paths and names (``training._moved``) keep working with a DeprecationWarning
that names the new ones; tests/test_import_graph.py checks that the repository itself uses only the new paths."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

import training
from training._moved import MOVED, RENAMED, SPLIT


def _fresh_import(old: str):
    for name in [n for n in sys.modules if n == old or n.startswith(old + ".")]:
        del sys.modules[name]
    return importlib.import_module(old)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_module_imports_as_the_new_one_with_a_warning(old):
    new = importlib.import_module(MOVED[old])
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated: it moved to {MOVED[old]}") as caught:
        module = _fresh_import(old)
    assert module is new and module.__name__ == module.__spec__.name == MOVED[old]
    assert caught[0].filename == __file__  # the warning points at the import


@pytest.mark.parametrize("old", sorted(SPLIT))
def test_a_split_module_finds_each_name_where_it_went(old):
    sources, renames = SPLIT[old]
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated: its contents moved to"):
        view = _fresh_import(old)
    modules = [importlib.import_module(s) for s in sources]
    for old_name, new_name in renames.items():
        assert getattr(view, old_name) is next(getattr(m, new_name) for m in modules if hasattr(m, new_name))
    public = [n for n in vars(modules[0]) if not n.startswith("_")]
    assert all(getattr(view, n) is getattr(modules[0], n) for n in public if n not in renames)
    with pytest.raises(AttributeError, match="is gone"):
        view.no_such_name  # noqa: B018


@pytest.mark.parametrize(("module", "name"), sorted((m, n) for m, names in RENAMED.items() for n in names))
def test_a_renamed_name_answers_with_the_new_object(module, name):
    target_module, _, target = RENAMED[module][name].partition(":")
    new = getattr(importlib.import_module(target_module), target)
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{module}.{name} is deprecated: it is {target_module}.{target}"):
        assert getattr(mod, name) is new
    with pytest.raises(AttributeError):
        mod.no_such_name  # noqa: B018


def test_the_tables_point_at_modules_that_exist():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # no new path is itself deprecated
        for new in MOVED.values():
            importlib.import_module(new)
        for sources, _ in SPLIT.values():
            for source in sources:
                importlib.import_module(source)
    assert training._moved.MOVED is MOVED


def test_the_old_clip_index_helpers_warn_and_agree_with_the_one_copy():
    from constcl_zoo.inference.clips import centred_start, clip_indices
    from training.pretrain import sampling
    from training.tasks.localization import data

    with pytest.warns(DeprecationWarning, match="clip_indices is deprecated"):
        assert sampling.clip_indices(15, 4, 2, 20) == clip_indices(15, 4, 2, 20, past_end="wrap") == [15, 17, 19, 1]
    with pytest.warns(DeprecationWarning, match="clip_indices is deprecated: it is key_frame_clip"):
        assert data.clip_indices(2, 4, 2, 10) == [0, 0, 2, 4] == clip_indices(centred_start(2, 4, 2), 4, 2, 10,
                                                                              past_end="clamp")


def test_a_trainer_written_for_traintask_still_subclasses_the_learner():
    from training.engine import Learner

    with pytest.warns(DeprecationWarning, match="TrainTask is deprecated"):
        from training.engine import TrainTask

    class Old(TrainTask):
        pass

    assert issubclass(Old, Learner)


def test_the_trackers_freeze_backbone_is_freeze_encoder_now(tmp_path):
    """A run folder written before the rename still loads, ``-o`` takes the old key, and the three trainers freeze
    one way: ``TaskModel.freeze_encoder``."""
    import json

    from training.engine import ConfigError
    from training.tasks.tracking.config import TrackTrainConfig, get_preset

    cfg = get_preset("cpu_small")
    old = cfg.to_dict()
    old["model"]["freeze_backbone"] = not old["model"].pop("freeze_encoder")
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.warns(DeprecationWarning, match="model.freeze_backbone is deprecated: it is model.freeze_encoder"):
        loaded = TrackTrainConfig.load(tmp_path / "config.json")
    assert loaded.model.freeze_encoder is not cfg.model.freeze_encoder
    with pytest.warns(DeprecationWarning, match="override model.freeze_backbone is deprecated"):
        assert cfg.replace(["model.freeze_backbone=false"]).model.freeze_encoder is False
    old["model"]["freeze_encoder"] = True
    with pytest.raises(ConfigError, match="both model.freeze_backbone and model.freeze_encoder"):
        TrackTrainConfig.from_dict(old)


def test_pair_model_takes_the_old_keyword():
    from constcl_zoo import load
    from training.tasks.tracking.learner import PairModel

    tracker = load("constcl_r3d14_w16", task="tracking", pretrained=False, head={"exemplar_size": 63,
                                                                                  "search_size": 127})
    with pytest.warns(DeprecationWarning, match=r"PairModel\(freeze_backbone=\) is deprecated"):
        model = PairModel(tracker, freeze_backbone=True)
    assert tracker.encoder_frozen and not model.train().tracker.encoder.training
