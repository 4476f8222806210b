"""A holistic probe on real footage that telling videos apart does not solve: scene type, leave-one-video-out.

    python benchmarks/real_probe.py --model constcl_r3d14_w16.real_cpu --model constcl_r3d14_w16 --random-init
    python benchmarks/real_probe.py --model RUN/encoder --model ... --out benchmarks/results/real_probe

The 18 usable real videos of ``../shared/data/videos`` and ``videos-more`` are labelled with one of five scene
types (:data:`SCENES`: street, animation, lab animals, hands at work, person in action). Every video gives
``--clips`` clips (the encoder's own temporal sampling and centre crop), embedded by the frozen global branch.
For each video in turn, a linear probe (``training``'s L-BFGS logistic regression on standardised features) is
trained on the clips of *every other* video and scores this video's clips: the video is never seen by the probe,
so it must recognise the kind of scene, not the video (every encoder, even a random one, tells the source videos
apart). Reported: top-1 over all held-out clips, the mean per-class recall (classes have 2-5 videos), and the
per-video accuracy. Random-init rows use the architecture's seeded init with the same preprocessing as the
trained encoder it is compared with (``--random-init`` applies to the model named before it).

Note: the real-video encoders were pretrained (without labels) on these same videos; the probe measures whether
that pretraining put scene-level information in the clip embedding. Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from constcl_zoo import load
from constcl_zoo.fileio import atomic_write

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

#: scene type of each real video (file name -> class); the 8-frame street clip is too short for a clip
SCENES = {
    "vtest.avi": "street", "bikes.mp4": "street", "tree.avi": "street",
    "Megamind.avi": "animation", "bigbuckbunny.mp4": "animation",
    "sleap_flies_arena_120s.mp4": "lab_animals", "sleap_flies_centered_pair_small.mp4": "lab_animals",
    "sleap_flies_clip.mp4": "lab_animals", "sam2_01_dog.mp4": "lab_animals",
    "sam2_02_cups.mp4": "hands", "sam2_04_coffee.mp4": "hands", "decord_flipping_a_pancake.mkv": "hands",
    "mmaction2_ucf101_apply_eye_makeup.avi": "hands", "sam2_bedroom.mp4": "hands",
    "mmaction2_kinetics_arm_wrestling.mp4": "person_action", "siammask_davis_tennis.mp4": "person_action",
    "sam2_05_juggle.mp4": "person_action", "mmaction2_cleaning_pool.mp4": "person_action",
}


def _split(clips: int):
    from training.tasks.recognition.data import LabelledSplit

    paths = []
    for folder in ("videos", "videos-more"):
        paths += [p for p in sorted((DATA / folder).iterdir()) if p.name in SCENES]
    missing = set(SCENES) - {p.name for p in paths}
    if missing:
        raise SystemExit(f"real_probe: missing videos under {DATA}: {sorted(missing)}")
    classes = tuple(sorted(set(SCENES.values())))
    return LabelledSplit("real_scenes", tuple(paths), tuple(classes.index(SCENES[p.name]) for p in paths), classes)


def leave_one_video_out(features: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...]) -> dict:
    """``features [N, V, D]`` (V clips per video), ``labels [N]``: per held-out video, a probe trained on the
    others; returns top-1 over all clips, mean per-class recall and per-video accuracies."""
    from training.tasks.recognition.features import SplitFeatures, ViewSettings
    from training.tasks.recognition.probe import ProbeSettings, train_probe

    n, v, _ = features.shape
    correct = np.zeros(n)
    for i in range(n):
        keep = torch.tensor([j for j in range(n) if j != i])
        train = SplitFeatures("train", features[keep], labels[keep], tuple(str(j) for j in keep.tolist()), classes,
                              (), ViewSettings(clips=v), "loo")
        head, _ = train_probe(train, ProbeSettings())
        predicted = head.logits(features[i]).argmax(dim=1)
        correct[i] = float((predicted == labels[i]).float().mean())
    per_class = [float(correct[(labels == c).numpy()].mean()) for c in range(len(classes))]
    return {"top1": float(correct.mean()), "mean_class_recall": float(np.mean(per_class)),
            "per_class": dict(zip(classes, per_class, strict=True)), "per_video": correct.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    order: list[tuple[str, str]] = []  # (init, model) in command-line order

    class Model(argparse.Action):
        def __call__(self, parser, namespace, value, option_string=None):
            order.append(("trained", value))

    class RandomInit(argparse.Action):
        def __call__(self, parser, namespace, value, option_string=None):
            if not order:
                parser.error("--random-init follows the --model whose architecture and preprocessing it takes")
            order.append(("random", order[-1][1]))

    parser.add_argument("--model", action=Model, required=True, help="encoder (name or folder); repeatable")
    parser.add_argument("--random-init", action=RandomInit, nargs=0,
                        help="also a random init of the model named just before (its preprocessing)")
    parser.add_argument("--clips", type=int, default=8, help="clips per video (default 8)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "real_probe"))
    args = parser.parse_args()

    from training.tasks.recognition.features import ViewSettings, extract_features

    split = _split(args.clips)
    rows = []
    for kind, name in order:
        trained = load(name, branch="global")
        model = trained
        if kind == "random":
            model = load(trained.config.arch, branch="global", pretrained=False,
                         preprocess=trained.config.preprocess)
        started = time.perf_counter()
        feats = extract_features(model, split, ViewSettings(clips=args.clips), progress=False)
        result = leave_one_video_out(feats.features, feats.labels, split.classes)
        rows.append({"model": name, "init": kind, "seconds": round(time.perf_counter() - started, 1), **result})
        print(f"{name} ({kind}): top-1 {result['top1']:.3f}, mean class recall {result['mean_class_recall']:.3f}",
              flush=True)
    payload = {"benchmark": "real_probe", "videos": [p.name for p in split.paths], "classes": split.classes,
               "clips_per_video": args.clips, "machine": platform.processor() or platform.machine(),
               "torch_threads": torch.get_num_threads(), "rows": rows}
    out = Path(args.out)
    atomic_write(out.with_suffix(".json"), json.dumps(payload, indent=2) + "\n")
    lines = ["| encoder | init | top-1 (clips) | mean class recall |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['init']} | {r['top1']:.3f} | {r['mean_class_recall']:.3f} |" for r in rows]
    atomic_write(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
