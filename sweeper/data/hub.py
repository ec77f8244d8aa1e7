"""The Hugging Face Hub, asked quickly: an unreachable Hub is an error in seconds.

`datasets` and `huggingface_hub` retry an unreachable Hub for about half a minute before they give
up. A connection probe with a short deadline first turns that into an immediate, clear error.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

from sweeper.data.errors import DataError

PROBE_SECONDS = 3.0
_TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """Offline mode as the Hugging Face libraries define it: read only their local cache."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def require_hub(key: str, what: str) -> None:
    """Raise DataError(key) unless a TCP connection to the Hub (or the HTTPS proxy) opens within
    PROBE_SECONDS. Name resolution runs in a thread too, since it takes no timeout of its own."""
    endpoint = hub_endpoint()
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urlparse(proxy if proxy else endpoint)
    host, port = target.hostname or "", target.port or (443 if target.scheme == "https" else 80)
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(error)

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(PROBE_SECONDS)
    if not outcome or outcome[0] is not None:
        reason = outcome[0] if outcome else f"no answer within {PROBE_SECONDS:g} s"
        via = f" through the proxy {host}:{port}" if proxy else ""
        raise DataError(key, f"cannot reach the Hugging Face Hub at {endpoint}{via} to fetch {what} ({reason}); "
                             "use local files, or set HF_HUB_OFFLINE=1 to read the local Hugging Face cache")
