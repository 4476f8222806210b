"""Which files and functions of ``constcl_zoo`` one ``load()`` crosses: a ``sys.setprofile`` trace.

    python benchmarks/load_trace.py [--json benchmarks/results/load_trace.json] [--label after]

Traces ``load()`` (the default encoder), ``load(task="tracking")`` (the default tracker: training-free),
``load("constcl_r3d14_w16.synth_cpu_tracking")`` (a trained SiamFC tracker) and ``load(task="localization")``, all
shipped in the package and loaded offline. Each call is run once untraced first, so lazy imports and caches are warm and
the trace shows what every load does, not what the first import does. For each package file it counts the distinct
functions called, the calls, and the *entries*: calls into the file from another file (how often a reader following the
call has to open it again), and the *visits*: how often execution moves into the file, by a call or by a return (code
outside the package is looked through). Files are split into *plumbing* (name resolution, registries, checkpoint I/O,
the loader itself) and *model* (the network's modules and configs: what any load has to build).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import constcl_zoo
from constcl_zoo import load

PACKAGE = Path(constcl_zoo.__file__).resolve().parent
# The network and its configuration: what any load builds, whatever the plumbing around it.
MODEL_CODE = ("nn/", "layers/", "backbone.py", "heads.py", "model.py", "preprocess.py", "config.py", "archs.py",
              "tasks/base.py", "tasks/recognition.py", "tasks/localization", "tasks/tracking")


def is_model_code(rel: str) -> bool:
    return any(rel == m or rel.startswith(m) for m in MODEL_CODE)


def trace(fn) -> dict:
    """Run ``fn()`` under ``sys.setprofile``; per package file: functions, calls, entries from other files."""
    calls: dict[str, int] = defaultdict(int)
    entries: dict[str, int] = defaultdict(int)
    visits: dict[str, int] = defaultdict(int)
    current: list[str | None] = [None]
    functions: dict[str, set[str]] = defaultdict(set)

    def rel(frame) -> str | None:
        path = Path(frame.f_code.co_filename)
        try:
            return path.resolve().relative_to(PACKAGE).as_posix()
        except ValueError:
            return None

    def profile(frame, event, arg):
        if event not in ("call", "return"):
            return
        now = rel(frame) if event == "call" else (rel(frame.f_back) if frame.f_back is not None else None)
        if now is not None and now != current[0]:  # code outside the package is transparent
            visits[now] += 1
            current[0] = now
        if event != "call":
            return
        here = rel(frame)
        if here is None:
            return
        calls[here] += 1
        functions[here].add(frame.f_code.co_qualname if hasattr(frame.f_code, "co_qualname")
                            else frame.f_code.co_name)
        # the nearest caller that is package code, or outside code (the caller of load)
        caller = frame.f_back
        while caller is not None and rel(caller) is None and caller.f_code.co_filename.startswith("<"):
            caller = caller.f_back  # generated code (dataclass __init__): look through it
        if caller is None or rel(caller) != here:
            entries[here] += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    files = sorted(calls)
    rows = [{"file": f, "kind": "model" if is_model_code(f) else "plumbing", "functions": sorted(functions[f]),
             "calls": calls[f], "entries": entries[f], "visits": visits[f]} for f in files]
    plumbing = [r for r in rows if r["kind"] == "plumbing"]
    return {"files": len(rows), "plumbing_files": len(plumbing),
            "functions": sum(len(r["functions"]) for r in rows),
            "plumbing_functions": sum(len(r["functions"]) for r in plumbing),
            "max_entries_plumbing_file": max((r["entries"] for r in plumbing), default=0),
            "max_visits_plumbing_file": max((r["visits"] for r in plumbing), default=0),
            "rows": rows}


CASES = {
    "load()": lambda: load(),
    'load(task="tracking")': lambda: load(task="tracking"),
    'load("constcl_r3d14_w16.synth_cpu_tracking")': lambda: load("constcl_r3d14_w16.synth_cpu_tracking"),
    'load(task="localization")': lambda: load(task="localization"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "load_trace.json")
    parser.add_argument("--label", default="current", help="the key this run is stored under in the JSON")
    args = parser.parse_args()
    results = {}
    for name, fn in CASES.items():
        fn()  # warm: imports and caches
        results[name] = trace(fn)
    for name, r in results.items():
        print(f"\n{name}: {r['files']} files ({r['plumbing_files']} plumbing), {r['functions']} functions "
              f"({r['plumbing_functions']} in plumbing); most entries into one plumbing file: "
              f"{r['max_entries_plumbing_file']}, most visits: {r['max_visits_plumbing_file']}")
        print("| file | kind | functions | calls | entries | visits |\n|---|---|---|---|---|---|")
        for row in r["rows"]:
            print(f"| {row['file']} | {row['kind']} | {len(row['functions'])} | {row['calls']} | {row['entries']} "
                  f"| {row['visits']} |")
        for row in r["rows"]:
            if row["kind"] == "plumbing":
                print(f"  {row['file']}: {', '.join(row['functions'])}")
    stored = json.loads(args.json.read_text()) if args.json.is_file() else {}
    stored[args.label] = results
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(stored, indent=1) + "\n")
    print(f"\nwrote {args.json} [{args.label}]")


if __name__ == "__main__":
    main()
