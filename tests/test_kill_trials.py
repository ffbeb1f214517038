"""kill -9 at random moments of every kind of write: the cache is as before or complete.

Real processes (see tests/campaign.py) run the import, the overwrite of a store, an
extraction, a solve (`dependencies`), an α path and an extraction job; each is SIGKILLed
after a random delay drawn over its measured duration. A few trials per kind run by
default; hundreds under ``-m slow`` (and in ``python -m bench.reliability_report``).
"""

from __future__ import annotations

import shutil

import pytest

from engine.cli import main
from engine.gramsets import gram_config
from engine.importer import import_logits
from engine.store import Cache
from tests.campaign import KINDS, Bench, cache_state, kill_campaign, torn_reasons

DEFAULT_TRIALS = 2
SLOW_TRIALS = 100


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return Bench(tmp_path_factory.mktemp("kill"))


def _assert_clean(stats):
    assert stats.torn == [], "\n".join(stats.torn)
    assert stats.rerun_failed == [], "\n".join(stats.rerun_failed)
    assert stats.leftover == [], f"processes outlived their killed writer: {stats.leftover}"


@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_write_leaves_the_cache_as_before_or_complete(bench, kind, tmp_path):
    stats = kill_campaign(bench, kind, DEFAULT_TRIALS, seed=KINDS.index(kind), workdir=tmp_path)
    assert stats.trials == DEFAULT_TRIALS
    _assert_clean(stats)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_hundreds_of_kills(bench, kind, tmp_path):
    stats = kill_campaign(bench, kind, SLOW_TRIALS, seed=100 + KINDS.index(kind), workdir=tmp_path)
    _assert_clean(stats)
    assert stats.killed >= 0.8 * SLOW_TRIALS  # most kills landed while the write was running
    assert len(stats.outcomes) >= 2  # and at more than one phase of it


def test_the_checker_sees_a_torn_cache(bench, tmp_path):
    """The campaign's judge can fail: half-written, swapped or lost stores are all caught."""
    before = cache_state(bench.bases["old"])
    half = shutil.copytree(bench.bases["old"], tmp_path / "half")
    (half / "stores" / "m.json").write_bytes((half / "stores" / "m.json").read_bytes()[:-20])
    assert torn_reasons(half, before, before)
    swapped = shutil.copytree(bench.bases["old"], tmp_path / "swapped")
    import_logits(Cache(swapped), bench.small, "m", overwrite=True)
    assert any("neither the old nor the new" in r for r in torn_reasons(swapped, before, before))
    lost = shutil.copytree(bench.bases["old"], tmp_path / "lost")
    (lost / "stores" / "m.json").unlink()
    assert any("is gone" in r for r in torn_reasons(lost, before, before))


def test_extraction_killed_between_its_store_and_its_gram_is_finished_by_a_rerun(bench, tmp_path, capsys):
    """Found by the campaign: a rerun after such a kill was a cache hit that never wrote the
    Gram and left the resumable chunks on disk forever."""
    argv = ["--cache", str(tmp_path), "extract", "--model", "glyph-resnet", "--checkpoint", str(bench.ckpt),
            "--data", str(bench.images), "--name", "x", "--workers", "0", "--chunk-size", "8",
            "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    cache = Cache(tmp_path)
    store = cache.load_store("x")
    gram = cache.derived_dir / f"{cache.derived_key('gram', gram_config(store, None))}.json"
    assert gram.exists()
    gram.unlink()  # the state a kill after the store's manifest leaves behind
    key_dir = tmp_path / "partial" / _extract_key(store)
    key_dir.mkdir(parents=True)
    (key_dir / "chunk-000000.safetensors").write_bytes(b"kept by the killed run")
    assert main(argv) == 0
    assert "cache hit" in capsys.readouterr().out
    assert gram.exists(), "the rerun must write the Gram the killed run did not"
    assert not key_dir.exists(), "the killed run's chunks must go once the store is complete"


def _extract_key(store) -> str:
    from engine.extract import ExtractConfig

    return ExtractConfig(**store.manifest["extract_config"]).key()
