"""The suite's command-line tools; each module's ``main(argv, base_dir=None)`` is a command.

``drsom-figures`` (build_figures), ``drsom-tables`` (make_tables), ``drsom-curves`` (plot_curves),
``drsom-reproduce``, ``drsom-status`` (sweep_status), ``drsom-export-wandb``; or
``python -m drsom.tools.<module>``. Default paths (``results/runs``, ``results/figures``, ...) and
relative ``results_dir`` / ``data.root`` of composed configs are taken from ``base_dir``: the
current directory, as for ``drsom-run``; a checkout's ``scripts/<module>.py`` passes the
repository root, as its ``run.py`` does.

The top room: may import every other; nothing imports it.
"""
