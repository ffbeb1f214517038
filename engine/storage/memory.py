"""How much memory this machine can give, and refusing work that needs more before it starts."""

from __future__ import annotations

from engine.errors import InvalidInputError


def available_memory() -> int:
    """Bytes of memory this machine can give a process now (MemAvailable), or a large number."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or unusable: do not refuse on a guess
        return 1 << 62


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_memory(needed: int, what: str, hint: str) -> None:
    """Refuse, before anything is allocated, work that needs more memory than is available."""
    free = available_memory()
    if needed > free:
        raise InvalidInputError(
            f"{what} needs {gib(needed)} of memory; this machine has {gib(free)} available. {hint}")
