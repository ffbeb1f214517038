"""Training code: the supervised classifier trainer (``classifier``); §3.2 / §3.3 come later."""
