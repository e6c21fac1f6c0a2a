"""The results store read back: runs and their selection (``runs``), tables (``tables``) and
figures (``figures``). Nothing here trains or writes into a run folder."""
