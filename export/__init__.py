"""``python -m export``: the repo's entry point for exporting meta-weights, as the installed ``mzsr-export``.

The exporters live in :mod:`mzsr_tf.export`, the command in :mod:`mzsr_tf.commands.export`.
"""
