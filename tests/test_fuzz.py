"""Property-based fuzzing (hypothesis) of the three doors a user opens: the import path, the
command line and every dashboard page's URL.

* **import**: random arrays (dtype, shape, NaN/Inf, labels, class names, key names) in every
  supported container, optionally corrupted (truncated, bit-flipped, garbage around it): the
  import either stores exactly the input or raises an :class:`EngineError` whose message is
  one line — never another exception.
* **cli**: random sub-commands and arguments through ``engine.cli.main(argv)`` (the code
  ``python -m engine`` runs): the exit code is 0, 1 or 2, an error is one line on stderr,
  nothing else escapes (no traceback).
* **pages**: random query parameters for every page (AppTest of the real app): no page ever
  raises; wrong values fall back with a message.

Examples are derandomised (the same ones every run, so CI is stable); ``-m slow`` and
``python -m bench.reliability_report`` run many more, with fresh random examples. The
``Tally`` objects count examples and outcomes for the report.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays, from_dtype
from safetensors.numpy import save_file

from engine.cli import main
from engine.errors import EngineError
from engine.ingest.importer import import_logits
from engine.storage.store import Cache
from tests.dashboard_cache import MODEL_A, MODEL_B, run_page, shared_cache

DEFAULT_EXAMPLES = {"import": 60, "cli": 40, "pages": 2}  # pages: per page
SLOW_EXAMPLES = {"import": 1000, "cli": 400, "pages": 40}
PAGES = ("explore", "compare", "atlas", "theory", "data", "jobs")


@dataclass
class Tally:
    """What one fuzz target saw: examples run, accepted inputs, clear refusals, failures."""

    examples: int = 0
    accepted: int = 0
    refused: int = 0  # refused with a one-line EngineError / exit code 2
    failures: list[str] = field(default_factory=list)  # anything else (must stay empty)


def run(prop, n: int, *, derandomize: bool = True) -> None:
    """Run a @given property for ``n`` examples."""
    settings(max_examples=n, derandomize=derandomize, database=None, deadline=None,
             suppress_health_check=list(HealthCheck))(prop)()


def _one_line(message: str) -> bool:
    return bool(message.strip()) and "\n" not in message.strip() and len(message) < 2000


# ----------------------------------------------------------------------------- import

DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_, np.complex64]
CORRUPTIONS = [None, None, "truncate", "flip", "prefix", "append"]


@st.composite
def _valid_case(draw):
    """A correct logits file's contents: float logits (N, K), labels in [0, K), K names."""
    n, k = draw(st.integers(1, 40)), draw(st.integers(2, 8))
    dtype = np.dtype(draw(st.sampled_from([np.float16, np.float32, np.float64])))
    logits = draw(arrays(dtype, (n, k), elements=st.floats(-1e4, 1e4, width=16 if dtype == np.float16 else 32)))
    labels = draw(arrays(np.int64, (n,), elements=st.integers(0, k - 1)))
    names = draw(st.one_of(st.none(), st.lists(st.text(max_size=12), min_size=k, max_size=k)))
    return logits, labels, names


@st.composite
def _wild_case(draw):
    """Anything: any dtype and shape, NaN/Inf, labels of any kind, names of any length."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    logits = draw(arrays(dtype, shape, elements=from_dtype(dtype, allow_nan=True, allow_infinity=True)
                         if dtype.kind == "f" else None))
    labels = draw(st.one_of(
        st.none(),
        arrays(np.int64, (shape[0] if len(shape) else 1,), elements=st.integers(-1, 7)),
        arrays(np.dtype(draw(st.sampled_from([np.int32, np.float32, np.uint8]))), draw(array_shapes(max_dims=2, max_side=6)))))
    names = draw(st.one_of(st.none(), st.lists(st.text(max_size=5), max_size=8)))
    return logits, labels, names


@st.composite
def import_cases(draw):
    fmt = draw(st.sampled_from(["npz", "npy", "safetensors", "pt"]))
    logits, labels, names = draw(st.one_of(_valid_case(), _wild_case()))
    key = draw(st.sampled_from(["logits", "logits", "logits", "scores", "Logits"]))
    corrupt = draw(st.sampled_from(CORRUPTIONS))
    where = draw(st.floats(0, 1))
    return fmt, logits, labels, names, key, corrupt, where


def _write(folder: Path, fmt, logits, labels, names, key) -> tuple[Path, Path | None]:
    """The case as a file a user could bring; (logits file, labels file or None)."""
    arrays_ = {key: logits} | ({"labels": labels} if labels is not None else {})
    if fmt == "npz":
        extra = {"class_names": np.array(names)} if names is not None else {}
        path = folder / "x.npz"
        np.savez(path, **arrays_, **extra)
        return path, None
    if fmt == "npy":
        np.save(folder / "x_logits.npy", logits)
        if labels is not None:
            np.save(folder / "x_labels.npy", labels)
        return folder / "x_logits.npy", None
    if fmt == "safetensors":
        path = folder / "x.safetensors"
        save_file({k: np.ascontiguousarray(v) for k, v in arrays_.items()}, str(path))
        return path, None
    path = folder / "x.pt"
    obj = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays_.items()}
    if names is not None:
        obj["class_names"] = list(names)
    torch.save(obj, path)
    return path, None


def _corrupt(path: Path, how: str | None, where: float) -> None:
    if how is None:
        return
    data = bytearray(path.read_bytes())
    at = min(int(where * len(data)), max(len(data) - 1, 0))
    if how == "truncate":
        data = data[:at]
    elif how == "flip" and data:
        data[at] ^= 0x5A
    elif how == "prefix":
        data = bytearray(b"\x00garbage\xff") + data
    elif how == "append":
        data += b"\x00" * 64 + b"PK\x05\x06"
    path.write_bytes(bytes(data))


def import_property(workdir: Path, tally: Tally):
    @given(import_cases())
    def prop(case):
        fmt, logits, labels, names, key, corrupt, where = case
        folder = workdir / uuid.uuid4().hex
        folder.mkdir(parents=True)
        try:
            try:
                path, _ = _write(folder, fmt, logits, labels, names, key)
            except (TypeError, ValueError, RuntimeError):
                assume(False)  # a container that cannot hold this dtype: not a file a user has
            _corrupt(path, corrupt, where)
            tally.examples += 1
            cache = Cache(folder / "cache")
            try:
                store = import_logits(cache, path, "x")
            except EngineError as exc:
                tally.refused += 1
                if not _one_line(str(exc)):
                    tally.failures.append(f"{fmt}/{corrupt}: unclear message {str(exc)!r}")
                if cache.store_names():
                    tally.failures.append(f"{fmt}/{corrupt}: refused, yet a store was written")
                return
            except Exception as exc:  # the finding: anything else escaped
                tally.failures.append(f"{fmt} {logits.dtype}{logits.shape} {corrupt}: {type(exc).__name__}: {exc}")
                return
            tally.accepted += 1
            if corrupt is None and key == "logits":  # accepted what was written: exactly that
                np.testing.assert_array_equal(store.logits, logits.astype(np.float32))
                np.testing.assert_array_equal(store.labels, np.asarray(labels).astype(np.int64))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return prop


# ----------------------------------------------------------------------------- cli


def cli_base(folder: Path) -> dict[str, str]:
    """A small cache with two stores and a finished job, plus files to pass to commands."""
    from engine.core.synthetic import classifier_like_logits
    from engine.jobs import jobs_table
    from tests.campaign import glyph_names, image_folder, tiny_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    F, y = classifier_like_logits(200, 8, rank=4, seed=0)
    np.savez(folder / "ok.npz", logits=F, labels=y, class_names=np.array(glyph_names(8)))
    np.save(folder / "labels.npy", y)
    (folder / "garbage.npz").write_bytes(b"PK\x03\x04 not really")
    (folder / "names.txt").write_text("\n".join(glyph_names(8)))
    (folder / "names.bin").write_bytes(b"\xff\xfe\x00")
    (folder / "evil.pt").write_bytes(b"\x80\x04cos\nsystem\n(S'true'\ntR.")
    (folder / "adir.npz").mkdir(exist_ok=True)
    cache = Cache(folder / "cache")
    import_logits(cache, folder / "ok.npz", "a")
    cache.save_store("b", F[:, ::-1].copy(), y)
    table = jobs_table(cache.root)
    job = table.insert("probe", {"seconds": 0.0}, cache.root / "jobs" / "logs", "local")
    report = cache.root / "runs" / "probe-x" / "report-1.json"
    report.parent.mkdir(parents=True)
    report.write_text('{"kind": "probe"}')
    table.update(job, state="succeeded", result_path=str(report))
    images = image_folder(folder / "images", k=3, per_class=2)
    ckpt = tiny_checkpoint(folder / "tiny.safetensors", k=3)
    return {"dir": str(folder), "images": str(images), "ckpt": str(ckpt)}


NASTY = ["0", "-1", "1", "2", "0.1", "2.5", "1e-320", "1e309", "nan", "inf", "-inf", "99999999999999999999999",
         "", " ", "²", "١٢", "a/../b", "../x", "-", "--", "a", "b", "x" * 300, "é", "0x10", "1_000", "true", "[]"]


def _value(files: dict):
    d = files["dir"]
    paths = [f"{d}/ok.npz", f"{d}/garbage.npz", f"{d}/evil.pt", f"{d}/adir.npz", f"{d}/missing.npz",
             f"{d}/labels.npy", f"{d}/names.txt", f"{d}/names.bin", f"{d}/out.json", "/", d]
    return st.one_of(st.sampled_from(NASTY), st.sampled_from(paths),
                     st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20))


def _opts(draw, value, names: list[str], flags: list[str] = ()):
    out = []
    for name in draw(st.lists(st.sampled_from(names), max_size=4, unique=True)):
        out += [name, draw(value)]
    return out + draw(st.lists(st.sampled_from(list(flags)), max_size=2, unique=True)) if flags else out


@st.composite
def cli_argv(draw, files: dict):
    value = _value(files)
    store = st.one_of(st.sampled_from(["a", "b", "zz", "../a", "a.json"]), value)
    d = files["dir"]
    kind = draw(st.sampled_from(["import", "stores", "deps", "verify", "jobs", "jobs-id", "submit",
                                 "settings", "extract", "random"]))
    if kind == "import":
        return ["import-logits", draw(value), "--name", draw(store),
                *_opts(draw, value, ["--labels", "--class-names"], ["--float16", "--overwrite"])]
    if kind == "stores":
        return ["stores", *draw(st.lists(st.just("--json"), max_size=1))]
    if kind == "deps":
        argv = ["dependencies", "--model", draw(store), "--alpha", draw(value), "--json",
                draw(st.sampled_from(["-", f"{d}/out.json", f"{d}/no/such/dir/x.json", "/"]))]
        argv += _opts(draw, value, ["--source", "--tol", "--device"])
        return argv + (["--target", *draw(st.lists(value, min_size=1, max_size=3))] if draw(st.booleans()) else [])
    if kind == "verify":
        return ["verify", *draw(st.lists(st.sampled_from(["--no-quarantine", "--json", "--clean"]), max_size=3, unique=True))]
    if kind == "jobs":
        return ["jobs", "list", *_opts(draw, value, ["--limit"], ["--json"])]
    if kind == "jobs-id":  # retry and cancel of existing jobs would start processes: odd ids only
        action = draw(st.sampled_from(["show", "logs", "report", "cancel", "retry"]))
        ids = st.sampled_from(["1", "2", "0", "-5", "99999999999999999999", "x", "1.5"]) if action in (
            "show", "logs", "report") else st.sampled_from(["0", "-5", "99999999999999999999", "x", "12345"])
        extra = _opts(draw, value, ["--tail"]) if action == "logs" else []
        return ["jobs", action, draw(ids), *extra]
    if kind == "submit":  # --no-start: queued, never run (nothing else looks at this cache)
        job = draw(st.sampled_from(["probe", "extract", "newclasses", "regularizer", "nope"]))
        fields = ["--seconds", "--fail", "--message", "--children", "--model", "--data", "--name",
                  "--checkpoint", "--epochs", "--lr", "--n-new", "--pairs", "--beta", "--alpha", "--device"]
        return ["jobs", "submit", job, *_opts(draw, value, fields), "--no-start"]
    if kind == "settings":
        return ["jobs", "settings", *_opts(draw, value, ["--backend", "--max-running"]),
                *(["--slurm", *draw(st.lists(value, max_size=2))] if draw(st.booleans()) else [])]
    if kind == "extract":  # a tiny model and folder: fast even when the arguments are right
        model = draw(st.sampled_from(["glyph-resnet", "nope", "resnet18", "hf-hub:timm/x", "../x"]))
        data = draw(st.sampled_from([files["images"], f"{d}/missing", f"{d}/adir.npz", f"{d}/ok.npz"]))
        argv = ["extract", "--model", model, "--data", data, "--name", draw(store), "--workers", "0",
                "--no-progress"]
        argv += ["--checkpoint", draw(st.sampled_from([files["ckpt"], f"{d}/evil.pt", f"{d}/garbage.npz",
                                                       f"{d}/missing.pt"]))] if draw(st.booleans()) else []
        return argv + _opts(draw, value, ["--batch-size", "--chunk-size", "--device", "--precision", "--dtype",
                                          "--split"])
    words = ["import-logits", "stores", "dependencies", "verify", "jobs", "extract", "demo", "--help",
             "--cache", "--model", "--alpha", "--json", "-v", "--no-such-option"]
    argv = draw(st.lists(st.one_of(st.sampled_from(words), value), max_size=6))
    if argv[:1] in (["demo"], ["train-classifier"]) or "demo" in argv:  # would build the glyph world
        argv = [*argv, "--no-such-option"]
    return argv


def cli_property(files: dict, workdir: Path, tally: Tally):
    base = Path(files["dir"]) / "cache"

    @given(cli_argv(files))
    def prop(argv):
        root = workdir / uuid.uuid4().hex
        shutil.copytree(base, root)
        tally.examples += 1
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(["--cache", str(root), *argv])
                except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
                    code = exc.code
        except Exception as exc:  # the finding: a traceback
            tally.failures.append(f"{argv!r}: {type(exc).__name__}: {exc}")
            return
        finally:
            shutil.rmtree(root, ignore_errors=True)
        if code not in (0, 1, 2):
            tally.failures.append(f"{argv!r}: exit code {code!r}")
        elif code == 2:
            tally.refused += 1
            lines = [line for line in err.getvalue().split("\n") if line.strip()]
            if len(lines) != 1 or not lines[0].startswith("error: "):
                tally.failures.append(f"{argv!r}: error output is not one 'error: …' line: {lines[:4]!r}")
        else:
            tally.accepted += 1

    return prop


# ----------------------------------------------------------------------------- pages

PAGE_VALUES = [MODEL_A, MODEL_B, "0", "-1", "59", "60", "7", "1e309", "nan", "inf", "-inf", "1e-320", "0.3", "²",
               "١٢", "０", "", " ", "<script>alert(1)</script>", "__import__('os').system('touch /tmp/nde-pwn')",
               "../../etc/passwd", "x" * 3000, "0x10", "1_000", "LATIN", "é LATIN SMALL LETTER E WITH ACUTE",
               "best-subset", "covlasso", "8", "9", "3.0"]


def _page_params():
    text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
    return st.dictionaries(st.sampled_from(["model", "source", "target", "alpha", "method", "m", "q", "page", "x"]),
                           st.one_of(st.sampled_from(PAGE_VALUES), text), max_size=4)


def page_property(page: str, tally: Tally):
    @given(_page_params())
    def prop(params):
        tally.examples += 1
        try:
            at = run_page(None if page == "explore" else page, params)
        except Exception as exc:
            tally.failures.append(f"{page} {params!r}: the test harness failed: {type(exc).__name__}: {exc}")
            return
        if at.exception:
            tally.failures.append(f"{page} {params!r}: {at.exception[0].value}")
        elif not at.title:
            tally.failures.append(f"{page} {params!r}: the page drew no title")
        else:
            tally.accepted += 1

    return prop


# ----------------------------------------------------------------------------- the tests


def _assert_no_failures(tally: Tally, n: int) -> None:
    assert tally.failures == [], "\n".join(tally.failures[:20])
    assert tally.examples >= n * 0.8, f"only {tally.examples} of {n} examples ran"


def test_fuzz_import(tmp_path):
    tally = Tally()
    run(import_property(tmp_path, tally), DEFAULT_EXAMPLES["import"])
    _assert_no_failures(tally, DEFAULT_EXAMPLES["import"])
    assert tally.accepted and tally.refused  # both sides of the door were exercised


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    return cli_base(tmp_path_factory.mktemp("cli-fuzz"))


def test_fuzz_cli(cli_files, tmp_path):
    tally = Tally()
    run(cli_property(cli_files, tmp_path, tally), DEFAULT_EXAMPLES["cli"])
    _assert_no_failures(tally, DEFAULT_EXAMPLES["cli"])
    assert not Path("/tmp/nde-pwn").exists()


@pytest.fixture(scope="module")
def page_cache(tmp_path_factory):
    import os

    root = shared_cache(tmp_path_factory.getbasetemp())
    before = os.environ.get("NDE_CACHE")
    os.environ["NDE_CACHE"] = str(root)
    yield root
    if before is None:
        os.environ.pop("NDE_CACHE", None)
    else:
        os.environ["NDE_CACHE"] = before


@pytest.mark.parametrize("page", PAGES)
def test_fuzz_page_query_parameters(page_cache, page):
    tally = Tally()
    run(page_property(page, tally), DEFAULT_EXAMPLES["pages"])
    _assert_no_failures(tally, DEFAULT_EXAMPLES["pages"])
    assert not Path("/tmp/nde-pwn").exists()


@pytest.mark.slow
def test_fuzz_many(cli_files, page_cache):
    with tempfile.TemporaryDirectory() as tmp:
        for name, prop_of in (("import", lambda t: import_property(Path(tmp), t)),
                              ("cli", lambda t: cli_property(cli_files, Path(tmp), t))):
            tally = Tally()
            run(prop_of(tally), SLOW_EXAMPLES[name], derandomize=False)
            _assert_no_failures(tally, SLOW_EXAMPLES[name])
    for page in PAGES:
        tally = Tally()
        run(page_property(page, tally), SLOW_EXAMPLES["pages"], derandomize=False)
        _assert_no_failures(tally, SLOW_EXAMPLES["pages"])


def test_targets_written_with_non_ascii_digits_are_names_not_a_crash(cache, capsys):
    """Found by fuzzing the CLI: "²".isdigit() is True, int("²") raises."""
    from engine.core.synthetic import classifier_like_logits

    F, y = classifier_like_logits(100, 4, rank=3, seed=0)
    cache.save_store("a", F, y)
    code = main(["--cache", str(cache.root), "dependencies", "--model", "a", "--alpha", "0.1",
                 "--target", "²", "--json", "-"])
    assert code == 2 and "no category named '²'" in capsys.readouterr().err


def test_a_npy_header_cut_mid_expression_is_refused(cache, tmp_path):
    """Found by fuzzing the import: NumPy parses the header as Python and raised TokenError."""
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 2), np.float32))
    raw = bytearray(buf.getvalue())
    raw[raw.index(b")")] = ord(" ")  # "'shape': (3, 2 }": an unterminated expression
    (tmp_path / "cut_logits.npy").write_bytes(bytes(raw))
    np.save(tmp_path / "cut_labels.npy", np.zeros(3, np.int64))
    with pytest.raises(EngineError, match="not a NumPy array file"):
        import_logits(cache, tmp_path / "cut_logits.npy", "x")


def test_an_archive_with_a_damaged_directory_is_refused(cache, tmp_path):
    """Found by fuzzing the import: zipfile.is_zipfile itself raised BadZipFile ("zipfiles that
    span multiple disks") for a .pt whose end-of-archive record had one changed byte."""
    path = tmp_path / "x.pt"
    torch.save({"logits": torch.zeros(5, 3), "labels": torch.zeros(5, dtype=torch.long)}, path)
    raw = bytearray(path.read_bytes())
    locator = raw.rindex(b"PK\x06\x07")  # torch writes zip64: the locator's disk count is at +16
    raw[locator + 16] ^= 0x5A
    path.write_bytes(bytes(raw))
    with pytest.raises(EngineError):
        import_logits(cache, path, "x")
    npz = tmp_path / "x.npz"
    npz.write_bytes(bytes(raw))
    with pytest.raises(EngineError):
        import_logits(cache, npz, "y")


def test_a_value_with_a_line_break_still_gives_a_one_line_error(tmp_path, capsys):
    """Found by fuzzing the CLI: argparse put a typed newline into its message verbatim."""
    with pytest.raises(SystemExit) as info:
        main(["--cache", str(tmp_path), "stores", "--no-such", "a\nb"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "a\\nb" in err
