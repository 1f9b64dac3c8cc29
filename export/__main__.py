from mzsr_tf.commands.export import run

run()
