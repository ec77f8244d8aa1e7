"""Every request type, for every family, through lm-eval on the offline task files of tests/evals/tasks
(ARC's and LAMBADA's record formats, rolling perplexity, free generation), and a task whose data is
missing failing alone in one line."""

from __future__ import annotations

import pytest

from sweeper.evals.stage import TaskFailed, evaluate_task, metric_names, quiet, task_manager

from .helpers import TASKS, ByteTokenizer, config, lm

ENGLISH = ("tiny_arc", "tiny_lambada", "tiny_wikitext", "tiny_generate")
EXPECTED = {"tiny_arc": {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"},
            "tiny_lambada": {"perplexity", "perplexity_stderr", "acc", "acc_stderr"},
            "tiny_wikitext": {"word_perplexity", "byte_perplexity"},
            "tiny_generate": {"exact_match", "exact_match_stderr"}}


@pytest.fixture(scope="module")
def manager():
    quiet()
    return task_manager([str(TASKS)], [*ENGLISH, "tiny_missing"])


@pytest.mark.parametrize("family", ["ar", "mdm", "dual", "bd3lm"])
def test_every_request_type_answers_for_every_family(manager, offline, family: str) -> None:
    harness = lm(config(family=family, vocab_size=257, block_size=4), ByteTokenizer(), mc_samples=4)
    for task in ENGLISH:
        metrics = evaluate_task(harness, task, manager, num_fewshot=0, limit=4)
        assert {k.removeprefix(f"eval/{task}/") for k in metrics} == EXPECTED[task], task


def test_a_task_whose_data_is_missing_fails_alone_in_one_line(manager, offline) -> None:
    harness = lm(config(family="ar", vocab_size=257), ByteTokenizer())
    with pytest.raises(TaskFailed) as failure:
        evaluate_task(harness, "tiny_missing", manager, num_fewshot=0, limit=None)
    message = str(failure.value)
    assert "\n" not in message and "not_here.jsonl" in message and message.startswith("FileNotFoundError")
    assert evaluate_task(harness, "tiny_arc", manager, num_fewshot=0, limit=2)  # the next task still runs


def test_metric_names_drop_the_default_filter_and_keep_numbers_only() -> None:
    values = {"alias": "t", "acc,none": 0.5, "acc_stderr,none": 0.1, "ppl,none": float("inf"),
              "exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": "N/A"}
    assert metric_names("t", values) == {"eval/t/acc": 0.5, "eval/t/acc_stderr": 0.1,
                                         "eval/t/exact_match.strict-match": 0.25}


@pytest.mark.parametrize("script, task", [("make_quickstart_task.py", "quickstart_next"), ("make_hmm_task.py", "hmm_next")])
def test_the_shipped_task_files_are_what_their_scripts_write(tmp_path, script: str, task: str) -> None:
    import runpy

    from .helpers import REPO

    runpy.run_path(str(REPO / "sweeps" / "tasks" / script))["main"](tmp_path / "task.jsonl")
    assert (tmp_path / "task.jsonl").read_bytes() == (REPO / "sweeps" / "tasks" / "data" / f"{task}.jsonl").read_bytes()
