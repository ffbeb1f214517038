"""One palette for the whole app: the same blue/orange for coefficient signs everywhere.

Blue and orange stay distinct for the common colour-vision deficiencies and on projectors.
"""

from __future__ import annotations

POS = "#1d4ed8"  # positive coefficient (blue)
NEG = "#ea580c"  # negative coefficient (orange)
ZERO = "#9ca3af"  # zero coefficient / screened out (grey)
TARGET = "#111827"  # the target category
ACCENT = "#7c3aed"  # the chosen α, highlights

# Tableau-10-like, without blue/orange so communities never read as coefficient signs.
_COMMUNITY = ("#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#b45309", "#4b5563",
              "#dc2626", "#0d9488", "#9333ea", "#ca8a04", "#be185d")

CATEGORY_COLORS = list(_COMMUNITY)  # for series that are categories, never signs

SIGN_DOMAIN = ["positive", "negative", "zero"]
SIGN_RANGE = [POS, NEG, ZERO]

# Page-level touches (the base font size and accent colour are in .streamlit/config.toml).
CSS = """
<style>
  [data-testid="stMainBlockContainer"] { padding-top: 2.5rem; }
  [data-testid="stMetricValue"] { font-size: 1.9rem; }
  /* readable on a projector: captions and help text dark and no smaller than the body's 17 px
     minus a step, a sidebar that leaves the page most of a 1280 px screen */
  [data-testid="stCaptionContainer"], [data-testid="stCaptionContainer"] p {
      color: #374151 !important; font-size: 1rem !important; }
  section[data-testid="stSidebar"] { width: 13.5rem !important; min-width: 13.5rem !important; }
  /* never clip a value: metric values, button labels and long names wrap instead */
  [data-testid="stMetricValue"] > div, [data-testid="stMetricLabel"] p, [data-testid="stMetricDelta"] div {
      white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
      overflow-wrap: anywhere; }
  [class*="st-key-nde-table1"] [data-testid="stMetricValue"] { font-size: 1.55rem; }
  /* a number never breaks inside ("1.52" / "2"): metric values wrap at spaces only, and the
     Table 1 card's numbers get smaller in a narrow column (150 % zoom) */
  [data-testid="stMetricValue"] > div { overflow-wrap: normal !important; word-break: keep-all; }
  [class*="st-key-nde-table1"] { container-type: inline-size; }
  @container (max-width: 330px) { [class*="st-key-nde-table1"] [data-testid="stMetricValue"] { font-size: 1.1rem; } }
  .stMarkdownEllipsis, .stMarkdownEllipsis p,
  .stButton button p, .stButton button div { white-space: normal !important; overflow: visible !important;
      text-overflow: clip !important; }
  .stButton button { height: auto; min-height: 2.5rem; }
  /* a command's options stay whole when its line wraps ("--" / "data" read as two words) */
  [data-testid="stCode"] .token.parameter { white-space: nowrap; }
  .nde-formula { font-size: 1.3rem; padding: .45rem .9rem; background: #f3f4f6;
                 border-radius: 8px; display: inline-block; margin-bottom: .6rem; }
  .nde-view { color: #374151; font-size: .95rem; margin: -.3rem 0 .4rem; }
  .nde-chart-title { font-size: 1rem; font-weight: 600; color: #111827; margin: 0 0 -.6rem; }
  .nde-pos { color: #1d4ed8; font-weight: 600; }
  .nde-neg { color: #ea580c; font-weight: 600; }
  /* coefficient tables (tables.coef_table_html) */
  .nde-coefs { overflow-y: auto; overflow-x: hidden; border: 1px solid #e5e7eb; border-radius: 8px;
               container-type: inline-size; }
  .nde-coefs table { width: 100%; border-collapse: collapse; font-size: 1rem; margin: 0; }
  .nde-coefs th { position: sticky; top: 0; background: #f9fafb; text-align: left; font-weight: 600;
                  padding: .35rem .6rem; border-bottom: 1px solid #e5e7eb; z-index: 1; }
  .nde-coefs td { padding: .25rem .6rem; border-bottom: 1px solid #f3f4f6; vertical-align: middle; }
  .nde-coefs td.num { font-variant-numeric: tabular-nums; white-space: nowrap; text-align: right; }
  .nde-coefs th { white-space: normal; }
  .nde-coefs td.name { width: 100%; white-space: normal; overflow-wrap: anywhere; }
  .nde-coefs td.label { white-space: normal; }
  /* a narrow column (1280 px with the sidebar, 150 % zoom): the numbers stay, the bars go */
  @container (max-width: 360px) { .nde-coefs .bar { display: none !important; } .nde-coefs td, .nde-coefs th { padding: .2rem .3rem; } }
  @container (max-width: 250px) { .nde-coefs .img { display: none; } .nde-coefs table { font-size: .9rem; } }
  .nde-coefs img { width: 34px; height: 34px; display: block; }
  .nde-coefs .bar { display: inline-block; height: .7rem; border-radius: 3px; margin-right: .5rem;
                    vertical-align: middle; }
</style>
"""


def edge_color(coef: float) -> str:
    return POS if coef > 0 else NEG if coef < 0 else ZERO


def sign_label(coef: float) -> str:
    return "positive" if coef > 0 else "negative" if coef < 0 else "zero"


def community_color(k: int) -> str:
    return ZERO if k < 0 else _COMMUNITY[k % len(_COMMUNITY)]
