"""`sweeper ui` against a real MLflow server on 127.0.0.1 (the smoke sweep's test renders its pages
in Chromium)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from servers import sweeper_ui
from test_run import write_profile

PIPE_BYTES = 64 * 1024  # a Linux pipe's buffer


def test_the_ui_keeps_answering_after_its_server_wrote_more_than_a_pipe_holds_to_stderr(tmp_path: Path) -> None:
    """MLflow's server writes a traceback to stderr for each request it fails: `GET /graphql`
    without a body is one of about 1.5 KB in MLflow 3.18. Were nobody reading that stream, the
    server would stop mid-request once its pipe was full (a page load of the runs can fail several
    requests at 16 KB each)."""
    profile = write_profile(tmp_path)
    with sweeper_ui(profile, tmp_path) as urls:
        base = urls[0].split("/#/")[0]
        failed = 0
        for _ in range(2 * PIPE_BYTES // 1500):
            try:
                urllib.request.urlopen(f"{base}/graphql", timeout=30)
            except urllib.error.HTTPError as error:
                failed += error.code == 500
        assert failed == 2 * PIPE_BYTES // 1500
        with urllib.request.urlopen(f"{base}/health", timeout=30) as answer:
            assert answer.status == 200
