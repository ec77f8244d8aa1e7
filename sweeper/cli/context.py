"""What one command works on, each loaded at most once: the spec, the backend profile, the plan
and the tracking store.

A handler makes one `Context` from its parsed arguments and asks it; nothing is read before it is
asked for, so `validate` never touches MLflow and `ui` never reads a spec. The order in which a
handler asks is the order in which the user's errors surface (the spec's, then the profile's, then
the plan's, then the store's). Commands over several specs (`fit`, `report`) take one context per
spec from `for_spec`; they share the profiles and the tracking stores, so a profile file read for
one spec is not read again for the next.

Only the standard library at module level: the CLI imports this module to build its parser.
"""

from __future__ import annotations

import argparse
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sweeper.plan import Plan
    from sweeper.profile import Profile
    from sweeper.spec import SweepSpec
    from sweeper.tracking import Tracking


class Context:
    """One command's spec (`args.spec` unless given), profile (`--backend FILE`, `--cluster` or
    backends/local.yaml), plan and tracking store."""

    def __init__(self, args: argparse.Namespace, spec_file: str | None = None) -> None:
        self.args = args
        self.spec_file: str | None = spec_file if spec_file is not None else getattr(args, "spec", None)
        self._profiles: dict[Path, Profile] = {}  # by file
        self._trackings: dict[tuple[str, str], Tracking] = {}  # by (tracking URI, experiment)
        self._others: dict[str, Context] = {}  # by spec file

    def for_spec(self, spec_file: str) -> Context:
        """The context of another spec of the same command (`fit A.yaml B.yaml`), sharing this one's
        profiles and tracking stores."""
        if spec_file not in self._others:
            other = Context(self.args, spec_file)
            other._profiles, other._trackings, other._others = self._profiles, self._trackings, self._others
            self._others[spec_file] = other
        return self._others[spec_file]

    @cached_property
    def spec(self) -> SweepSpec:
        from sweeper.spec import load_spec

        return load_spec(self.spec_file)

    @cached_property
    def profile(self) -> Profile:
        from sweeper.profile import default_profile_path, load_profile

        args = self.args
        path = Path(args.backend) if args.backend else \
            default_profile_path("cluster" if args.cluster else "local", self.spec_file)
        if path not in self._profiles:
            self._profiles[path] = load_profile(path)
        return self._profiles[path]

    @cached_property
    def plan(self) -> Plan:
        from sweeper.plan import plan_sweep

        return plan_sweep(self.spec, self.profile)

    @property
    def embedded(self) -> bool:
        """The profile runs Ray in this process (else the sweep's driver is a cluster's job)."""
        return self.profile.ray.address == "embedded"

    def tracking(self, *, create: bool = False) -> Tracking:
        """The spec's experiment in the profile's tracking store, checked reachable first. `create`:
        make the experiment where it does not exist yet (else an absent experiment holds no runs)."""
        from sweeper.tracking import Tracking, check_reachable

        experiment = self.spec.experiment
        uri = self.profile.tracking_uri()
        if (uri, experiment) not in self._trackings:
            check_reachable(uri)
            self._trackings[uri, experiment] = Tracking(uri, experiment, create=create)
        return self._trackings[uri, experiment]
