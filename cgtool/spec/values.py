"""Spec values (`4 * d`, `(3, 3)`, `Linear(d, 4 * d)`): constant expressions over the spec's args.
"""
from __future__ import annotations
import ast
from ..errors import CgError, did_you_mean
from ..lang.limits import DEFAULT_LIMITS, Limits, make_guards


# --------------------------------------------------------------------------- constant expressions


def eval_constant(text: str, env: dict, place, *, what: str = "value", call=None, limits: Limits = DEFAULT_LIMITS):
    """Evaluate a constant expression (``4 * d``, ``(3, 3)``, ``d // heads``) over *env*.

    Only literals, names from *env*, arithmetic, comparisons, tuples/lists and
    (when *call* is given) calls handled by ``call(name, args, kwargs, node)``.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise CgError(f"cannot parse {what} {text!r}: {e.msg}", place) from None
    except (ValueError, RecursionError, MemoryError):
        raise CgError(f"cannot parse {what} {text!r}", place) from None
    guards = make_guards(limits)
    ops = {
        ast.Add: lambda a, b: a + b,
        ast.Sub: lambda a, b: a - b,
        ast.Mult: guards["_cg_mul"],
        ast.Div: lambda a, b: a / b,
        ast.FloorDiv: lambda a, b: a // b,
        ast.Mod: lambda a, b: a % b,
        ast.Pow: guards["_cg_pow"],
    }
    cmps = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
            ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b}
    helpers = {"int": int, "float": float, "min": min, "max": max, "round": round, "abs": abs}

    def ev(node, depth=0):
        if depth > 100:
            raise CgError(f"{what} {text!r} is nested too deeply", place)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (int, float, str, bool)) or node.value is None:
                return node.value
            raise CgError(f"{type(node.value).__name__} is not allowed in {what} {text!r}", place)
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            if node.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[node.id]
            hint = did_you_mean(node.id, env)
            known = ", ".join(sorted(env)) or "none"
            raise CgError(f"unknown name {node.id!r} in {what} {text!r} (args: {known})", place,
                          hint or "define it under `args:` or pass --arg NAME=VALUE")
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            a, b = ev(node.left, depth + 1), ev(node.right, depth + 1)
            try:
                return ops[type(node.op)](a, b)
            except CgError as e:
                raise e.with_place(place) from None
            except Exception as e:  # noqa: BLE001 - arithmetic on user values
                raise CgError(f"cannot compute {ast.unparse(node)!r}: {e}", place) from None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            v = ev(node.operand, depth + 1)
            try:
                return -v if isinstance(node.op, ast.USub) else (+v if isinstance(node.op, ast.UAdd) else not v)
            except Exception as e:  # noqa: BLE001
                raise CgError(f"cannot compute {ast.unparse(node)!r}: {e}", place) from None
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in cmps:
            return cmps[type(node.ops[0])](ev(node.left, depth + 1), ev(node.comparators[0], depth + 1))
        if isinstance(node, ast.BoolOp):
            values = node.values
            result = ev(values[0], depth + 1)
            for v in values[1:]:
                if isinstance(node.op, ast.And) and not result or isinstance(node.op, ast.Or) and result:
                    return result
                result = ev(v, depth + 1)
            return result
        if isinstance(node, ast.IfExp):
            return ev(node.body, depth + 1) if ev(node.test, depth + 1) else ev(node.orelse, depth + 1)
        if isinstance(node, ast.Tuple):
            return tuple(ev(e, depth + 1) for e in node.elts)
        if isinstance(node, ast.List):
            return [ev(e, depth + 1) for e in node.elts]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [ev(a, depth + 1) for a in node.args if not isinstance(a, ast.Starred)]
            if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
                raise CgError(f"unpacking is not allowed in {what} {text!r}", place)
            kwargs = {k.arg: ev(k.value, depth + 1) for k in node.keywords}
            if node.func.id in helpers and node.func.id not in env:
                try:
                    return helpers[node.func.id](*args, **kwargs)
                except Exception as e:  # noqa: BLE001
                    raise CgError(f"cannot compute {ast.unparse(node)!r}: {e}", place) from None
            if call is not None:
                return call(node.func.id, args, kwargs, node)
        raise CgError(f"{ast.unparse(node)!r} is not allowed in {what} {text!r}", place,
                      hint="use numbers, strings, args names, arithmetic, tuples and lists")

    return ev(tree.body)
