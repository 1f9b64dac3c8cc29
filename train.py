"""Train θ_T and θ_M (paper Algorithm 1): the repo's entry point, as the installed ``mzsr-train``.

The command lives in :mod:`mzsr_tf.commands.train`; ``python train.py --help`` lists its flags.
"""

from mzsr_tf.commands.train import run

if __name__ == "__main__":
    run()
