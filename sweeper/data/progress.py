"""Preparing a sweep's data with progress bars on the console: what `sweeper data`, `sweeper train`
and `sweeper run` all show while token pools are built."""

from __future__ import annotations

from typing import Any


def prepare_with_progress(spec: Any, unique_tokens: Any, storage: Any, *, console: Any, verify: bool = True) -> Any:
    """prepare() with progress bars on `console`, its errors as one line naming the spec or profile key,
    and one line naming the files of a cache that failed their checksums and was built again.
    `sweeper data`, `sweeper train` and `sweeper run` all prepare through here."""
    from sweeper.console import UserError
    from sweeper.data import DataError, prepare

    try:
        with _progress(console) as progress:
            prepared = prepare(spec.data, unique_tokens, storage, progress=progress, verify=verify)
    except DataError as error:
        # Spec keys get the spec file in front; profile keys already name the profile.
        raise UserError(f"{spec.file} {error}" if error.key.startswith("data.") else str(error)) from None
    if prepared.repaired:
        console.print(f"{prepared.manifest.uri}: {', '.join(prepared.repaired)} did not match the checksums in its "
                      "manifest; the cache was built again", markup=False, emoji=False, soft_wrap=True)
    return prepared



class _progress:
    """Rich progress bars on a terminal (one per stage), nothing when output is piped."""

    def __init__(self, console: Any):
        self.console, self.tasks = console, {}
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not self.console.is_terminal:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=self.console, transient=True)
        self.bar.start()
        return self.update

    def update(self, stage: str, done: int, total: int | None) -> None:
        if stage not in self.tasks:
            label = {"tokenizer": "learning BPE (bytes)", "validation": "validation tokens",
                     "train": "train tokens"}.get(stage, stage)
            self.tasks[stage] = self.bar.add_task(label, total=total)
        self.bar.update(self.tasks[stage], completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
