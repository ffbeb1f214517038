"""Follow one request through the engine's layers: how often each layer is entered, in order.

A layer is *entered* when a function of that layer is called by a function of another layer
(calls through numpy, torch, Streamlit or the standard library are transparent: the nearest
caller of ours counts; a module's import is not a call). Two requests, on a cache that has everything they read (the demo's):

* ``dependencies``: ``python -m engine dependencies --model M --alpha 2.5 --target T --json -``
  (the CLI in this process);
* ``explore``: the Explore page opened on the model (Streamlit's AppTest, this process);
* ``compare``: the Compare page opened on the model's category from ``--source``'s logits.

    .venv/bin/python -m bench.layer_trace --cache /tmp/cache [--model glyph-vgg] [--target 1]

Prints, per request, the entries per layer, the order in which the layers are first entered,
the order of the layers entered (consecutive repeats folded) and the *hand-backs*: the times
control came back up to a layer that had already called into a lower one and went down again
(a layer's second, third … call into the layers below it; a request that goes down the layers
once has none above the stage that gathers its data). Reads of a lower layer's properties
(``store.k``) are counted apart, as are calls that start a thread (the Gram's hash checked
beside the store's reading) and calls up a layer (callbacks). The layers are those of
docs/architecture.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import threading
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("dashboard", "cli", "commands", "apps", "train", "jobs", "ingest", "stages", "storage", "core")


def layer_of(filename: str) -> str | None:
    """The layer of a source file, or None when it is not ours (libraries, the standard library)."""
    try:
        parts = Path(filename).resolve().relative_to(ROOT).parts
    except ValueError:
        return None
    if parts[0] == "dashboard":
        return "dashboard"
    if parts[0] != "engine":
        return None
    if len(parts) == 2:
        return {"cli.py": "cli", "__main__.py": "cli"}.get(parts[1], "engine")  # errors, __init__
    return parts[1]


def _importing(frame) -> bool:
    """Whether ``frame`` runs because a module is being imported."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _is_property(frame) -> bool:
    """Whether ``frame`` is the getter of a property (``store.k``, ``cache.derived_dir``)."""
    owner = frame.f_locals.get("self")
    return owner is not None and isinstance(getattr(type(owner), frame.f_code.co_name, None), property)


class LayerTrace:
    """A profile hook that records every call that crosses from one of our layers to another."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root  # the layer the request starts in when its first frame is not seen (a page's script)
        self.entries: list[str] = []
        self.calls: Counter = Counter()  # (from layer, to layer, function) of every entry
        self.property_reads: Counter = Counter()  # entries that only read a property (store.k, …)
        self.down_calls: Counter = Counter()  # calls (not property reads) from a layer into a lower one
        self.up_calls: Counter = Counter()  # calls from a layer into a higher one (callbacks)
        self.thread_starts: Counter = Counter()  # entries with no caller of ours (a thread's first call)
        self._layers: dict[object, str | None] = {}

    def _hook(self, frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        if code.co_name == "<module>":  # a module being imported, not a request's call
            return
        layer = self._layers.get(code.co_filename, ...)
        if layer is ...:
            layer = self._layers[code.co_filename] = layer_of(code.co_filename)
        if layer is None or layer == "engine":
            return
        caller = frame.f_back
        while caller is not None:
            prev = self._layers.get(caller.f_code.co_filename, ...)
            if prev is ...:
                prev = self._layers[caller.f_code.co_filename] = layer_of(caller.f_code.co_filename)
            if prev is not None and prev != "engine":
                break
            caller = caller.f_back
        if caller is not None and caller.f_code.co_name == "<module>" and _importing(caller):
            return  # a module's top level, run by an import
        if caller is None or prev != layer:
            self.entries.append(layer)
            self.calls[(prev if caller is not None else "-", layer, code.co_qualname)] += 1
            if _is_property(frame):
                self.property_reads[layer] += 1
            elif caller is None:
                if len(self.entries) > 1:  # the first is the request itself (bench calls it)
                    self.thread_starts[layer] += 1
            elif prev in LAYERS and LAYERS.index(prev) < LAYERS.index(layer):
                self.down_calls[prev] += 1
            else:
                self.up_calls[(prev, layer)] += 1

    @contextlib.contextmanager
    def active(self):
        sys.setprofile(self._hook)
        threading.setprofile(self._hook)
        try:
            yield self
        finally:
            sys.setprofile(None)
            threading.setprofile(None)

    def summary(self) -> tuple[Counter, list[str]]:
        order: list[str] = []
        for layer in self.entries:
            if not order or order[-1] != layer:
                order.append(layer)
        return Counter(self.entries), order

    def first_entries(self) -> list[str]:
        """The layers in the order they are first entered."""
        return list(dict.fromkeys([self.root, *self.entries] if self.root else self.entries))

    def hand_backs(self) -> Counter:
        """Per layer, how often control came back up to it and it called down again: its calls
        into lower layers after the first (property reads and thread starts not counted)."""
        return Counter({layer: n - 1 for layer, n in self.down_calls.items() if n > 1})


def trace_dependencies(cache: str, model: str, target: str) -> LayerTrace:
    from engine.cli import main

    trace = LayerTrace()
    with trace.active(), contextlib.redirect_stdout(io.StringIO()):
        main(["--cache", cache, "dependencies", "--model", model, "--alpha", "2.5", "--target", target,
              "--json", "-"])
    return trace


def trace_explore(cache: str, model: str) -> LayerTrace:
    import os

    from streamlit.testing.v1 import AppTest

    os.environ["NDE_CACHE"] = cache
    app = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300)  # Explore opens
    app.query_params["model"] = model
    trace = LayerTrace(root="dashboard")  # the page's script runs from Streamlit's, not from a call of ours
    with trace.active():
        app.run()
    if app.exception:
        raise SystemExit(f"the Explore page failed: {app.exception[0].message}")
    return trace


def trace_compare(cache: str, model: str, source: str) -> LayerTrace:
    import os

    from streamlit.testing.v1 import AppTest

    os.environ["NDE_CACHE"] = cache
    app = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300)
    app.query_params["model"], app.query_params["source"] = model, source
    app.switch_page("app_pages/compare.py")
    trace = LayerTrace(root="dashboard")
    with trace.active():
        app.run()
    if app.exception:
        raise SystemExit(f"the Compare page failed: {app.exception[0].message}")
    return trace


def _report(name: str, trace: LayerTrace) -> None:
    counts, order = trace.summary()
    reads = trace.property_reads
    print(f"{name}: {sum(counts.values())} layer entries ({sum(reads.values())} of them property reads)")
    for layer in LAYERS:
        if counts[layer]:
            print(f"  {layer:10s} entered {counts[layer]:5d} times ({counts[layer] - reads[layer]} calls, "
                  f"{reads[layer]} property reads)")
    shown = " > ".join(order[:40]) + (" > …" if len(order) > 40 else "")
    print(f"  first entries: {' > '.join(trace.first_entries())}")
    backs = trace.hand_backs()
    per = ", ".join(f"{layer} {backs[layer]}" for layer in LAYERS if backs[layer])
    print(f"  hand-backs: {sum(backs.values())} ({per or 'none'}); calls down per layer: "
          + ", ".join(f"{layer} {trace.down_calls[layer]}" for layer in LAYERS if trace.down_calls[layer]))
    if trace.thread_starts or trace.up_calls:
        print(f"  thread starts: {dict(trace.thread_starts)}; calls up a layer: "
              f"{ {f'{a} > {b}': n for (a, b), n in trace.up_calls.items()} }")
    print(f"  order ({len(order)} steps): {shown}")
    print("  most entered (from > to: function × times):")
    for (src, dst, name), n in trace.calls.most_common(12):
        print(f"    {src} > {dst}: {name} × {n}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--model", default="glyph-vgg")
    parser.add_argument("--target", default="1")
    parser.add_argument("--source", default="glyph-vgg-seed2", help="Compare: the model whose logits predict")
    parser.add_argument("--only", choices=("dependencies", "explore", "compare"))
    args = parser.parse_args(argv)
    if args.only in (None, "dependencies"):
        _report("dependencies", trace_dependencies(args.cache, args.model, args.target))
    if args.only in (None, "explore"):
        _report("explore", trace_explore(args.cache, args.model))
    if args.only in (None, "compare"):
        _report("compare", trace_compare(args.cache, args.model, args.source))


if __name__ == "__main__":
    main()
