from __future__ import annotations


class DatasetUnavailable(RuntimeError):
    """The dataset cannot be read or fetched; the message is one line saying what to do."""
