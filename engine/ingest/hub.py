"""Where pretrained timm weights come from: downloaded on first use, as timm does, or offline.

timm fetches pretrained weights from the Hugging Face Hub (a few older ones from a URL
through ``torch.hub``) and keeps them in the local cache (``~/.cache/huggingface``, or
``HF_HOME`` / ``HF_HUB_CACHE``); later runs read that copy. This module decides, per call,
whether a download may happen:

* **offline** when the user says so — ``HF_HUB_OFFLINE=1`` (the Hub client's own switch,
  also honoured as ``TRANSFORMERS_OFFLINE``) in the environment, or ``offline=True``
  (the CLI's ``--offline``): only the local cache is read, and a missing file is an error
  that says how to get it;
* **online** otherwise: missing weights are downloaded with timm's own progress bar.

The Hub client reads ``HF_HUB_OFFLINE`` once, when it is imported; :func:`hub_mode` sets its
switch for the duration of one model creation, so the environment at call time (and the
flag) decide, whatever it was when ``huggingface_hub`` was first imported.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TRUE = {"1", "on", "yes", "true"}


def offline_from_env() -> bool:
    """True when the environment asks the Hub client to stay offline."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def is_offline(offline: bool = False) -> bool:
    """Offline when asked here (``--offline``) or by the environment; the flag never forces online."""
    return bool(offline) or offline_from_env()


@contextmanager
def hub_mode(offline: bool) -> Iterator[None]:
    """The Hub client online or offline while the block runs (restored afterwards)."""
    try:
        import huggingface_hub.constants as constants
    except ImportError:  # pragma: no cover - timm requires it
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = bool(offline)
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def url_weights_cached(url: str) -> bool:
    """Whether weights timm takes from a URL (``torch.hub``) are already in torch's cache."""
    import torch.hub

    name = os.path.basename(url.split("?", 1)[0])
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


def missing_weights_message(name: str, offline: bool, reason: str) -> str:
    """What to do when pretrained weights could not be had, online or offline."""
    if offline:
        return (f"pretrained weights for {name!r} are not in the local cache and downloads are off "
                f"(HF_HUB_OFFLINE=1 or --offline; {reason}). Run the command once on a machine "
                "with internet (timm downloads them on first use) and copy ~/.cache/huggingface "
                "here (or point HF_HOME at a copy); on this machine, if it is online, unset "
                "HF_HUB_OFFLINE and drop --offline; or pass --checkpoint FILE")
    return (f"pretrained weights for {name!r} are not in the local cache and could not be "
            f"downloaded ({reason}). Check the network (or HF_ENDPOINT and proxy settings), or "
            "copy ~/.cache/huggingface from a machine that has them (or point HF_HOME at a copy), "
            "or pass --checkpoint FILE; on a machine without internet set HF_HUB_OFFLINE=1 or "
            "pass --offline so that nothing is tried")
