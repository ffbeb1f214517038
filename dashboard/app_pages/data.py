"""Data: the stores in the cache and their manifests, importing a logits file, extracting logits.

The dashboard never computes logits itself: extraction runs as a job (its own process) or as
the CLI command shown here.
"""

from __future__ import annotations

import shlex

import pandas as pd
import streamlit as st

from dashboard.components.loaders import cache_root
from dashboard.components.tables import frame_table_html
from dashboard.components.uploads import MAX_UPLOAD_MB, import_upload
from dashboard.components.widgets import FILL_COMMAND, page_header
from engine.errors import EngineError
from engine.ingest.importer import SUFFIXES
from engine.storage.layout import DEFAULT_CACHE
from engine.storage.manifests import manifest_dataset, manifest_model
from engine.storage.store import Cache


def _model_name(manifest: dict) -> str:
    return str(manifest_model(manifest).get("name", ""))


def _dataset_name(manifest: dict) -> str:
    data = manifest_dataset(manifest)
    name = str(data.get("name") or data.get("root") or "")
    return f"{name} ({data['split']})" if name and data.get("split") else name


def _quarantine_note(root: str) -> None:
    """Damaged cache files are moved aside when read; say so here, not only in the log."""
    folder = Cache(root).quarantine_dir
    moved = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if moved:
        st.warning(f"{len(moved)} damaged cache file(s) were moved to `{folder}` and are not used "
                   f"(latest: `{moved[-1]}`). Run `python -m engine --cache {root} verify` for a full "
                   "check; re-import the stores it names.", icon=":material/gpp_maybe:")


def _summarised(manifest: dict, keep: int = 12) -> dict:
    """The manifest with its long lists (class names, sample ids) cut to their first entries."""
    out = {}
    for key, value in manifest.items():
        if isinstance(value, list) and len(value) > keep:
            value = f"{len(value)} entries: " + ", ".join(map(str, value[:keep])) + " …"
        out[key] = value
    return out


def _stores_section(root: str) -> None:
    st.subheader("Stores in the cache")
    manifests = Cache(root).store_manifests()
    _quarantine_note(root)
    if not manifests:
        st.info(f"No stores in `{root}` yet. Fill the cache with the embedded default:\n\n"
                f"`{FILL_COMMAND}`\n\nor import a logits file below.", icon=":material/inbox:")
        return
    frame = pd.DataFrame([{
        "name": m["name"], "samples": m["n"], "categories": m["k"], "dtype": m.get("dtype", ""),
        "model": _model_name(m), "dataset": _dataset_name(m), "created": m.get("created", ""),
        "content hash": str(m.get("arrays_sha256", ""))[:12],
    } for m in manifests])
    # plain HTML: names wrap, every column stays in view at 150 % zoom (a data grid scrolled sideways)
    # (when each was made and its hash: in its manifest, below)
    st.html(frame_table_html(frame, [("name", "name", "text"), ("samples", "samples", "{:,}"),
                                     ("categories", "categories", "{:,}"), ("dtype", "dtype", "text"),
                                     ("model", "model", "text"), ("dataset", "dataset", "text")]))
    with st.expander("Manifest of a store (JSON)", icon=":material/data_object:"):
        pick = st.selectbox("Manifest of", [m["name"] for m in manifests], key="data_manifest")
        manifest = next(m for m in manifests if m["name"] == pick)
        st.json(_summarised(manifest), expanded=1)


def _import_section(root: str) -> None:
    st.subheader("Import a logits file")
    st.caption("A `.npz` / `.safetensors` / `.pt` with arrays `logits` (N×K) and `labels` (N,), optionally "
               "`class_names`; or a `.npy` of logits plus a labels `.npy`. Nothing is unpickled. "
               f"Uploads up to {MAX_UPLOAD_MB} MB; for larger files use "
               "`python -m engine import-logits FILE --name NAME`.")
    with st.form("import-form", clear_on_submit=False):
        upload = st.file_uploader("Logits file", type=[s.lstrip(".") for s in SUFFIXES], key="data_upload")
        labels = st.file_uploader("Labels (.npy, only for a .npy logits file)", type=["npy"], key="data_labels")
        names = st.file_uploader("Class names (optional: text, one per line, or a JSON list)",
                                 type=["txt", "json"], key="data_names")
        name = st.text_input("Store name", key="data_name", placeholder="e.g. resnet50-val")
        paths = st.checkbox("Then solve every category's α path (a job: the Atlas, Theory and all-target "
                            "exports read it; Explore does not wait for it)", value=True, key="data_paths")
        submitted = st.form_submit_button("Import", type="primary")
    if submitted:
        _import(root, upload, labels, names, name, paths)


def _import(root: str, upload, labels, names, name: str, paths: bool) -> None:
    def read(f):
        return None if f is None else (f.name, f.getvalue())

    try:
        store = import_upload(root, name, read(upload), read(labels), read(names))
    except EngineError as exc:
        st.error(f"Not imported: {exc}", icon=":material/error:")
        return
    from engine.jobs import submit_job

    try:  # the Gram (one pass over the logits), then every path: jobs, so this page returns now
        jobs = [submit_job(Cache(root), "gram", {"model": store.name})]
        if paths:
            jobs.append(submit_job(Cache(root), "paths", {"model": store.name}))
    except EngineError as exc:
        st.error(f"Imported {store.name}, but its jobs were not started: {exc}")
        return
    st.success(f"Imported {upload.name} as store **{store.name}**: {store.n} samples × {store.k} "
               f"categories. Jobs {', '.join(f'#{j.id}' for j in jobs)} compute its Gram"
               + (" and every α path" if paths else "") + " (the **Jobs** page shows them); Explore "
               "shows any category as soon as the Gram exists.", icon=":material/check_circle:")


def _extract_section(root: str) -> None:
    st.subheader("Extract logits from a model")
    st.caption("Extraction runs a classifier over a dataset (on a GPU when there is one) and writes a "
               "store. It never runs inside the dashboard: submit it as a job, or run the command.")
    with st.form("extract-form"):
        c = st.columns(3)
        model = c[0].text_input("Model (timm name or demo model)", "glyph-resnet", key="ex_model")
        data = c[1].text_input("Dataset (registry name or ImageFolder path)", "glyphs", key="ex_data")
        name = c[2].text_input("Store name", "", key="ex_name", placeholder="e.g. resnet50-val")
        c = st.columns(4)
        split = c[0].text_input("Split", "test", key="ex_split")
        checkpoint = c[1].text_input("Checkpoint (optional)", "", key="ex_ckpt")
        batch = c[2].number_input("Batch size", 1, 65536, 256, key="ex_batch")
        device = c[3].selectbox("Device", ["auto", "cpu", "cuda"], key="ex_device")
        submitted = st.form_submit_button("Submit extraction job", type="primary")
    values = {"model": model, "data": data, "name": name, "checkpoint": checkpoint, "split": split,
              "batch_size": int(batch), "device": device}
    st.markdown("The same from a terminal:")
    st.code(extract_command(root, values), language="bash", wrap_lines=True)
    if submitted:
        _submit(root, values)


def extract_command(root: str, values: dict) -> str:
    parts = ["python", "-m", "engine"]
    if str(root) != str(DEFAULT_CACHE):
        parts += ["--cache", str(root)]
    parts += ["extract", "--model", values["model"], "--data", values["data"],
              "--name", values["name"] or "NAME", "--split", values["split"]]
    if values["checkpoint"]:
        parts += ["--checkpoint", values["checkpoint"]]
    parts += ["--batch-size", str(values["batch_size"]), "--device", values["device"]]
    return shlex.join(parts)


def _submit(root: str, values: dict, kind: str = "extract") -> None:
    try:
        from engine.jobs import submit_job
    except ImportError:
        st.info("The job system is not installed here; run the command above instead.")
        return
    try:
        job = submit_job(Cache(root), kind, values)
    except EngineError as exc:
        st.error(str(exc))
        return
    what = "model zoo" if kind == "zoo" else "extraction"
    st.success(f"Submitted {what} job #{job.id}; follow it on the Jobs page.")


_CUSTOM = "(the models below)"


def _zoo_section(root: str) -> None:
    st.subheader("Extract a model zoo")
    st.caption("Several models over one dataset: one store each (same samples, same order, each "
               "model's own preprocessing), then every pairing's Gram, dependencies and α path, "
               "ready for Explore and Compare. Pretrained weights are downloaded on first use "
               "unless the job's environment sets `HF_HUB_OFFLINE=1`.")
    from engine.ingest.presets import PRESETS

    with st.form("zoo-form"):
        c = st.columns([1, 2, 2])
        preset = c[0].selectbox("Preset", [*PRESETS, _CUSTOM], key="zoo_preset",
                                help="; ".join(f"{p.name}: {p.description}" for p in PRESETS.values()))
        models = c[1].text_input("Models (timm names, space-separated)", "", key="zoo_models",
                                 placeholder="resnet50.a1_in1k vit_small_patch16_224.augreg_in1k")
        data = c[2].text_input("Dataset (registry name or ImageFolder path)", "", key="zoo_data",
                               placeholder="/data/imagenet/val")
        c = st.columns(3)
        split = c[0].text_input("Split", "test", key="zoo_split")
        batch = c[1].number_input("Batch size", 1, 65536, 256, key="zoo_batch")
        device = c[2].selectbox("Device", ["auto", "cpu", "cuda"], key="zoo_device")
        submitted = st.form_submit_button("Submit zoo job", type="primary")
    values = {"preset": "" if preset == _CUSTOM else preset, "models": models.split() if preset == _CUSTOM else [],
              "data": data, "split": split, "batch_size": int(batch), "device": device}
    st.markdown("The same from a terminal:")
    st.code(zoo_command(root, values), language="bash", wrap_lines=True)
    if submitted:
        _submit(root, values, "zoo")


def zoo_command(root: str, values: dict) -> str:
    parts = ["python", "-m", "engine"] + (["--cache", str(root)] if str(root) != "cache" else [])
    parts += ["extract"] + (["--preset", values["preset"]] if values["preset"] else
                            ["--model", *(values["models"] or ["MODEL", "MODEL"])])
    parts += ["--data", values["data"] or "DATA", "--split", values["split"],
              "--batch-size", str(values["batch_size"]), "--device", values["device"]]
    return shlex.join(parts)


def main() -> None:
    root = cache_root()
    page_header("Data", "Logit stores, their manifests, imports and extraction.")
    _stores_section(root)
    st.divider()  # one form below the other: side by side, their fields were cut at 150 % zoom
    _import_section(root)
    st.divider()
    _extract_section(root)
    st.divider()
    _zoo_section(root)


main()
