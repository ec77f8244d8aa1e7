"""How a trial over several devices (a Ray Train run inside its Tune trial) hands its results to Tune.

Ray's `TuneReportCallback` puts each Train report into a queue that the Tune trial's main thread
reads, while the trial function's own thread reports too: its own results, and Tune's end-of-trial
marker when it returns. Both go into Tune's result queue, which holds one result. When a Train
report was still in the queue as the Train run ended (a driver slow to take results, e.g. on a
loaded machine), the function's last result won the race, and the main thread then blocked for good
putting the Train report behind it: the trial hung after its Train run had ended.

So Train's controller puts its reports into a queue of ours (ForwardReports), and the trial
function's thread runs `fit()` beside it and reports every one itself (report_while_training):
every result of the trial reaches Tune from one thread, in order, and the last only after the Train
run has ended and its reports are all in.

Imported only where Ray Train runs (sweeper.driver.worker, and Train's controller that unpickles it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ray.train import UserCallback
from ray.util.queue import Empty, Queue

POLL_S = 0.2  # how long the trial's thread waits for a report before it looks whether fit() ended


class ForwardReports(UserCallback):
    """Puts rank 0's metrics of every Train report into `queue` (runs in Train's controller). The
    checkpoints need no forwarding: Train persists them in the trial's folder, where a resumed run
    finds them (sweeper.driver.checkpoints)."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        self.queue.put(dict(metrics[0]))


def report_while_training(fit: Callable[[], Any], queue: Queue, report: Callable[[dict[str, Any]], None]) -> None:
    """Run `fit` (a Train run whose ForwardReports puts into `queue`) in a thread, and call `report`
    in this one for each of its reports, in order, until `fit` has returned and `queue` is empty.
    Raises what `fit` raised, after every report before it (its controller put each one before the
    run ended)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            fit()
        except BaseException as error:  # handed to the caller's thread below
            raised.append(error)

    thread = threading.Thread(target=run, name="sweeper-train-run", daemon=True)
    thread.start()
    while True:
        running = thread.is_alive()  # before the get: once it has ended, an empty queue is the end
        try:
            metrics = queue.get(timeout=POLL_S)
        except Empty:
            if not running:
                break
            continue
        report(metrics)
    thread.join()
    if raised:
        raise raised[0]
