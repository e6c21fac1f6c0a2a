"""A model for tuning tests whose trial fails or hangs once, on purpose (``model._target_``).

``marked_cnn`` is the suite's small CNN, unless the ``marker`` file exists: the first build that
finds it removes it (so exactly one trial is affected, whichever process builds first) and then
raises (``mode=fail``) or writes ``<marker>.hanging`` and sleeps until killed (``mode=hang``).
The marker's path and mode are model keys, the same for every trial of a study.
"""

from __future__ import annotations

import os
import time

from torch import nn

from drsom.models import SmallCNN


def marked_cnn(marker: str, mode: str, **kwargs) -> nn.Module:
    try:
        os.remove(marker)
    except FileNotFoundError:
        return SmallCNN(**kwargs)
    if mode == "fail":
        raise RuntimeError("this trial fails on purpose")
    with open(f"{marker}.hanging", "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)
    raise RuntimeError("not killed")
