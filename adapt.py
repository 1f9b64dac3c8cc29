"""Zero-shot super-resolution of LR photos (MZSR or ZSSR): the repo's entry point, as the installed ``mzsr-adapt``.

The command lives in :mod:`mzsr_tf.commands.adapt`; ``python adapt.py --help`` lists its flags.
"""

from mzsr_tf.commands.adapt import run

if __name__ == "__main__":
    run()
