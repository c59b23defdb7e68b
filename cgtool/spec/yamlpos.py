"""YAML loading that keeps positions and refuses anything but plain data.

Mappings load as :class:`PosDict` and sequences as :class:`PosList`; both remember
the file position of each value, so errors can say ``file:line:col``. The loader
is a :class:`yaml.SafeLoader`: tags that construct Python objects are refused.
Aliases are capped so a "billion laughs" document cannot exhaust the machine.
"""
from __future__ import annotations

import yaml

from ..errors import CgError, Loc

MAX_BYTES = 2_000_000
MAX_ALIASES = 200


def read_capped(path: str, place: str | None = None) -> str:
    """A spec file's text, read no further than the cap: a regular file only (a FIFO would block forever, a device
    such as /dev/zero never ends), at most MAX_BYTES, UTF-8. Mistakes are CgErrors at *place* (the path)."""
    import os
    import stat

    place = place or path
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise CgError("no such file", place, hint="check the path") from None
    except OSError as e:
        raise CgError(f"cannot read: {e.strerror}", place) from None
    if stat.S_ISDIR(info.st_mode):
        raise CgError("is a directory, not a spec file", place)
    if not stat.S_ISREG(info.st_mode):
        raise CgError("is not a regular file (a pipe, socket or device): not read", place,
                      hint="give a spec file, or - to read a spec from stdin")
    if info.st_size > MAX_BYTES:
        raise CgError(f"spec is {info.st_size:,} bytes, over the cap of {MAX_BYTES:,}", place)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise CgError(f"cannot read: {e.strerror}", place) from None
    if len(data) > MAX_BYTES:
        raise CgError(f"spec is over the cap of {MAX_BYTES:,} bytes", place)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CgError("not a UTF-8 text file", place) from None


class PosDict(dict):
    """A dict that knows where each of its values was written."""

    loc: Loc
    locs: dict
    key_locs: dict


class PosList(list):
    loc: Loc
    locs: list


class BlockText(str):
    """A scalar string with where its text starts (line, col) in the file, and whether it was quoted."""

    loc: Loc
    quoted: bool = False


def _mark(file, mark) -> Loc:
    return Loc(file, mark.line + 1, mark.column + 1)


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode):
    loader.flatten_mapping(node)
    d = PosDict()
    d.loc = _mark(loader.cg_file, node.start_mark)
    d.locs = {}
    d.key_locs = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise CgError("mapping keys must be plain names", _mark(loader.cg_file, key_node.start_mark))
        if key in d:
            raise CgError(f"duplicate key {key!r}", _mark(loader.cg_file, key_node.start_mark),
                          hint="each key may appear once in a mapping")
        d[key] = loader.construct_object(value_node, deep=True)
        d.locs[key] = _value_loc(loader, value_node)
        d.key_locs[key] = _mark(loader.cg_file, key_node.start_mark)
    return d


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode):
    seq = PosList(loader.construct_object(child, deep=True) for child in node.value)
    seq.loc = _mark(loader.cg_file, node.start_mark)
    seq.locs = [_value_loc(loader, child) for child in node.value]
    seq.flow = node.flow_style
    return seq


def _construct_str(loader: _Loader, node: yaml.ScalarNode):
    text = BlockText(loader.construct_scalar(node))
    text.loc = _value_loc(loader, node)
    text.quoted = node.style in ("'", '"')
    return text


def _value_loc(loader, node) -> Loc:
    """Where a value's text starts: for block scalars (`|`, `>`), the first content line."""
    loc = _mark(loader.cg_file, node.start_mark)
    if isinstance(node, yaml.ScalarNode):
        if node.style in ("|", ">"):
            lines = loader.cg_lines
            line = node.start_mark.line + 1  # 0-based index of the line after the indicator
            while line < len(lines) and not lines[line].strip():
                line += 1
            if line < len(lines):
                indent = len(lines[line]) - len(lines[line].lstrip(" "))
                return Loc(loader.cg_file, line + 1, indent + 1)
        elif node.style in ("'", '"'):
            return Loc(loc.file, loc.line, loc.col + 1)
    return loc


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_Loader.add_constructor("tag:yaml.org,2002:str", _construct_str)


MAX_NODES = 1_000_000  # values of the document once aliases are expanded ("billion laughs" stop here)
MAX_NESTING = 200  # collections inside collections


def _check_events(text: str, file: str) -> None:
    """Count, from the event stream, the aliases, the nesting depth and the number of values the document
    has with every alias expanded: an anchor's size is known when its node ends, and an alias adds it."""
    aliases, total = 0, 0
    sizes: dict[str, int] = {}  # anchor -> values under it (itself included), aliases expanded
    stack: list[list] = []  # open collections: [anchor, values under it so far]

    def count(n: int) -> None:
        nonlocal total
        total += n
        if total > MAX_NODES:
            raise CgError(f"the YAML expands to more than {MAX_NODES:,} values (aliases of aliases)", Loc(file),
                          hint="write the repeated parts out, or use `repeat:`")

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise CgError(f"more than {MAX_ALIASES} YAML aliases", Loc(file),
                              hint="write the repeated parts out, or use `repeat:`")
            n = sizes.get(event.anchor, 1)
            count(n)
            if stack:
                stack[-1][1] += n
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor:
                sizes[event.anchor] = 1
            count(1)
            if stack:
                stack[-1][1] += 1
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            count(1)
            stack.append([event.anchor, 1])
            if len(stack) > MAX_NESTING:
                raise CgError(f"the YAML nests more than {MAX_NESTING} collections deep", _mark(file, event.start_mark),
                              hint="a spec needs only a few levels of lists and mappings")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, n = stack.pop()
            if anchor:
                sizes[anchor] = n
            if stack:
                stack[-1][1] += n


def _reader_problem(e) -> str:
    char = e.character if isinstance(e.character, int) else None
    return f"the control character U+{char:04X} is not allowed" if char is not None else str(e.reason)


def load(text: str, file: str) -> object:
    """Load one YAML document with positions; every failure is a CgError with a place."""
    if len(text) > MAX_BYTES:
        raise CgError(f"spec is {len(text):,} bytes, over the cap of {MAX_BYTES:,}", Loc(file))
    try:
        loader = _Loader(text)  # the reader refuses control characters already here
    except yaml.reader.ReaderError as e:
        before = text[:e.position] if isinstance(e.position, int) else ""
        where = Loc(file, before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1)
        raise CgError(f"invalid YAML: {_reader_problem(e)}", where,
                      hint="a spec is UTF-8 text without control characters (tabs and newlines are fine)") from None
    loader.cg_file = file
    loader.cg_lines = text.splitlines()
    try:
        _check_events(text, file)  # aliases and nesting, counted before anything is constructed
        data = loader.get_single_data()
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        problem = e.problem or ""
        tag = problem.split("'")[1] if problem.count("'") >= 2 else problem
        tag = tag.replace("tag:yaml.org,2002:", "!!")
        where = _mark(file, mark) if mark else Loc(file)
        raise CgError(f"YAML tag {tag} is not allowed: specs are plain data", where,
                      hint="remove the !!python/... tag; specs never construct Python objects") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = _mark(file, mark) if mark else Loc(file)
        problem = e.problem or e.context or "invalid YAML"
        raise CgError(f"invalid YAML: {problem}", where,
                      hint="check indentation, colons and quotes on that line") from None
    except yaml.YAMLError as e:
        raise CgError(f"invalid YAML: {e}", Loc(file)) from None
    except RecursionError:
        raise CgError("YAML is nested too deeply", Loc(file)) from None
    finally:
        loader.dispose()
    return data
