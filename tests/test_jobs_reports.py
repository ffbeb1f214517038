"""Reports as tables: the paper's Table 3 layout for the regulariser, Markdown output."""

import pytest

from engine.jobs.reports import markdown_tables, report_stores, report_tables

REG = {
    "kind": "regularizer", "config": {"beta": 0.2, "alpha": 0.25},
    "metrics": {
        name: {"top1": top1, "ood_aupr": aupr, "pairs": [
            {"target": 3, "source": 7, "target_name": "O LATIN CAPITAL LETTER O",
             "source_name": "0 DIGIT ZERO", "coef": coef, "cov": cov}]}
        for name, top1, aupr, coef, cov in (("before", 90.0, 30.0, 0.41, 12.0),
                                           ("control", 90.5, 31.0, 0.40, 11.0),
                                           ("after", 90.4, 32.5, 0.0, 0.1))},
    "stores": {"before": "r-before", "after": "r-after", "control": "r-control"},
}


def test_regularizer_report_is_table_three():
    [(title, rows)] = report_tables(REG)
    assert "α = 0.25" in title
    assert [r["model"] for r in rows] == ["Original model", "Fine-tuned, β = 0 (baseline)",
                                          "Fine-tuned, β = 0.2 (ours)"]
    assert [r["θ O ← 0"] for r in rows] == [0.41, 0.40, 0.0]
    assert [r["OOD AUPR (%)"] for r in rows] == [30.0, 31.0, 32.5]
    assert report_stores(REG) == ["r-before", "r-after", "r-control"]


def test_markdown_tables():
    text = markdown_tables(REG)
    lines = text.splitlines()
    assert lines[2].startswith("| model | top-1 (%) | θ O ← 0 |")
    assert lines[-1].startswith("| Fine-tuned, β = 0.2 (ours) | 90.4 | 0.0 |")
    assert markdown_tables({"kind": "probe"}) == "" and report_tables(None) == []


def _stat(mean, sd=0.0, n=2):
    return {"mean": mean, "sd": sd, "n": n}


SWEEP = {
    **REG,
    "pair_choice": {
        "measure": "glyph shapes", "min_peculiarity": 0.5, "rank_among_all": 40, "n_dependencies": 900,
        "chosen": {"target": 3, "source": 7, "target_name": "™ TRADE MARK SIGN", "source_name": "┇ BOX",
                   "coef": -0.44, "peculiarity": 0.68},
        "strongest_of_all": {"target": 1, "source": 2, "target_name": "ǃ CLICK", "source_name": "! MARK",
                             "coef": 0.77, "peculiarity": 0.01},
        "next_peculiar": []},
    "sweep": [{"beta": b, "top1": _stat(t), "top1_vs_control": _stat(t - 90.0, 0.1),
               "ood_aupr": _stat(a), "ood_aupr_vs_control": _stat(a - 30.0, 0.2),
               "pairs": [{"coef": _stat(c), "cov": _stat(1.0), "coef_fraction": _stat(c / 0.4, 0.01)}]}
              for b, t, a, c in ((0.0, 90.0, 30.0, 0.4), (0.2, 89.9, 30.1, 0.02), (1.0, 89.0, 29.0, 0.0))],
    "verdict": ["OOD AUPR does not improve: +0.10 ± 0.20 pt against the control."],
}


def test_a_sweep_report_shows_the_pair_the_sweep_and_the_verdict():
    from engine.jobs.reports import report_notes, sweep_rows

    tables = dict(report_tables(SWEEP))
    [pair_title] = [t for t in tables if t.startswith("The pair cut")]
    assert "glyph shapes" in pair_title and "≥ 0.5" in pair_title
    cut, strongest = tables[pair_title]
    assert cut["peculiarity"] == 0.68 and "#40 of 900" in cut["dependency"]
    assert strongest["peculiarity"] == 0.01
    [sweep_title] = [t for t in tables if t.startswith("β sweep")]
    rows = tables[sweep_title]
    assert [r["β"] for r in rows] == [0.0, 0.2, 1.0]
    assert rows[1]["θ (% of before)"] == "5.0 ± 1.0" and rows[1]["Δ top-1 (pt)"] == "-0.10 ± 0.10"
    chart = sweep_rows(SWEEP)
    assert len(chart) == 9 and {r["metric"] for r in chart} == {
        "top-1 vs control (pt)", "θ of the cut pair (% of before)", "OOD AUPR vs control (pt)"}
    assert [r["mean"] for r in chart if r["axis"] == "theta"] == [100.0, 5.0, 0.0]
    assert [r["mean"] for r in chart if r["metric"].startswith("top-1")] == pytest.approx([0.0, -0.1, -1.0])
    assert [r["value"] for r in chart if r["metric"].startswith("top-1")] == [
        "90.00 ± 0.00", "89.90 ± 0.00", "89.00 ± 0.00"]
    assert report_notes(SWEEP) == SWEEP["verdict"]
    assert markdown_tables(SWEEP).splitlines()[-1] == "- " + SWEEP["verdict"][0]


def test_newclasses_report_states_the_papers_claim():
    from engine.jobs.reports import report_notes

    report = {"kind": "newclasses", "n_base": 180, "n_new": 20, "improvement": {"acc_all": -1.97}}
    [note] = report_notes(report)
    assert "900 → 100" in note and "-0.44 pt (ResNet-50)" in note and "-1.97 pt" in note
    assert "1.53 pt further" in note
