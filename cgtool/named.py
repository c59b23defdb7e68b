"""The classes of named container specs, importable by name so that pickle finds them.

A ``kind: sequential`` spec with ``name: MLPBlock`` builds an instance of ``cgtool.named.MLPBlock``:
a subclass of ``nn.Sequential`` that adds nothing (torchvision's ``MLPBlock`` and
``Conv2dNormActivation`` are such subclasses), so ``print(model)`` and ``type(m).__name__`` show the
name the spec gives. This module holds nothing but ``__getattr__``: any identifier that is not a
dunder is the class of that name, made on first use, so ``torch.load`` of a pickled model finds its
classes in a fresh process.
"""


def __getattr__(name: str) -> type:
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    from .build.containers import sequential_class

    return sequential_class(name)
