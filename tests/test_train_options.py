"""`sweeper train` and `sweeper sample` options as a user gives them: the right result or exit 2 with
one sentence naming the option, never a traceback, a hang or a silent no-op."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import LOCAL_PROFILE, SMOKE_SPEC
from sweeper.cli import main

AR, MDM = "3b34162d46c0", "3b423265856c"  # the smoke spec's trials


def profile_in(folder: Path) -> Path:
    path = folder / "profile.yaml"
    path.write_text(LOCAL_PROFILE.read_text()
                    .replace("sqlite:///mlflow.db", f"sqlite:///{folder / 'mlflow.db'}")
                    .replace("path: sweeper-store", f"path: {folder / 'store'}"))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A 2-step checkpoint of each smoke trial (seq_len 16), and the profile its data is in."""
    folder = tmp_path_factory.mktemp("trained")
    profile = profile_in(folder)
    found = {"profile": profile}
    for family, trial in (("ar", AR), ("mdm", MDM)):
        code = main(["train", str(SMOKE_SPEC), "--trial", trial, "--backend", str(profile), "--device", "cpu",
                     "--checkpoint-dir", str(folder / family), "--max-steps", "2"])
        assert code == 0
        found[family] = folder / family / "step_00000002"
    return found


def one_error(capsys, code: int) -> str:
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip().removeprefix("error: ")


def train(tmp_path: Path, *options: str) -> int:
    return main(["train", str(SMOKE_SPEC), "--trial", AR, "--backend", str(profile_in(tmp_path)), *options])


@pytest.mark.parametrize("device, message", [
    ("nonsense", "--device 'nonsense': expected cpu, cuda, cuda:N or auto (default: cuda when there is one)"),
    ("cpu:1", "--device 'cpu:1': expected cpu, cuda, cuda:N or auto"),
    ("cuda:", "--device 'cuda:': expected cpu, cuda, cuda:N or auto"),
])
def test_an_unknown_device_is_refused(tmp_path, capsys, device: str, message: str) -> None:
    assert one_error(capsys, train(tmp_path, "--device", device)).startswith(message)


def test_cuda_without_a_gpu_is_refused(tmp_path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        assert one_error(capsys, train(tmp_path, "--device", f"cuda:{count}")).startswith(
            f"--device cuda:{count}: this machine has {count} CUDA device")
        return
    for device in ("cuda", "cuda:0"):
        assert one_error(capsys, train(tmp_path, "--device", device)) == (
            f"--device {device}: this machine's torch sees no CUDA device; use --device cpu or auto")


@pytest.mark.parametrize("steps", ["-5", "0"])
def test_max_steps_must_be_positive(tmp_path, capsys, steps: str) -> None:
    assert one_error(capsys, train(tmp_path, "--device", "cpu", "--max-steps", steps)) == (
        f"--max-steps {steps}: expected a positive number of optimizer steps")


def test_checkpoint_dir_naming_a_file(tmp_path, capsys) -> None:
    (tmp_path / "a-file").write_text("x")
    assert one_error(capsys, train(tmp_path, "--device", "cpu", "--checkpoint-dir", str(tmp_path / "a-file"))) == (
        f"--checkpoint-dir {tmp_path / 'a-file'}: is a file, not a folder")


def test_resume_of_a_missing_or_foreign_checkpoint(tmp_path, capsys, trained) -> None:
    missing = tmp_path / "nowhere" / "step_00000009"
    assert one_error(capsys, train(tmp_path, "--device", "cpu", "--resume", str(missing))) == (
        f"--resume {missing}: does not exist; pass a step_* folder or `latest` with --checkpoint-dir")
    assert one_error(capsys, train(tmp_path, "--device", "cpu", "--resume", str(trained["mdm"]))) == (
        f"--resume {trained['mdm']}: the checkpoint is of trial {MDM}, not of {AR}")
    assert one_error(capsys, train(tmp_path, "--device", "cpu", "--resume", str(trained["ar"]),
                                   "--max-steps", "2")) == (
        "--max-steps 2: the checkpoint to resume is already at step 2")
    assert one_error(capsys, train(tmp_path, "--device", "cpu", "--resume", "latest")) == (
        "--resume latest needs --checkpoint-dir")


def test_resume_continues_the_same_trial(tmp_path, capsys, trained) -> None:
    code = main(["train", str(SMOKE_SPEC), "--trial", AR, "--backend", str(trained["profile"]), "--device", "cpu",
                 "--resume", str(trained["ar"]), "--max-steps", "3", "--checkpoint-dir", str(tmp_path / "more")])
    out, _ = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and lines[-1]["tokens"] == 3 * 8 * 16 and (tmp_path / "more" / "step_00000003").is_dir()


def sample(trained: dict[str, Path], family: str, *options: str, checkpoint: str | None = None) -> int:
    return main(["sample", checkpoint or str(trained[family]), "--spec", str(SMOKE_SPEC),
                 "--backend", str(trained["profile"]), *options])


@pytest.mark.parametrize("family", ["ar", "mdm"])
def test_sample_defaults_to_the_models_seq_len(capsys, trained, family: str) -> None:
    assert sample(trained, family, "--num-samples", "2") == 0
    out, err = capsys.readouterr()
    texts = [line for line in out.splitlines() if line and not line.startswith("─")]
    assert err == "" and len(texts) == 2 and all(len(t.split()) == 16 for t in texts)  # 16 symbols


@pytest.mark.parametrize("options, message", [
    (["--num-samples", "0"], "--num-samples 0: expected 1 to 1024"),
    (["--top-k", "0"], "--top-k 0: expected a positive number of tokens (leave it out for all)"),
    (["--steps", "0"], "--steps 0: expected a positive number of unmasking steps"),
    (["--length", "-3"], "--length -3: expected a positive number of tokens"),
    (["--temperature", "-1"], "--temperature -1: expected a finite number >= 0 (0 is greedy)"),
    (["--temperature", "nan"], "--temperature nan: expected a finite number >= 0 (0 is greedy)"),
    (["--length", "100000000"], "--length 100,000,000: this ar model has seq_len 16, and ar generates at most "
                                "16 x seq_len (at most 256)"),
])
def test_bad_sample_options(capsys, trained, options: list[str], message: str) -> None:
    assert one_error(capsys, sample(trained, "ar", *options)) == message


def test_an_mdm_sample_is_one_window(capsys, trained) -> None:
    assert one_error(capsys, sample(trained, "mdm", "--length", "17")) == (
        "--length 17: this mdm model has seq_len 16, and an mdm sample is one window of seq_len (at most 16)")
    assert sample(trained, "mdm", "--length", "5", "--steps", "100", "--top-k", "3", "--temperature", "0") == 0


def test_a_corrupt_checkpoint(tmp_path, capsys, trained) -> None:
    broken = tmp_path / "step_00000002"
    shutil.copytree(trained["ar"], broken)
    (broken / "state.pt").write_bytes(b"not a torch file")  # its size no longer what complete.json records
    assert one_error(capsys, sample(trained, "ar", checkpoint=str(broken))).startswith(
        f"{broken}: the checkpoint has a state.pt of 16 bytes, not the ")
    shutil.copy(trained["ar"] / "state.pt", broken / "state.pt")
    (broken / "config.json").write_text("{")
    assert one_error(capsys, sample(trained, "ar", checkpoint=str(broken))).startswith(
        f"{broken}: the checkpoint has a config.json of 1 bytes, not the ")
    (broken / "complete.json").unlink()  # no marker to check sizes against: the load itself fails
    assert one_error(capsys, sample(trained, "ar", checkpoint=str(broken))).startswith(
        f"{broken}: the checkpoint does not load (Expecting property name")


def test_sample_by_run_id(tmp_path, capsys, trained) -> None:
    from sweeper.storage import trial_dir
    from sweeper.tracking import TAG_SUPERSEDED, Tracking

    profile = trained["profile"]
    folder = profile.parent
    tracking = Tracking(f"sqlite:///{folder / 'mlflow.db'}", "sweeper-smoke")
    parent = tracking.sweep_run("smoke", spec_texts={}, plan={})
    log = tracking.open_trial(trial_id=AR, run_name="ar", parent_run_id=parent, tags={}, params={})
    assert one_error(capsys, sample(trained, "ar", checkpoint=log.run_id)) == (
        f"{log.run_id}: trial {AR} has no checkpoint in {folder / 'store'} yet")
    persisted = Path(trial_dir(str(folder / "store"), "sweeper-smoke", AR)) / "checkpoint_000000"
    shutil.copytree(trained["ar"], persisted)
    (persisted / ".metadata.json").write_text(json.dumps({"step": 2, "tokens": 256}))
    assert sample(trained, "ar", "--length", "4", checkpoint=log.run_id) == 0
    out, _ = capsys.readouterr()
    assert len(out.splitlines()[0].split()) == 4

    assert one_error(capsys, sample(trained, "ar", checkpoint="f" * 32)) == (
        f"{'f' * 32}: no run with this id in experiment 'sweeper-smoke' at sqlite:///{folder / 'mlflow.db'}")
    assert one_error(capsys, sample(trained, "ar", checkpoint="nope")) == (
        "nope: neither a checkpoint folder here nor an MLflow run id (32 hex digits)")
    tracking.client.set_tag(log.run_id, TAG_SUPERSEDED, "e" * 32)
    assert one_error(capsys, sample(trained, "ar", checkpoint=log.run_id)) == (
        f"{log.run_id}: a rerun of trial {AR} replaced this run and its checkpoints; sample run {'e' * 32}")


def test_a_torn_newest_checkpoint_is_passed_over_with_a_warning(tmp_path, capsys, trained) -> None:
    root = tmp_path / "checkpoints"
    shutil.copytree(trained["ar"], root / "step_00000002")
    profile = str(trained["profile"])
    options = ["train", str(SMOKE_SPEC), "--trial", AR, "--backend", profile, "--device", "cpu",
               "--checkpoint-dir", str(root), "--resume", "latest"]
    assert main([*options, "--max-steps", "4"]) == 0
    capsys.readouterr()
    state = root / "step_00000004" / "state.pt"
    whole = state.stat().st_size
    state.write_bytes(state.read_bytes()[:100])
    problem = f"has a state.pt of 100 bytes, not the {whole:,} its complete.json records"
    assert one_error(capsys, train(tmp_path, "--device", "cpu", "--resume", str(root / "step_00000004"))) == (
        f"--resume {root / 'step_00000004'}: the checkpoint {problem}; pass a whole step_* folder or `latest` "
        "with --checkpoint-dir")
    assert main([*options, "--max-steps", "5"]) == 0
    out, err = capsys.readouterr()
    assert f"warning: the checkpoint {root / 'step_00000004'} {problem}; not resuming from it" in err
    assert json.loads(out.splitlines()[0])["tokens"] == 3 * 8 * 16  # on from step 2
