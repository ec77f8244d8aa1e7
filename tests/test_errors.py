"""Every exception class sweeper defines survives pickling: Ray carries a worker's error to the
driver that way, and an error that cannot be rebuilt there turns into an unrelated TypeError."""

from __future__ import annotations

import importlib
import inspect
import pickle
from pathlib import Path

import cloudpickle
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sweeper"


def exception_classes() -> dict[str, type[BaseException]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = value
    return found


def examples() -> dict[str, BaseException]:
    from sweeper.console import UserError
    from sweeper.data.errors import CacheFileError, DataError
    from sweeper.driver.worker import StorageFull, TerminalFailure
    from sweeper.evals.stage import TaskFailed
    from sweeper.spec.nodes import NumberRangeError, SpecError, _TooDeep
    from sweeper.spec.schema import FieldError
    from sweeper.trainer.errors import CheckpointUnreadable, NonFiniteLoss, TrialFailure, TrialOutOfMemory

    return {
        "sweeper.console.UserError": UserError("profile.yaml mlflow.tracking_uri: cannot reach it"),
        "sweeper.data.errors.DataError": DataError("data.train.paths[0]", "no file matches 'x*.txt'"),
        "sweeper.data.errors.CacheFileError": CacheFileError("storage.path", "the token cache file x is missing"),
        "sweeper.driver.worker.StorageFull": StorageFull("no space left for the checkpoint at /store/x"),
        "sweeper.driver.worker.TerminalFailure": TerminalFailure("training loss is nan at optimizer step 3"),
        "sweeper.evals.stage.TaskFailed": TaskFailed("tiny_arc: its data file tests/x.jsonl is missing"),
        "sweeper.spec.nodes.SpecError": SpecError("expected a number", file="s.yaml", line=3, path="grid.epochs"),
        "sweeper.spec.nodes.NumberRangeError": NumberRangeError("1e40 is out of range"),
        "sweeper.spec.nodes._TooDeep": _TooDeep(12),
        "sweeper.spec.schema.FieldError": FieldError("lr_min", "lr_min above lr_peak"),
        "sweeper.trainer.errors.TrialFailure": TrialFailure("worker lost"),
        "sweeper.trainer.errors.NonFiniteLoss": NonFiniteLoss(3, 384, float("inf")),
        "sweeper.trainer.errors.TrialOutOfMemory": TrialOutOfMemory(16, "cuda:0", "CUDA out of memory.\nmore"),
        "sweeper.trainer.errors.CheckpointUnreadable": CheckpointUnreadable("/x/step_00000007", "is torn"),
    }


def test_every_exception_class_has_an_example() -> None:
    assert sorted(exception_classes()) == sorted(examples())


@pytest.mark.parametrize("name", sorted(examples()))
def test_it_survives_pickling_with_its_message_and_attributes(name: str) -> None:
    error = examples()[name]
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, pickle.loads)):
        copy = loads(dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error) and copy.args == error.args
        assert {k: v for k, v in vars(copy).items()} == {k: v for k, v in vars(error).items()}
