"""Reports as tables: the paper's Table 3 layout for the regulariser, Markdown output."""

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
