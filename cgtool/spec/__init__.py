"""Specs: YAML with positions (:mod:`.yamlpos`) validated (:mod:`.load`) into plain dataclasses
(:mod:`.model`); spec values such as ``4 * d`` are evaluated by :mod:`.values`."""
from .load import load_spec
from .model import Call, InputSpec, Layer, Spec, TensorSpec

__all__ = ["load_spec", "Call", "InputSpec", "Layer", "Spec", "TensorSpec"]
