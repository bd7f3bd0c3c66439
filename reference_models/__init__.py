"""Reference MNIST models trained in PyTorch and in Keras, the inputs of the converter's tests.

Nothing heavy is imported here: ``import reference_models`` must stay cheap, and importing one framework
must not drag in the other. Import the submodules you need:

- ``reference_models.mnist_cnn``  the network, in both frameworks, with shared layer names
- ``reference_models.data``       MNIST arrays (``load_mnist``, ``read_idx_dir``, ``normalize_*``)
- ``reference_models.port``       torch weights -> Keras model (``torch_to_keras``)
- ``reference_models.quiet``      ``quiet_tensorflow`` (call before importing TensorFlow)
- ``reference_models.cli``        the ``train-reference`` command
"""
