"""`follow_job` streams a job's log once, and falls back to polling only what is new."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sweeper.driver import cluster


class FakeJobs:
    def __init__(self, chunks: list[str], *, fail_after: int | None = None, statuses: list[str] | None = None):
        self.chunks, self.fail_after = chunks, fail_after
        self.statuses = list(statuses or ["SUCCEEDED"])
        self.log_fetches = 0

    async def tail_job_logs(self, job_id: str):
        for i, chunk in enumerate(self.chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("WebSocket connection closed unexpectedly with close code 1006")
            yield chunk

    def get_job_logs(self, job_id: str) -> str:
        self.log_fetches += 1
        return "".join(self.chunks)

    def get_job_status(self, job_id: str) -> str:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def get_job_info(self, job_id: str):
        return SimpleNamespace(driver_exit_code=0, message="")


def test_the_log_is_streamed_not_refetched(capsys) -> None:
    jobs = FakeJobs(["line 1\n", "line 2\n", "line 3\n"])
    assert cluster.follow_job(jobs, "sweeper-x-1", "spec.yaml") == 0
    out = capsys.readouterr().out
    assert out.startswith("line 1\nline 2\nline 3\n") and out.count("line 2") == 1
    assert jobs.log_fetches == 0


def test_a_broken_stream_falls_back_to_polling_what_is_new(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "FOLLOW_POLL_S", 0.0)
    jobs = FakeJobs(["line 1\n", "line 2\n", "line 3\n"], fail_after=2, statuses=["RUNNING", "SUCCEEDED"])
    assert cluster.follow_job(jobs, "sweeper-x-1", "spec.yaml") == 0
    out = capsys.readouterr().out
    assert out.startswith("line 1\nline 2\nline 3\njob sweeper-x-1: succeeded") and out.count("line 1") == 1
