"""The cache on disk: its layout, content-addressed objects, logit stores, derived results,
atomic writes and verification. Imports the core at most; never a stage.
"""
