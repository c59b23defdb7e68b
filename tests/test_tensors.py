"""Tensor files in and out: what loads, what is refused (and how it is said), atomic writes."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from cgtool.errors import CgError
from cgtool.inspect.run import run_result, tensor_stats
from cgtool.inspect.tensorfiles import SMALL_NUMEL, apply_weights, flatten_outputs, load_state_dict, load_tensor, save_output


def error_of(fn, *args) -> CgError:
    with pytest.raises(CgError) as info:
        fn(*args)
    return info.value


# --------------------------------------------------------------------------- load_tensor


def test_load_pt_tensor(tmp_path):
    t = torch.randn(2, 3)
    torch.save(t, tmp_path / "x.pt")
    assert torch.equal(load_tensor(str(tmp_path / "x.pt"), "x"), t)


def test_load_pt_parameter_becomes_plain_tensor(tmp_path):
    torch.save(nn.Parameter(torch.ones(3)), tmp_path / "p.pt")
    t = load_tensor(str(tmp_path / "p.pt"), "x")
    assert not t.requires_grad and torch.equal(t, torch.ones(3))


def test_load_pt_dict_with_the_inputs_name(tmp_path):
    torch.save({"x": torch.zeros(2), "y": torch.ones(2)}, tmp_path / "d.pt")
    assert torch.equal(load_tensor(str(tmp_path / "d.pt"), "y"), torch.ones(2))


def test_load_npy(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "a.npy", a)
    t = load_tensor(str(tmp_path / "a.npy"), "x")
    assert t.dtype == torch.float32 and t.tolist() == a.tolist()


def test_load_npy_big_endian_and_non_contiguous(tmp_path):
    a = np.arange(6, dtype=">f8").reshape(2, 3).T
    np.save(tmp_path / "a.npy", a)
    t = load_tensor(str(tmp_path / "a.npy"), "x")
    assert t.dtype == torch.float64 and t.tolist() == a.tolist()


def test_missing_file_names_the_input(tmp_path):
    e = error_of(load_tensor, str(tmp_path / "nope.pt"), "x")
    assert "input 'x'" in e.message and "no such file" in e.message and e.place.endswith("nope.pt")


def test_unknown_extension(tmp_path):
    (tmp_path / "x.txt").write_text("1 2 3")
    e = error_of(load_tensor, str(tmp_path / "x.txt"), "x")
    assert "'.txt'" in e.message and "input 'x'" in e.message and ".npy" in e.hint


def test_directory_is_refused(tmp_path):
    (tmp_path / "d.pt").mkdir()
    assert "directory" in error_of(load_tensor, str(tmp_path / "d.pt"), "x").message


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    e = error_of(load_tensor, str(tmp_path / "obj.npy"), "x")
    assert "pickle" in e.message and "input 'x'" in e.message


def test_plain_pickle_under_npy_name_is_refused(tmp_path):
    (tmp_path / "p.npy").write_bytes(pickle.dumps({"a": 1}))
    e = error_of(load_tensor, str(tmp_path / "p.npy"), "x")
    assert "pickle" in e.message


def test_string_npy_is_refused(tmp_path):
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    assert "not a numeric type" in error_of(load_tensor, str(tmp_path / "s.npy"), "x").message


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pt_with_code_is_refused_without_running_it(tmp_path):
    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    e = error_of(load_tensor, str(tmp_path / "evil.pt"), "x")
    assert "will not unpickle" in e.message


def test_non_tensor_pt_is_refused(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    e = error_of(load_tensor, str(tmp_path / "list.pt"), "x")
    assert "holds a list, not a tensor" in e.message and "input 'x'" in e.message
    torch.save({"a": torch.ones(1)}, tmp_path / "dict.pt")
    e = error_of(load_tensor, str(tmp_path / "dict.pt"), "x")
    assert "holds a dict" in e.message and "'a'" in e.message


def test_corrupt_pt(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a zip file at all")
    assert "not a readable .pt file" in error_of(load_tensor, str(tmp_path / "bad.pt"), "x").message


# --------------------------------------------------------------------------- save_output


def test_save_and_reload_pt_and_npy(tmp_path):
    t = torch.randn(2, 5)
    save_output(t, str(tmp_path / "o.pt"))
    assert torch.equal(torch.load(tmp_path / "o.pt", weights_only=True), t)
    save_output(t, str(tmp_path / "o.npy"))
    assert np.array_equal(np.load(tmp_path / "o.npy"), t.numpy())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_save_dict_of_outputs(tmp_path):
    d = {"logits": torch.ones(2), "loss": torch.tensor(1.5)}
    save_output(d, str(tmp_path / "o.pt"))
    back = torch.load(tmp_path / "o.pt", weights_only=True)
    assert set(back) == {"logits", "loss"} and torch.equal(back["logits"], d["logits"])
    e = error_of(save_output, d, str(tmp_path / "o.npy"))
    assert "one array" in e.message and ".pt" in e.hint


def test_save_is_atomic_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "o.pt"
    save_output(torch.zeros(3), str(path))

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    e = error_of(save_output, torch.ones(3), str(path))
    assert "No space left" in e.message
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True), torch.zeros(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.pt"]


def test_save_file_mode_follows_umask(tmp_path):
    save_output(torch.zeros(1), str(tmp_path / "o.pt"))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "o.pt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_save_refusals(tmp_path):
    assert "unknown output file type" in error_of(save_output, torch.ones(1), str(tmp_path / "o.csv")).message
    assert "does not exist" in error_of(save_output, torch.ones(1), str(tmp_path / "no" / "o.pt")).message
    assert "meta" in error_of(save_output, torch.empty(2, device="meta"), str(tmp_path / "o.pt")).message
    assert "bfloat16" in error_of(save_output, torch.ones(2, dtype=torch.bfloat16), str(tmp_path / "o.npy")).message


def test_save_detaches_grad_tensors(tmp_path):
    t = torch.ones(2, requires_grad=True) * 2
    save_output(t, str(tmp_path / "o.npy"))
    assert np.load(tmp_path / "o.npy").tolist() == [2.0, 2.0]


# --------------------------------------------------------------------------- weights


def test_state_dict_round_trip_and_mismatches(tmp_path):
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    torch.save(a.state_dict(), tmp_path / "w.pt")
    apply_weights(b, load_state_dict(str(tmp_path / "w.pt")))
    assert torch.equal(a.weight, b.weight)

    wrong = nn.Linear(4, 2)
    before = wrong.weight.clone()
    e = error_of(apply_weights, wrong, load_state_dict(str(tmp_path / "w.pt")))
    assert "shape mismatch" in e.message and "weight: file [2, 3], model [2, 4]" in e.message
    assert torch.equal(wrong.weight, before)  # untouched

    e = error_of(apply_weights, nn.Sequential(nn.Linear(3, 2)), load_state_dict(str(tmp_path / "w.pt")))
    assert "missing 0.weight" in e.message and "unexpected weight" in e.message and "--save" in e.hint


def test_weights_file_must_hold_a_state_dict(tmp_path):
    torch.save(torch.ones(2), tmp_path / "t.pt")
    assert "single tensor" in error_of(load_state_dict, str(tmp_path / "t.pt")).message
    torch.save({"a": 1}, tmp_path / "n.pt")
    assert "not tensors: a" in error_of(load_state_dict, str(tmp_path / "n.pt")).message
    assert "no such file" in error_of(load_state_dict, str(tmp_path / "none.pt")).message


# --------------------------------------------------------------------------- outputs


def test_flatten_outputs_names():
    assert list(flatten_outputs(torch.ones(1))) == ["output"]
    assert list(flatten_outputs((torch.ones(1), [torch.ones(1)]))) == ["0", "1.0"]
    assert list(flatten_outputs({"a": torch.ones(1), "b": (torch.ones(1), None)})) == ["a", "b.0"]
    with pytest.raises(CgError):
        flatten_outputs("text")


def test_describe_outputs_values_and_stats():
    r = run_result(torch.tensor([[1.0, float("nan")], [3.0, float("inf")]]))
    (o,) = r.outputs
    assert o.shape == (2, 2) and o.dtype == "float32" and o.numel == 4
    assert o.stats.min == 1.0 and o.stats.max == 3.0 and o.stats.nan == 1 and o.stats.inf == 1
    big = run_result(torch.zeros(SMALL_NUMEL + 1)).outputs[0]
    assert big.values is None and len(big.preview) == 8
    meta = run_result(torch.empty(3, device="meta")).outputs[0]
    assert meta.values is None and meta.stats is None and meta.device == "meta"
    scalar = run_result(torch.tensor(2.5)).outputs[0]
    assert scalar.shape == () and scalar.values == 2.5 and scalar.stats.std is None


def test_stats_of_ints_and_bools():
    s = tensor_stats(torch.tensor([1, 2, 3]))
    assert (s.min, s.max, s.mean) == (1, 3, 2.0)
    b = tensor_stats(torch.tensor([True, False]))
    assert b.mean == 0.5 and b.min is False and b.max is True


def test_apply_weights_on_meta_checks_only():
    state = nn.Linear(3, 2).state_dict()
    meta = nn.Linear(3, 2, device="meta")
    assert apply_weights(meta, state) is False
    with pytest.raises(CgError, match="shape mismatch"):
        apply_weights(nn.Linear(4, 2, device="meta"), state)
    assert apply_weights(nn.Linear(3, 2), state) is True
