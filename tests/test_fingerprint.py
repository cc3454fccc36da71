"""The model fingerprint a resume compares: equal for the same weights, different for any
change of a parameter or buffer (value, dtype, shape or name), any dtype hashable."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from topk_certify.models.fingerprint import model_fingerprint, remember_file  # noqa: E402


def net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())


def test_same_weights_same_fingerprint_and_every_change_shows():
    base = model_fingerprint(net())
    assert base == model_fingerprint(net()) and len(base) == 64
    assert model_fingerprint(net(seed=1)) != base
    changed = net()
    with torch.no_grad():
        changed[1].running_mean[2] += 1e-6  # a buffer, not a parameter
    assert model_fingerprint(changed) != base
    tracked = net()
    tracked[1].num_batches_tracked += 1  # a 0-dim buffer
    assert model_fingerprint(tracked) != base
    assert model_fingerprint(net().double()) != base  # same values, other dtype
    renamed = torch.nn.Sequential()
    for name, module in zip(("conv", "bn", "flat"), net()):
        renamed.add_module(name, module)
    assert model_fingerprint(renamed) != base


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.bool, torch.complex64, torch.int8])
def test_any_dtype_is_hashed_by_its_bytes(dtype):
    a, b = torch.nn.Module(), torch.nn.Module()
    a.register_buffer("t", torch.zeros(3, dtype=dtype))
    b.register_buffer("t", torch.ones(3, dtype=dtype))
    assert model_fingerprint(a) != model_fingerprint(b)


def test_a_torchscript_files_bytes_are_part_of_it():
    a, b = net(), net()
    remember_file(b, b"the file it was loaded from")
    assert model_fingerprint(a) != model_fingerprint(b)
