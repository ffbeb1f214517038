"""Untrusted files: nothing is ever unpickled, names never become paths, uploads are bounded.

Three kinds of check:
* a scan of the project's own code for every way Python can run code from a file or a string
  (pickle, ``torch.load`` without ``weights_only=True``, ``np.load(allow_pickle=True)``,
  ``eval``/``exec``, shells...), with a self-test showing the scanner does catch them;
* malicious files — pickles whose loading would create a canary file — offered through every
  door (import, CLI, dashboard upload, model checkpoint, a planted cache entry): all refused
  with a reason, and the canary never appears;
* names that try to leave the cache (store names, uploaded file names), and oversized or
  "zip bomb" uploads: refused with a message, nothing written outside.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import tempfile
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dashboard.components.uploads import MAX_UNPACKED_BYTES, MAX_UPLOAD_MB, import_upload
from engine.cli import main
from engine.errors import EngineError, IntegrityError, InvalidInputError
from engine.ingest.importer import import_logits
from engine.ingest.models import read_state_dict
from engine.storage.manifests import check_store_name
from engine.storage.store import Cache

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("engine", "dashboard", "bench")  # the product; tests build malicious files on purpose


# ----------------------------------------------------------------------------- the code scan


def _call_name(node: ast.Call) -> str:
    parts, f = [], node.func
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    parts.append(f.id if isinstance(f, ast.Name) else "<expr>")  # model.eval() is not eval()
    return ".".join(reversed(parts))


def _kw(node: ast.Call, name: str):
    for kw in node.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else kw.value
    return None


# modules whose loading runs code from the bytes it reads
_BANNED_IMPORTS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"}
_BANNED_CALLS = {"eval", "exec", "compile", "os.system", "os.popen", "pd.read_pickle", "pandas.read_pickle",
                 "torch.jit.load", "yaml.unsafe_load", "np.lib.format.read_array"}


def unsafe_calls(source: str, filename: str = "<code>") -> list[str]:
    """Every construct in ``source`` that can execute code from data, as 'file:line: what'."""
    out = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            bad = {n.split(".")[0] for n in names} & _BANNED_IMPORTS
            if bad:
                out.append(f"{where}: imports {', '.join(sorted(bad))}")
            if isinstance(node, ast.ImportFrom) and node.module == "torch" and "load" in [a.name for a in node.names]:
                out.append(f"{where}: imports torch.load under another name (the scan could not follow it)")
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        if name in _BANNED_CALLS:
            out.append(f"{where}: calls {name}()")
        elif name.endswith("torch.load"):
            if _kw(node, "weights_only") is not True:
                out.append(f"{where}: torch.load without weights_only=True")
        elif name in ("np.load", "numpy.load") and _kw(node, "allow_pickle") not in (None, False):
            out.append(f"{where}: np.load with allow_pickle other than False")
        elif name == "yaml.load" and "Safe" not in ast.unparse(node):
            out.append(f"{where}: yaml.load without a SafeLoader")
        elif name.startswith("subprocess.") and _kw(node, "shell") not in (None, False):
            out.append(f"{where}: {name}(shell=...)")
        elif name.endswith("import_module") and not (node.args and isinstance(node.args[0], ast.Name | ast.Constant)):
            out.append(f"{where}: import_module of a computed name")
    return out


def test_the_scanner_catches_every_unsafe_construct():
    bad = """
import pickle
from joblib import load
import torch, numpy as np, subprocess, yaml, os
torch.load(f)
torch.load(f, weights_only=False)
np.load(f, allow_pickle=True)
eval(text)
model.to("cpu").eval()
exec(text)
os.system(cmd)
subprocess.run(cmd, shell=True)
yaml.load(text)
from torch import load
"""
    found = unsafe_calls(bad)
    assert len(found) == 11, found
    good = """
import torch, numpy as np, subprocess
torch.load(f, map_location="cpu", weights_only=True)
np.load(f, allow_pickle=False)
np.load(f)
subprocess.run(["python", "-m", "engine"])
"""
    assert unsafe_calls(good) == []


def test_no_code_path_of_the_product_can_execute_a_file_or_a_string():
    files = [p for d in SCANNED for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 40
    found = [hit for p in files for hit in unsafe_calls(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))]
    assert found == [], "\n".join(found)


def test_torch_is_new_enough_for_weights_only_to_be_safe():
    """``torch.load(weights_only=True)`` could still run code up to torch 2.5.1 (CVE-2025-32434)."""
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    assert (major, minor) >= (2, 6), torch.__version__


# ----------------------------------------------------------------------------- malicious files


class _Payload:
    """Unpickling this creates the canary file (a stand-in for any code an attacker wants)."""

    def __init__(self, canary: Path):
        self.canary = str(canary)

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


def _malicious_files(folder: Path, canary: Path) -> dict[str, Path]:
    F = np.zeros((4, 3), np.float32)
    y = np.zeros(4, np.int64)
    evil = _Payload(canary)
    files = {}
    files["raw pickle .pt"] = folder / "raw.pt"
    files["raw pickle .pt"].write_bytes(pickle.dumps({"logits": evil, "labels": y}))
    files["torch.save zip .pt"] = folder / "zip.pt"
    torch.save({"logits": torch.zeros(4, 3), "labels": torch.zeros(4, dtype=torch.long), "extra": evil},
               files["torch.save zip .pt"])
    files["object .npy"] = folder / "obj_logits.npy"
    np.save(files["object .npy"], np.array([evil, evil], dtype=object), allow_pickle=True)
    np.save(folder / "obj_labels.npy", y)
    files["object .npz"] = folder / "obj.npz"
    np.savez(files["object .npz"], logits=np.array([evil], dtype=object), labels=y)
    files["pickle named .npz"] = folder / "fake.npz"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("logits.npy", pickle.dumps(evil))
        z.writestr("labels.npy", pickle.dumps(y))
    files["pickle named .npz"].write_bytes(buf.getvalue())
    files["pickle named .safetensors"] = folder / "fake.safetensors"
    files["pickle named .safetensors"].write_bytes(pickle.dumps({"logits": F, "x": evil}))
    return files


@pytest.fixture
def evil(tmp_path):
    canary = tmp_path / "CANARY"
    files = _malicious_files(tmp_path, canary)
    yield files, canary
    assert not canary.exists(), "a malicious pickle was executed"


def test_pickle_payloads_are_refused_by_the_importer(evil, cache):
    files, canary = evil
    for what, path in files.items():
        with pytest.raises(InvalidInputError) as info:
            import_logits(cache, path, "x")
        assert str(path.name) in str(info.value), what
        assert not canary.exists(), f"{what}: the payload ran"
    assert cache.store_names() == []


def test_pickle_payloads_are_refused_by_the_cli(evil, tmp_path, capsys):
    files, canary = evil
    for what, path in files.items():
        code = main(["--cache", str(tmp_path / "c"), "import-logits", str(path), "--name", "x"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and "Traceback" not in err, what


def test_pickle_payloads_are_refused_as_uploads(evil, tmp_path):
    files, canary = evil
    for what, path in files.items():
        with pytest.raises(InvalidInputError):
            import_upload(tmp_path / "c", "x", (path.name, path.read_bytes()))
        assert not canary.exists(), what


def test_pickle_payloads_are_refused_as_model_checkpoints(evil, tmp_path):
    files, canary = evil
    for suffix in (".pt", ".pth", ".bin", ".ckpt"):
        path = tmp_path / f"model{suffix}"
        path.write_bytes(files["raw pickle .pt"].read_bytes())
        with pytest.raises(InvalidInputError, match="weights_only") as info:
            read_state_dict(path)
        assert "\n" not in str(info.value)  # torch's own message is twenty lines long
    with pytest.raises(InvalidInputError, match="weights_only"):
        read_state_dict(files["torch.save zip .pt"])


def test_a_pickle_planted_in_the_cache_is_never_loaded(evil, cache, logits_small):
    """A cache from elsewhere with a pickle where a data file should be: refused, quarantined."""
    files, canary = evil
    F, y = logits_small
    digest = cache.save_store("m", F, y).content_hash
    obj = cache.objects_dir / f"{digest}.safetensors"
    obj.write_bytes(files["raw pickle .pt"].read_bytes())
    with pytest.raises(IntegrityError):
        cache.load_store("m")
    # even with a manifest forged to carry the pickle's own hash, it is not safetensors
    from engine.storage.atomic import sha256_file
    from engine.storage.manifests import self_hash

    planted = cache.objects_dir / "x.safetensors"
    planted.write_bytes(files["raw pickle .pt"].read_bytes())
    forged_digest = sha256_file(planted)
    planted.rename(cache.objects_dir / f"{forged_digest}.safetensors")
    manifest = json.loads((cache.stores_dir / "m.json").read_text())
    manifest["arrays_sha256"] = forged_digest
    manifest["manifest_sha256"] = self_hash(manifest)
    (cache.stores_dir / "m.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="safetensors"):
        cache.load_store("m")


# ----------------------------------------------------------------------------- names and sizes


ESCAPES = ["..", "../evil", "../../etc/passwd", "/etc/passwd", "a/b", "a\\b", "C:\\evil", ".hidden",
           "x\x00y", "x\ny", "‥／evil", "stores/../x", "~root", "x" * 101, "", " ", "m.json", "-rf"]


@pytest.mark.parametrize("name", ESCAPES)
def test_store_names_cannot_leave_the_cache(name, tmp_path, logits_small):
    F, y = logits_small
    with pytest.raises(InvalidInputError, match="invalid store name"):
        check_store_name(name)
    cache = Cache(tmp_path / "cache")
    for attempt in (lambda: cache.save_store(name, F, y), lambda: cache.load_store(name)):
        with pytest.raises(EngineError):
            attempt()
    outside = [p for p in tmp_path.rglob("*") if "cache" not in p.relative_to(tmp_path).parts]
    assert outside == []


@pytest.mark.parametrize("name", ["../../../../tmp/nde-evil.npz", "/tmp/nde-evil.npz", "x.npz\x00.png",
                                  "evil.n\x00pz", "..", "", ".npz", "a" * 5000 + ".npz", "ok.NPZ/../x.npz"])
def test_uploaded_file_names_are_never_paths(name, tmp_path):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, logits=rng.standard_normal((20, 3)).astype(np.float32), labels=rng.integers(0, 3, 20))
    try:
        store = import_upload(tmp_path / "cache", "up", (name, buf.getvalue()))
        assert store.n == 20  # a harmless name that ends in .npz is fine: only its suffix is used
    except InvalidInputError as exc:
        assert "\x00" not in str(exc) and len(str(exc)) < 400
    assert not Path("/tmp/nde-evil.npz").exists()  # where the escaping names point
    assert {p.name for p in tmp_path.iterdir()} <= {"cache"}
    leftovers = list(Path(tempfile.gettempdir()).glob("nde-upload-*/*"))
    assert not [p for p in leftovers if "evil" in p.name or p.suffix == ".png"]


def test_upload_size_bounds_agree_with_the_server_config():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == MAX_UPLOAD_MB


def test_oversized_uploads_are_refused_with_a_message(tmp_path):
    with pytest.raises(InvalidInputError, match="over the 1 MB upload limit"):
        import_upload(tmp_path, "big", ("big.npz", b"\0" * (2**20 + 1)), max_mb=1)


def _zip_bomb(path: Path, unpacked: int) -> Path:
    """An .npz whose logits unpack to ``unpacked`` bytes of zeros (deflated ~1000:1)."""
    n = unpacked // (4 * 100)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (n, 100)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("logits.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            block = bytes(1 << 24)
            for _ in range(unpacked // len(block)):
                member.write(block)
        z.writestr("labels.npy", b"")
    return path


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path):
    bomb = _zip_bomb(tmp_path / "bomb.npz", MAX_UNPACKED_BYTES + (1 << 24))
    assert bomb.stat().st_size < 4 << 20  # a small upload…
    with pytest.raises(InvalidInputError, match="unpacks to"):
        import_upload(tmp_path / "cache", "bomb", ("bomb.npz", bomb.read_bytes()))  # …refused unread


def test_a_forged_header_does_not_allocate_what_it_claims(tmp_path):
    """An .npy/.npz whose header promises terabytes: refused from the header alone."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 1000)})
    npy = tmp_path / "huge_logits.npy"
    npy.write_bytes(header.getvalue() + bytes(64))
    np.save(tmp_path / "huge_labels.npy", np.zeros(3, np.int64))
    with pytest.raises(InvalidInputError, match="truncated or damaged"):
        import_logits(Cache(tmp_path / "c"), npy, "h")
    npz = tmp_path / "huge.npz"
    with zipfile.ZipFile(npz, "w") as z:
        z.writestr("logits.npy", header.getvalue() + bytes(64))
        z.writestr("labels.npy", b"")
    with pytest.raises(InvalidInputError, match="claims shape"):
        import_logits(Cache(tmp_path / "c"), npz, "h")


def test_the_payloads_are_live(tmp_path):
    """The malicious files above do run code when unpickled (so the tests above can fail)."""
    canary = tmp_path / "LIVE"
    files = _malicious_files(tmp_path, canary)
    pickle.loads(files["raw pickle .pt"].read_bytes())
    assert canary.exists()
    canary.unlink()
    np.load(files["object .npy"], allow_pickle=True)
    assert canary.exists()


HOSTILE_NAMES = ["</script><script>document.title='pwned'</script>", "<img src=x onerror=alert(1)>",
                 "{{ 7*7 }} {% raw %}", "javascript:alert(1)", "\u202egnp.exe", "a\nb", "<!--", "x" * 500]


def test_class_names_from_an_imported_file_cannot_inject_markup(tmp_path, monkeypatch):
    """Class names are data from whoever made the file: the graphs, the formula and the tables
    show them as text (the graph's script blocks are exactly the template's own)."""
    from engine.core.synthetic import classifier_like_logits
    from engine.stages.alpha_paths import load_or_compute_path
    from engine.stages.pairing import open_pairing
    from tests.dashboard_cache import iframe_html, run_page

    k = len(HOSTILE_NAMES)
    F, y = classifier_like_logits(400, k, rank=4, seed=0)
    cache = Cache(tmp_path / "cache")
    cache.save_store("hostile", F, y, HOSTILE_NAMES)
    load_or_compute_path(cache, open_pairing(cache, "hostile"))
    monkeypatch.setenv("NDE_CACHE", str(cache.root))
    at = run_page(params={"target": "0", "alpha": "0.05"})
    assert not at.exception
    (html,) = iframe_html(at)
    tags = _start_tags(html)
    assert tags.count("script") == 2, tags  # vis-network's and ours: no name opened another
    assert "img" not in tags  # nor any other element
    formula = [m.value for m in at.markdown if "nde-formula" in m.value]
    assert formula and "<script>" not in formula[0] and "&lt;" in formula[0]


def _start_tags(html: str) -> list[str]:
    """The elements a browser's parser would create (script content is text to it)."""
    from html.parser import HTMLParser

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags: list[str] = []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

    parser = Tags()
    parser.feed(html)
    return parser.tags
