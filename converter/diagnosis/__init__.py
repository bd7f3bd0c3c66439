"""Which layer diverged: :mod:`.localise` (judge each module), :mod:`.probes` (hooks, ONNX scopes, replay
routes), :mod:`.localisechild` (the same in a child that loads the model before TensorFlow)."""
