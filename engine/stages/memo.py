"""The in-memory memo of what a page's view read or solved (:class:`Memo`, :func:`fetch`).

A least-recently-used table per kind (stores, Grams, paths, curves, cards …), each entry keyed
by the stores' stamps, so a re-imported store is read afresh. One per cache, held by the caller
(the dashboard: :func:`dashboard.components.loaders._explore_memo`); filled by the stages'
page data (:mod:`engine.stages.page_data`) through :func:`fetch`, and by the views of
:mod:`engine.apps` with their own copy of it (:func:`engine.apps.controls.fetch`: an apps'
entry made by a stage function would be a call down and back up the layers).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

LOCK = threading.Lock()
LIMITS = {"card": 256, "path": 128, "curve": 128, "cpath": 64, "ccurve": 64, "centred": 4, "spec": 16, "alpha": 64}


class Memo(OrderedDict):
    """What a view read or solved, in memory: a least-recently-used table per kind, each entry
    keyed by the stores' stamps. Thread-safe; two callers may compute one entry twice, the
    stages' disk cache makes that cheap."""


def fetch(memo: Memo, kind: str, key: tuple, make: Callable, keep_none: bool = True):
    """``memo``'s entry ``key`` of ``kind``, made by ``make()`` the first time (a None result is
    not kept when ``keep_none`` is False: a job may be writing it now, look again next time)."""
    with LOCK:
        table = memo.setdefault(kind, OrderedDict())
        if key in table:
            table.move_to_end(key)
            return table[key]
    value = make()
    if value is None and not keep_none:
        return None
    with LOCK:
        table[key] = value
        while len(table) > LIMITS.get(kind, 8):
            table.popitem(last=False)
    return value
