"""What comes in: logits imported from files (``importer``) or extracted from models
(``extract``) over datasets (``data``), the glyph world (``glyphs``, ``glyph_models``),
the model registry (``models``), pretrained weights (``hub``) and model zoos (``presets``,
``zoo``). Ingestion may prepare the first stages (a store's Gram set in the same pass).
"""
