"""The conversion pipeline (private: the public surface is :mod:`converter`).

Data flows one way: :mod:`.sources` resolves the model -> :mod:`.torchstage` (the PyTorch side, in a child that
:mod:`.torchchild` starts early) exports :mod:`.export` ONNX and the reference outputs -> :mod:`.rewrites` make the
graph translatable -> :mod:`.tensorflow` translates it with onnx2tf -> :mod:`.tfexport` writes the SavedModel and
TFLite files -> :mod:`.artifacts` records them in the manifest. :mod:`.layout` decides NCHW/NHWC, :mod:`.outdir`
writes ``--out`` atomically, :mod:`.interrupts` and :mod:`.quiet` keep signals and library noise in hand.
"""
