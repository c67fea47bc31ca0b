"""AoAM data: the simulator (`simulate`), HDF5 validation (`validate`), the TFDS builder (`aoam`) and the
tf.data input pipeline (`pipeline`)."""
