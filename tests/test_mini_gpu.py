"""sweeps/mini-gpu.yaml with backends/gpu.yaml: the GPU study plans here as its header says.

Running it needs a GPU machine; what can be checked without one is that the spec validates and
plans on the profile it ships with, needs no network, and that the header's counts and its time
estimate are the plan's own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "sweeps" / "mini-gpu.yaml"
PROFILE = REPO / "backends" / "gpu.yaml"


def test_mini_gpu_plans_on_one_gpu_as_its_header_says(cli) -> None:
    code, out, err = cli("plan", SPEC, "--backend", PROFILE, "--format", "json")
    assert (code, err) == (0, "")
    plan = json.loads(out)
    totals, trials = plan["totals"], plan["trials"]
    header = SPEC.read_text().split("\nversion:")[0]

    claimed = re.search(r"(\d+) trials, ([\d.]+)B tokens, ([\d.]+)e16 FLOPs", header)
    assert claimed, "the header states trials, tokens and FLOPs"
    assert totals["trials"] == int(claimed[1])
    assert round(totals["tokens"] / 1e9, 2) == float(claimed[2])
    assert round(totals["flops"] / 1e16, 1) == float(claimed[3])
    minutes = re.search(r"training at ~(\d+) min", header)
    assert minutes and round(totals["makespan_hours"] * 60) == int(minutes[1])

    assert plan["data"]["train"]["kind"] == "synthetic", "the GPU machines have no network"
    assert all(t["fits"] and t["resources"] == {"CPU": 4, "GPU": 1} for t in trials)
    compiled = [t for t in trials if t["train"]["compile"]]
    assert {t["family"] for t in compiled} == {"mdm"} and len(compiled) == 33
    assert min(t["unique_tokens"] // (t["train"]["batch_sequences"] * 32) for t in trials) >= 31, \
        "every pool makes at least ~32 steps an epoch"
    names = [t["name"] for t in trials]
    assert len(set(names)) == len(names), "the LR search's trials are named by their LR"
    assert {"ar-gq-m-U128k-e16-lr0.0005", "mdm-gq-m-U128k-e256-lr0.002"} <= set(names)
    largest = max(trials, key=lambda t: t["flops"])
    assert largest["name"] == "mdm-gq-l-U256k-e512" and largest["steps"] == 64_000
