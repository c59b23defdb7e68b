"""The forward language: a small, safe subset of Python, parsed once, checked, compiled to real code.

One language serves spec forwards, ``cgtool grad`` expressions and (through the same
checker) nothing else: :mod:`.allowlist` says what is allowed, :mod:`.check` parses and
checks, :mod:`.codegen` compiles a checked program into a Python function with the
guards of :mod:`.limits`.
"""
from .allowlist import ATTRIBUTES, CONSTANT_NAMES, FUNCTIONS
from .check import SELF_MODULE, Checker, Program, Source, check_forward, parse
from .codegen import Compiled, compile_forward, explain_runtime_error, locate_runtime_error
from .limits import DEFAULT_LIMITS, Limits, make_guards

__all__ = ["ATTRIBUTES", "CONSTANT_NAMES", "FUNCTIONS", "SELF_MODULE", "Checker", "Program", "Source", "check_forward", "parse",
           "Compiled", "compile_forward", "explain_runtime_error", "locate_runtime_error", "DEFAULT_LIMITS", "Limits", "make_guards"]
