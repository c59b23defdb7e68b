"""Exporting a built spec: :mod:`.python` ejects it as plain PyTorch source (no cgtool, no YAML);
:mod:`.program` writes its captured program (``torch.export``'s ``.pt2``) or an ONNX file."""
from __future__ import annotations

from dataclasses import dataclass, field

FORMATS = ("python", "pt2", "onnx")


@dataclass
class ExportResult:
    """What ``cgtool export`` made: the python source (``code``, also written to ``output`` with ``-o``), or
    the program file written (``program``)."""

    to: str  # python | pt2 | onnx
    model: str  # the spec's name
    output: str | None = None  # the file written
    code: str | None = None  # python: the source
    classes: list[str] = field(default_factory=list)  # python: the classes defined, the top-level one last
    program: object = None  # pt2 | onnx: cgtool.export.program.ProgramFile
