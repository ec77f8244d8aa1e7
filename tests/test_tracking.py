"""MLflow tracking against a real sqlite store and a real MLflow server on 127.0.0.1."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from servers import free_port, mlflow_server
from sweeper.console import UserError
from sweeper.tracking import TAG_PARENT, TAG_TRIAL, Tracking, check_reachable, flatten


@pytest.fixture(scope="module")
def server_url(tmp_path_factory) -> str:
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


def open_smoke_trial(tracking: Tracking, parent: str, trial_id: str = "abc123def456"):
    return tracking.open_trial(trial_id=trial_id, run_name="ar-tiny-U4k-e2", parent_run_id=parent,
                               tags={"family": "ar", "unique_tokens": 4000}, params={"train.lr_peak": 2e-4})


def curve(tracking: Tracking, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in tracking.client.get_metric_history(run_id, key)]


def exercise_store(uri: str) -> None:
    tracking = Tracking(uri, "exp")
    parent = tracking.sweep_run("smoke", spec_texts={"tests/specs/smoke.yaml": "version: 1\n"}, plan={"trials": []})
    assert tracking.sweep_run("smoke", spec_texts={}, plan={}) == parent  # a rerun reuses the parent

    log = open_smoke_trial(tracking, parent)
    log.log({"val/loss": 4.2}, step=0)
    for step in (128, 256, 384):
        log.log({"train/loss": 4.0 - step / 1000, "lr": 1e-3}, step=step)
    log.flush()
    # The process dies here; a retry reopens the same run and replays from a checkpoint at 256.
    retry = open_smoke_trial(tracking, parent)
    assert retry.run_id == log.run_id
    for step in (256, 384, 512):
        retry.log({"train/loss": 4.0 - step / 1000}, step=step)
    retry.log({"val/loss": 3.1, "final/val_loss": 3.1}, step=512)
    retry.finish("FINISHED")

    assert [s for s, _ in curve(tracking, log.run_id, "train/loss")] == [128, 256, 384, 512]
    assert curve(tracking, log.run_id, "val/loss") == [(0, 4.2), (512, 3.1)]
    record = tracking.trial_records()["abc123def456"]
    assert record.status == "FINISHED" and record.metrics["final/val_loss"] == 3.1
    assert record.tags[TAG_PARENT] == parent and record.tags[TAG_TRIAL] == "abc123def456"
    assert record.tags["unique_tokens"] == "4000"
    assert tracking.finished_ids() == {"abc123def456"}

    failed = open_smoke_trial(tracking, parent, trial_id="fff000fff000")
    failed.finish("FAILED", "non-finite loss at step 12: nan")
    records = tracking.trial_records()
    assert records["fff000fff000"].status == "FAILED"
    assert records["fff000fff000"].failure == "non-finite loss at step 12: nan"


def test_sqlite_store(tmp_path: Path) -> None:
    exercise_store(f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.mark.slow
def test_server_store(server_url: str) -> None:
    check_reachable(server_url)
    exercise_store(server_url)


def test_unreachable_server_is_a_clear_error_within_seconds() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    start = time.perf_counter()
    with pytest.raises(UserError, match=rf"^MLflow at {url} is unreachable \("):
        check_reachable(url)
    assert time.perf_counter() - start < 6


@pytest.mark.parametrize("uri, message", [
    ("sqlite:////nonexistent/folder/mlflow.db", "MLflow store sqlite:////nonexistent/folder/mlflow.db: folder /nonexistent/folder does not exist"),
    ("./mlruns", "MLflow tracking URI './mlruns': use sqlite:///FILE.db or an http(s) server (MLflow 3 no longer accepts a ./mlruns file store)"),
])
def test_bad_store_uris(uri: str, message: str) -> None:
    with pytest.raises(UserError) as error:
        check_reachable(uri)
    assert str(error.value) == message


def _set_schema_revision(db: Path, revision: str) -> None:
    import sqlite3

    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))


@pytest.mark.parametrize("which", ["older", "newer"])
def test_a_store_of_another_mlflow_schema_is_one_sentence_from_every_command(tmp_path: Path, which: str) -> None:
    """A store an older MLflow wrote (the environment was upgraded) wants `mlflow db upgrade`; one
    a newer MLflow wrote wants that MLflow: each said in one line, exit 2, the store untouched.
    Real commands, each in its own process as a user runs them."""
    import os
    import subprocess
    import sys

    import mlflow
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    from conftest import MINIMAL

    (tmp_path / "spec.yaml").write_text(MINIMAL)
    db = tmp_path / "mlflow.db"  # the store the local profile opens from this folder
    Tracking(f"sqlite:///{db}", "t")
    migrations = ScriptDirectory.from_config(_get_alembic_config(db_url=""))
    head = migrations.get_current_head()
    older = migrations.get_revision(head).down_revision
    _set_schema_revision(db, older if which == "older" else "0123456789ab")
    before = db.read_bytes()
    said = (f"MLflow store sqlite:///mlflow.db has an older schema (revision {older}) than the installed MLflow "
            f"{mlflow.__version__} reads ({head}): back it up, then run `mlflow db upgrade sqlite:///mlflow.db`"
            if which == "older" else
            f"MLflow store sqlite:///mlflow.db was written by a newer MLflow than the installed MLflow "
            f"{mlflow.__version__} (its schema revision 0123456789ab is unknown to it): install that MLflow, "
            "e.g. `pip install -U mlflow`")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    for command in (["status", "spec.yaml"], ["run", "spec.yaml"], ["ui"], ["plan", "spec.yaml"]):
        done = subprocess.run([sys.executable, "-m", "sweeper.cli", *command], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        if command[0] == "plan":  # the plan needs no store: it says why it cannot tell what is done
            assert done.returncode == 0 and f"done vs to run unknown: MLflow at sqlite:///mlflow.db answered: {said}" \
                in done.stdout, done.stdout + done.stderr
        else:
            assert (done.returncode, done.stdout, done.stderr.strip()) == (2, "", f"error: {said}"), command
    assert db.read_bytes() == before


def test_flatten() -> None:
    assert flatten({"train": {"betas": (0.9, 0.95), "lr": 1e-3}, "family": "ar"}) == {
        "train.betas": [0.9, 0.95], "train.lr": 1e-3, "family": "ar"}


def test_a_rerun_opens_a_fresh_run_and_supersedes_the_old_one(tmp_path: Path) -> None:
    from sweeper.tracking import TAG_SUPERSEDED

    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp")
    parent = tracking.sweep_run("smoke", spec_texts={}, plan={})
    old = open_smoke_trial(tracking, parent)
    old.log({"val/loss": 3.0, "final/val_loss": 3.0}, step=80_000)
    old.finish("FINISHED")

    again = open_smoke_trial(tracking, parent)  # resume keeps the run
    assert again.run_id == old.run_id and again.last_steps == {"val/loss": 80_000, "final/val_loss": 80_000}
    again.finish("FINISHED")

    fresh = tracking.open_trial(trial_id="abc123def456", run_name="ar-tiny-U4k-e2", parent_run_id=parent,
                                tags={}, params={}, fresh=True)
    assert fresh.run_id != old.run_id and fresh.last_steps == {}  # from step 0: every point is written
    assert tracking.client.get_run(old.run_id).data.tags[TAG_SUPERSEDED] == fresh.run_id
    assert tracking.client.get_run(old.run_id).info.status == "FINISHED"  # the old one kept
    # Until the rerun finishes, the trial is not finished: dedupe, status, results and fit see the new run only.
    assert tracking.trial_records()["abc123def456"].run_id == fresh.run_id
    assert tracking.finished_ids() == set()
    fresh.log({"val/loss": 2.5, "final/val_loss": 2.5}, step=80_000)
    fresh.finish("FINISHED")
    record = tracking.trial_records(["abc123def456"])["abc123def456"]
    assert (record.run_id, record.metrics["final/val_loss"]) == (fresh.run_id, 2.5)
    assert tracking.trial_states(["abc123def456", "000000000000"]) == {"abc123def456": "FINISHED"}
    # A later run without --rerun continues the new run, never the superseded one.
    assert open_smoke_trial(tracking, parent).run_id == fresh.run_id


def test_points_committed_without_their_tag_are_not_written_twice(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's SQL store commits a batch's points, then its tags: a driver killed between the two
    leaves points that the last-steps tag does not count. The continued run reads its curves and
    writes none of those points again."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp")
    parent = tracking.sweep_run("smoke", spec_texts={}, plan={})
    log = open_smoke_trial(tracking, parent)
    log.log({"train/loss": 4.0}, step=128)
    log.flush()
    log.log({"train/loss": 3.9, "val/loss": 3.8}, step=256)

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("the driver dies between the batch's two commits")

    with monkeypatch.context() as patch:
        patch.setattr(SqlAlchemyStore, "_set_tags", killed)
        with pytest.raises(KeyboardInterrupt):
            log.flush()
    stale = tracking.trial_records(["abc123def456"])["abc123def456"]
    assert stale.last_steps == {"train/loss": 128} and stale.metrics == {"train/loss": 3.9, "val/loss": 3.8}

    retry = open_smoke_trial(tracking, parent)  # resumes from a checkpoint at 128: replays 256
    assert retry.run_id == log.run_id and retry.last_steps == {"train/loss": 256, "val/loss": 256}
    for step in (256, 384):
        retry.log({"train/loss": 4.0 - step / 1000, "val/loss": 3.9 - step / 1000}, step=step)
    retry.finish("FINISHED")
    assert curve(tracking, log.run_id, "train/loss") == [(128, 4.0), (256, 3.9), (384, 4.0 - 0.384)]
    assert curve(tracking, log.run_id, "val/loss") == [(256, 3.8), (384, 3.9 - 0.384)]


def test_a_run_retried_after_a_failure_keeps_no_failure_once_it_finishes(tmp_path: Path) -> None:
    from sweeper.tracking import TAG_FAILURE

    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp")
    parent = tracking.sweep_run("smoke", spec_texts={}, plan={})
    first = open_smoke_trial(tracking, parent)
    first.finish("FAILED", "the trial's worker died (node lost) at https://u:secret@host/?token=abc")
    failed = tracking.trial_records()["abc123def456"]
    assert failed.status == "FAILED"
    assert failed.failure == "the trial's worker died (node lost) at https://u:***@host/?token=***"
    retry = open_smoke_trial(tracking, parent)  # --retry-failed continues the same run
    assert retry.run_id == first.run_id and TAG_FAILURE not in tracking.client.get_run(retry.run_id).data.tags
    retry.finish("FINISHED")
    record = tracking.trial_records()["abc123def456"]
    assert record.status == "FINISHED" and record.failure is None


def test_reading_creates_no_experiment(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    reader = Tracking(uri, "nothing-here", create=False)
    assert reader.experiment_id is None and reader.trial_records() == {} and reader.run("0" * 32) is None
    assert reader.client.get_experiment_by_name("nothing-here") is None


@pytest.mark.parametrize("where", ["sqlite", "server"])
def test_curves_are_read_in_bulk_and_agree_with_each_runs_history(tmp_path: Path, server_url: str, where: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.entities import Metric

    import sweeper.tracking as tracking_module

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if where == "sqlite" else server_url
    tracking = Tracking(uri, f"curves-{where}")
    parent = tracking.sweep_run("curves", spec_texts={}, plan={})
    expected = {}
    for i in range(5):
        log = open_smoke_trial(tracking, parent, trial_id=f"{i:012d}")
        for step in (0, 100, 200, 300):
            log.log({"val/loss": 5.0 - step / 100 - i}, step=step)
        log.flush()
        expected[log.run_id] = [(step, 5.0 - step / 100 - i) for step in (0, 100, 200, 300)]
    # A step written twice (a flush retried after a lost answer): the later value wins.
    tracking.client.log_batch(log.run_id, metrics=[Metric("val/loss", 9.0, int(time.time() * 1000) + 5000, 100)])
    expected[log.run_id][1] = (100, 9.0)
    no_curve = open_smoke_trial(tracking, parent, trial_id="nocurve00000")
    calls: list[object] = []
    monkeypatch.setattr(tracking.client, "get_metric_history", lambda *a, **k: calls.append(a) or [])
    assert tracking.curves([*expected, no_curve.run_id], "val/loss") == expected
    assert calls == []  # all in one bulk read
    monkeypatch.undo()
    monkeypatch.setattr(tracking_module, "BULK_POINTS", 2)  # an answer at its limit may be cut: run by run
    assert tracking.curves(list(expected), "val/loss") == expected
