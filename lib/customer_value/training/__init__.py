"""Model training: Petastorm readers into tf.data, data-parallel with Horovod."""
