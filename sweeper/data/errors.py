"""The one error the data layer raises for a mistake the user can fix, named by its spec key."""

from __future__ import annotations

from sweeper.console import UserError


class DataError(UserError):
    """`key: message`, where `key` is the spec (`data.train.paths[0]`) or profile (`storage.path`)
    setting to fix. The `sweeper data` command prefixes the spec file."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}" if key else message)


class CacheFileError(DataError):
    """A token cache file that is missing or does not match its manifest's checksums: the cache must
    be built again, which `sweeper data` (and `sweeper run`, for a cache in a local folder) does."""
