"""Storage filling up in the middle of a sweep, on a real small tmpfs (mounted in a private mount
namespace, so no root is needed where unprivileged user namespaces are allowed): one sentence, exit
2, the sweep's parent run closed, no torn checkpoint left, and the next run resumes."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import long_spec_text
from test_run import assert_clean_curve, runs, write_profile

pytestmark = pytest.mark.slow


def can_mount_tmpfs(folder: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {shlex.quote(str(folder))}"],
                           capture_output=True)
    return probe.returncode == 0


def test_storage_full_mid_run_stops_in_one_sentence_and_the_next_run_resumes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    if not can_mount_tmpfs(store):
        pytest.skip("cannot mount a tmpfs in a user namespace here (unshare -rm)")
    profile = write_profile(tmp_path, sustained_flops=4e8)
    spec = tmp_path / "spec.yaml"
    spec.write_text(long_spec_text(name="full", family="ar", epochs=10, experiment="sweeper-long"))
    out = tmp_path / "out"
    out.mkdir()
    sweeper = f"{shlex.quote(sys.executable)} -m sweeper.cli"
    args = f"{shlex.quote(str(spec))} --backend {shlex.quote(str(profile))}"
    # In the namespace: a 4 MiB tmpfs as storage; the cache prepared; then all but FREE_KB filled, so the
    # first checkpoints fit and a later one does not; a copy of what the full run left; room made; run again.
    script = f"""
set -u
mount -t tmpfs -o size=4m tmpfs {store}
{sweeper} data {args} > {out}/data.out 2>&1 || exit 9
free_kb=$(df -k --output=avail {store} | tail -1)
fallocate -l $(( (free_kb - 560) * 1024 )) {store}/filler || exit 8
{sweeper} run {args} > {out}/full.out 2> {out}/full.err; echo $? > {out}/full.rc
cp -a {store} {out}/store-when-full
rm {store}/filler
{sweeper} run {args} > {out}/again.out 2> {out}/again.err; echo $? > {out}/again.rc
"""
    done = subprocess.run(["unshare", "-rm", "bash", "-c", script], capture_output=True, text=True, timeout=500,
                          env={**__import__("os").environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stdout + done.stderr + (out / "data.out").read_text()
    full_out, full_err = (out / "full.out").read_text(), (out / "full.err").read_text()
    assert (out / "full.rc").read_text().strip() == "2", full_out + full_err
    (line,) = full_err.strip().splitlines()
    assert line.startswith(f"error: storage full at {store}: free space there and run the same command again"), line
    assert "Traceback" not in full_out + full_err

    # Nothing torn left in storage: every checkpoint folder there is whole against its marker.
    from sweeper.driver.checkpoints import resume_candidates

    (trial_dir,) = [p for p in (out / "store-when-full" / "sweeper-long").iterdir() if p.is_dir()]
    candidates, passed_over = resume_candidates(str(trial_dir))
    folders = sorted(p.name for p in trial_dir.glob("checkpoint_*"))
    assert candidates and passed_over == [] and len(candidates) == len(folders), folders

    again = (out / "again.out").read_text()
    assert (out / "again.rc").read_text().strip() == "0", again + (out / "again.err").read_text()
    assert "resumed ar-smoke-1L-U4k-e10 from its checkpoint at" in again
    every = runs(tmp_path / "mlflow.db", "sweeper-long")
    (sweep,) = [r for r in every if r.data.tags.get("sweeper.kind") == "sweep"]
    (trial,) = [r for r in every if r.data.tags.get("sweeper.kind") == "trial"]
    assert sweep.info.status == "FINISHED" and trial.info.status == "FINISHED"
    assert_clean_curve(tmp_path / "mlflow.db", trial.info.run_id)
    print(json.dumps({"full run": full_out.splitlines()[-3:], "again": again.splitlines()[-2:]}))
