"""Applications over the stages: the CLI's report, the paper's Table 1, the page views and
the talk deck. New features that combine stages for a reader go here.
"""
