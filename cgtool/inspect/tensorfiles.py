"""Tensor files in and out: inputs, outputs, weights. Read without executing code, written atomically.
"""
from __future__ import annotations
import os
import pickle
from collections.abc import Mapping
import torch
from ..errors import CgError


TORCH_SUFFIXES = (".pt", ".pth")
NUMPY_SUFFIXES = (".npy",)
TENSOR_SUFFIXES = TORCH_SUFFIXES + NUMPY_SUFFIXES

#: outputs with at most this many elements carry their values (JSON, previews of the whole).
SMALL_NUMEL = 1000
#: outputs with at most this many elements are previewed whole in the table.
FULL_PREVIEW = 32


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def dtype_name(dtype: torch.dtype) -> str:
    """``float32`` rather than ``torch.float32``."""
    return str(dtype).removeprefix("torch.")


# --------------------------------------------------------------------------- reading


def _open_check(path: str, what: str) -> None:
    """Fail early, with a clear message, on a path that cannot be a readable file."""
    if not os.path.exists(path):
        raise CgError(f"{what}: no such file", path, hint="check the path (relative paths start at the current directory)")
    if os.path.isdir(path):
        raise CgError(f"{what}: is a directory, not a tensor file", path)
    if not os.access(path, os.R_OK):
        raise CgError(f"{what}: file is not readable (permission denied)", path)


def _torch_load(path: str, what: str):
    """``torch.load`` that runs no code, with its failures turned into CgError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses any global that is not a tensor, a container or a plain number.
        lines = [ln.strip() for ln in str(e).strip().splitlines()]
        detail = next((ln for ln in lines if "GLOBAL" in ln), None)
        if detail is None:  # not a pickle of objects at all: a damaged or foreign file
            raise CgError(f"{what}: not a readable .pt file ({lines[-1] if lines else 'unpickling failed'})", path,
                          hint="a .pt file is written by torch.save; check that the file is complete") from None
        raise CgError(
            f"{what}: the .pt file holds Python objects that cgtool will not unpickle ({detail})",
            path,
            hint="save plain tensors: torch.save(tensor, path) or torch.save({'name': tensor}, path)",
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, ImportError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CgError(
            f"{what}: not a readable .pt file ({msg})",
            path,
            hint="a .pt file is written by torch.save; check that the file is complete",
        ) from None


def _numpy_load(path: str, what: str):
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        text = str(e)
        if "Object arrays" in text or "pickled" in text:
            kind = "an array of Python objects" if "Object arrays" in text else "pickled data, not a .npy array"
            raise CgError(
                f"{what}: the .npy file holds {kind}; cgtool does not load pickles",
                path,
                hint="save a numeric array: numpy.save(path, numpy.asarray(a, dtype='float32'))",
            ) from None
        raise CgError(f"{what}: not a readable .npy file ({text})", path,
                      hint="a .npy file is written by numpy.save") from None
    except (OSError, EOFError) as e:
        raise CgError(f"{what}: not a readable .npy file ({e})", path,
                      hint="a .npy file is written by numpy.save; check that it is complete") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive under a .npy name
        raise CgError(f"{what}: the file is a .npz archive, not a single .npy array", path,
                      hint="save one array with numpy.save(path, array)")
    return arr


def _from_numpy(arr, path: str, what: str) -> torch.Tensor:
    import numpy as np

    if arr.dtype.kind not in "biufc":
        raise CgError(f"{what}: the .npy array has dtype {arr.dtype}, not a numeric type", path,
                      hint="save numbers (float32, int64, bool, ...)")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    arr = np.ascontiguousarray(arr)
    try:
        return torch.from_numpy(arr)
    except TypeError as e:  # a numeric dtype that torch has no tensor type for
        raise CgError(f"{what}: the .npy array's dtype {arr.dtype} has no torch equivalent ({e})", path) from None


def load_tensor(path: str, name: str) -> torch.Tensor:
    """The tensor in *path* for the input called *name*.

    ``.pt``/``.pth``: a tensor saved with ``torch.save``, or a dict of tensors with a key equal
    to *name* (what ``cgtool run -o`` writes for several outputs). ``.npy``: one numeric array.
    Every failure is a :class:`CgError` that names the input and the file.
    """
    what = f"input {name!r}"
    suffix = _suffix(path)
    if suffix not in TENSOR_SUFFIXES:
        raise CgError(
            f"{what}: unknown tensor file type {suffix or '(no extension)'!r}",
            path,
            hint="use a .pt file (torch.save) or a .npy file (numpy.save), or give a shape: "
            f"{name}=2,784",
        )
    _open_check(path, what)
    if suffix in NUMPY_SUFFIXES:
        return _from_numpy(_numpy_load(path, what), path, what)

    obj = _torch_load(path, what)
    if isinstance(obj, Mapping) and name in obj and isinstance(obj[name], torch.Tensor):
        obj = obj[name]
    if isinstance(obj, torch.Tensor):
        if obj.device.type == "meta":
            raise CgError(f"{what}: the .pt file holds a meta tensor (a shape, no values)", path,
                          hint=f"save a tensor with values, or give the shape instead: --input {name}="
                          + ",".join(str(d) for d in obj.shape))
        _check_stored(obj, what, path, name)
        return obj.detach() if obj.requires_grad or isinstance(obj, torch.nn.Parameter) else obj
    if isinstance(obj, Mapping):
        keys = ", ".join(repr(str(k)) for k in list(obj)[:8]) or "none"
        raise CgError(
            f"{what}: the .pt file holds a dict (keys: {keys}), not a tensor",
            path,
            hint=f"save a tensor with torch.save(t, path), or a dict with a key {name!r}",
        )
    raise CgError(f"{what}: the .pt file holds a {type(obj).__name__}, not a tensor", path,
                  hint="save a tensor with torch.save(t, path)")


def _check_stored(t: torch.Tensor, what: str, path: str, name: str) -> None:
    """An expanded view (stride 0) saves one value for any number of elements: a 1.5 KB file can stand for
    gigabytes that every operation on it makes real. An input's values are all in the file, or it is refused."""
    try:
        stored = t.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):
        return
    if t.numel() * t.element_size() > stored:
        raise CgError(f"{what}: the .pt file holds an expanded view: {t.numel():,} elements stored in "
                      f"{stored:,} bytes", path,
                      hint="save a tensor whose values are all stored: torch.save(t.contiguous().clone(), path), or "
                      f"give a shape: --input {name}=" + ",".join(str(d) for d in t.shape))


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state_dict from *path* (as ``cgtool build --save`` writes it), loaded without running code."""
    what = "weights"
    _open_check(path, what)
    obj = _torch_load(path, what)
    if isinstance(obj, torch.Tensor):
        raise CgError("weights: the file holds a single tensor, not a state_dict", path,
                      hint="weights are a dict of name -> tensor, as written by `cgtool build SPEC --save FILE`")
    if not isinstance(obj, Mapping):
        raise CgError(f"weights: the file holds a {type(obj).__name__}, not a state_dict", path,
                      hint="weights are a dict of name -> tensor, as written by `cgtool build SPEC --save FILE`")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CgError(f"weights: entries that are not tensors: {', '.join(bad[:5])}", path,
                      hint="weights are a dict of name -> tensor, as written by `cgtool build SPEC --save FILE`")
    return {str(k): v for k, v in obj.items()}


def apply_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], place: str | None = None) -> bool:
    """Load *state* into *module* exactly: every key present, no extra key, every shape equal.

    Checked before anything is copied, so a mismatch leaves the module untouched. Values are
    copied into the module's own tensors (its device and dtype are kept). Returns False when
    the module is on the meta device: the names and shapes were checked, but meta tensors hold
    no values to copy into.
    """
    expected = module.state_dict(keep_vars=True)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: file {list(state[k].shape)}, model {list(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    hint = "the weights were saved from a different spec or different --arg values; " \
        "save them again with `cgtool build SPEC --save FILE` using the same spec and args"
    if wrong:
        more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
        raise CgError(f"weights do not fit the model: shape mismatch: {'; '.join(wrong[:3])}{more}", place, hint=hint)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}" + (f" (+{len(missing) - 5})" if len(missing) > 5 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}" + (f" (+{len(unexpected) - 5})" if len(unexpected) > 5 else ""))
        raise CgError(f"weights do not fit the model: {'; '.join(parts)}", place, hint=hint)
    for k, v in state.items():
        target = expected[k]
        if target.dtype.is_floating_point != v.dtype.is_floating_point and v.dtype != torch.bool:
            raise CgError(f"weights do not fit the model: {k} is {dtype_name(v.dtype)} in the file "
                          f"but {dtype_name(target.dtype)} in the model", place, hint=hint)
    if any(t.is_meta for t in expected.values()):
        return False
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as e:  # pragma: no cover - the checks above catch what torch would
        raise CgError(f"weights do not fit the model: {str(e).splitlines()[0]}", place, hint=hint) from None
    return True


# --------------------------------------------------------------------------- outputs


def flatten_outputs(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors in a forward's result, by name: ``output`` for a single tensor, the keys of a
    dict, ``0``, ``1``, ... for a tuple or list (nested names joined with ``.``). Python numbers
    become 0-d tensors; ``None`` is skipped."""
    if isinstance(obj, torch.Tensor):
        return {prefix or "output": obj}
    if isinstance(obj, bool | int | float):
        return {prefix or "output": torch.tensor(obj)}
    if obj is None:
        return {}
    items = obj.items() if isinstance(obj, Mapping) else enumerate(obj) if isinstance(obj, list | tuple) else None
    if items is None:
        raise CgError(f"the forward returned a {type(obj).__name__}{' at ' + prefix if prefix else ''}, not a tensor",
                      hint="return a tensor, or a tuple/dict of tensors")
    flat: dict[str, torch.Tensor] = {}
    for k, v in items:
        flat.update(flatten_outputs(v, f"{prefix}.{k}" if prefix else str(k)))
    return flat


def save_output(obj, path: str) -> str:
    """Write a tensor, or a dict of tensors, to *path* (``.pt`` or ``.npy``) atomically.

    Tensors are detached and moved to the CPU first, so the file loads anywhere. ``.npy`` holds
    one array: several outputs need ``.pt``. Returns the path written.
    """
    suffix = _suffix(path)
    if suffix not in TENSOR_SUFFIXES:
        raise CgError(f"unknown output file type {suffix or '(no extension)'!r}", path,
                      hint="write a .pt file (torch) or a .npy file (numpy)")
    obj = _checked_output(obj, suffix, path)
    directory = _output_directory(path)
    _write_atomically(_payload(obj, suffix, path), suffix, path, directory)
    return path


def _checked_output(obj, suffix: str, path: str):
    """*obj* once every output in it is a tensor with values that *suffix* can hold; a dict of one
    output becomes that tensor for ``.npy``."""
    if isinstance(obj, Mapping):
        tensors = {str(k): v for k, v in obj.items()}
        if len(tensors) == 1 and suffix in NUMPY_SUFFIXES:
            obj = next(iter(tensors.values()))
    else:
        tensors = {"output": obj}
    for k, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise CgError(f"output {k!r} is a {type(t).__name__}, not a tensor", path)
        if t.is_meta:
            raise CgError(f"output {k!r} is on the meta device: it has a shape but no values to save", path,
                          hint="run on --device cpu to save values")
    if suffix in NUMPY_SUFFIXES and isinstance(obj, Mapping):
        raise CgError(f"a .npy file holds one array, but the forward returned {len(tensors)} outputs "
                      f"({', '.join(tensors)})", path, hint="save several outputs to a .pt file")
    return obj


def _output_directory(path: str) -> str:
    """The directory *path* will be written in, refused before anything is converted or written."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CgError("cannot write the output: its directory does not exist", path, hint="create the directory first")
    if os.path.isdir(path):
        raise CgError("cannot write the output: the path is a directory", path)
    return directory


def _payload(obj, suffix: str, path: str):
    """What goes in the file: CPU tensors for ``.pt``, one numpy array for ``.npy``."""
    if suffix in NUMPY_SUFFIXES:
        t = _plain(obj)
        if t.dtype == torch.bfloat16:
            raise CgError("numpy has no bfloat16: cannot save a bfloat16 output as .npy", path,
                          hint="save it as .pt, or run with --dtype float32")
        return t.resolve_conj().resolve_neg().numpy()
    return {k: _plain(v) for k, v in obj.items()} if isinstance(obj, Mapping) else _plain(obj)


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu()


def _write_atomically(payload, suffix: str, path: str, directory: str) -> None:
    """Write to a temporary file beside *path* and rename it over *path* (:mod:`cgtool.atomic`): a reader never
    sees a half-written file, a failure leaves what was there, and a killed writer's leftovers are swept."""
    from ..atomic import atomic_file

    with atomic_file(path) as f:
        if suffix in NUMPY_SUFFIXES:
            import numpy as np

            np.save(f, payload, allow_pickle=False)
        else:
            torch.save(payload, f)


def save_state_dict(module: torch.nn.Module, path: str, *, device=None, place: str = "--save") -> str:
    """Write *module*'s ``state_dict`` to a ``.pt``/``.pth`` file atomically (what ``build --save`` does).

    Refused for a model built on the meta device (*device*, or any meta tensor: no values) and for
    any other suffix; the file loads back with :func:`load_state_dict` / ``run --weights``.
    Returns the path written.
    """
    state = module.state_dict()
    if torch.device(device or "cpu").type == "meta" or any(t.is_meta for t in state.values()):
        raise CgError("cannot save weights built on the meta device: they have no values", place,
                      hint="build with --device cpu to save")
    if not path.endswith(TORCH_SUFFIXES):
        raise CgError("weights are saved as a .pt file", place, hint="for example --save weights.pt")
    return save_output(state, path)


