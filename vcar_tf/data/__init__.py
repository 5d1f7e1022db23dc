"""Data: compression of source video into datasets, dataset layout, tf.data pipelines."""
