"""Building: a Spec becomes a real torch.nn module (:mod:`.builder`), within a memory budget
(:mod:`.memory`), dry-run with spec-level errors (:mod:`.dryrun`); :mod:`.model` ties them together."""
from .model import Built, Check, build, build_model

__all__ = ["Built", "Check", "build", "build_model"]
