"""Downstream tasks trained and evaluated from a checkout (``python -m training ...``)."""
