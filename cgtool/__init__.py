"""cgtool: inspect PyTorch computational graphs and models.

    >>> import cgtool
    >>> net = cgtool.build("configs/mlp.yaml")          # a real torch.nn.Module
    >>> net = cgtool.build(yaml_text, d_model=1024)      # args override the spec's `args`
"""
from .build.model import Built, build, build_model
from .errors import CgError
from .spec import load_spec

__all__ = ["build", "build_model", "Built", "load_spec", "CgError"]
__version__ = "0.1.0"
