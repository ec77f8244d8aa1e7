"""Readable numbers: 25M tokens, 2.3e18 FLOPs, 1.6 GB, 3.2 h."""

from __future__ import annotations

_SUFFIXES = ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "k"))


def fmt_count(value: float) -> str:
    """25_000_000 -> 25M, 24_743_247 -> 24.7M, 1_500_000_000 -> 1.5B, 512 -> 512."""
    for scale, suffix in _SUFFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}" if isinstance(value, float) and not value.is_integer() else str(int(value))


def fmt_epochs(epochs: float) -> str:
    return str(int(epochs)) if float(epochs).is_integer() else f"{epochs:.3g}"


def fmt_sci(value: float) -> str:
    """2.3e18 style, compact."""
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def fmt_bytes(value: float) -> str:
    for scale, suffix in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if value >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{int(value)} B"


def fmt_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
