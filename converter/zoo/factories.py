"""Every zoo entry as a ``package.module:callable`` spec for the ``convert`` command:
``convert converter.zoo.factories:resnet18 --input-shape 1,3,128,128 ...`` builds the entry with its cached honest
weights, as ``ZOO[name].build()`` does (``converter.bench.zoo_child --argv`` prints the whole command line)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def __getattr__(name: str) -> Callable[[], nn.Module]:
    from converter.zoo.models import ZOO

    if name in ZOO:
        return ZOO[name].build
    raise AttributeError(f"module {__name__!r} has no attribute {name!r} (not a zoo model)")
