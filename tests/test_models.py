"""topk_certify.models: Cohen-format checkpoints load into the same function, bad files say why."""

from __future__ import annotations

import os
import pickle
import zipfile

import pytest

torch = pytest.importorskip("torch")

from cohen_layers import CohenNormalizeLayer  # noqa: E402
from topk_certify.models import (  # noqa: E402
    ARCHITECTURES,
    CIFAR10_MEAN,
    CIFAR10_SD,
    IMAGENET_MEAN,
    IMAGENET_SD,
    CheckpointError,
    build_model,
    is_torchscript,
    load_checkpoint,
)
from topk_certify.models.cifar_resnet import CifarResNet  # noqa: E402
from topk_certify.models.imagenet_resnet import ResNet50  # noqa: E402


def randomize(module, seed):
    """Random weights and BatchNorm statistics, so eval-mode outputs depend on all of them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=gen)
                tensor.copy_(values * 0.5 + 0.5 if name.endswith("running_var") else (values - 0.5) * 0.2)
    return module.eval()


def cohen_checkpoint(path, arch, network, mean, sd, data_parallel=False, **extra):
    """Save as Cohen et al.'s train.py does: Sequential(normalize, network), DataParallel for resnet50."""
    inner = torch.nn.DataParallel(network) if data_parallel else network
    trained = torch.nn.Sequential(CohenNormalizeLayer(mean, sd), inner)
    # What SGD(momentum=0.9).state_dict() holds after training (built by hand: importing
    # torch.optim takes seconds).
    params = list(trained.parameters())
    optimizer = {
        "state": {i: {"momentum_buffer": torch.zeros_like(p)} for i, p in enumerate(params[:3])},
        "param_groups": [{"lr": 0.001, "momentum": 0.9, "weight_decay": 1e-4, "params": list(range(len(params)))}],
    }
    blob = {"epoch": 90, "arch": arch, "state_dict": trained.state_dict(), "optimizer": optimizer}
    blob.update(extra)
    torch.save(blob, path)
    return torch.nn.Sequential(CohenNormalizeLayer(mean, sd), network).eval()


@pytest.fixture(scope="module")
def resnet20_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "checkpoint.pth.tar"
    original = cohen_checkpoint(path, "cifar_resnet20", randomize(CifarResNet(20), 1), CIFAR10_MEAN, CIFAR10_SD)
    return path, original


def test_architectures_have_torchvision_and_cohen_parameter_counts():
    # Published sizes: torchvision resnet50 25,557,032 parameters in 320 state_dict entries;
    # the CIFAR ResNets with 1x1-conv shortcuts 0.27M and 1.73M.
    sizes = {}
    for arch in ARCHITECTURES:
        model = build_model(arch)
        sizes[arch] = (sum(p.numel() for p in model.parameters()), len(model.state_dict()))
    assert sizes["resnet50"] == (25_557_032, 320)
    assert sizes["cifar_resnet20"][0] == 272_474
    assert sizes["cifar_resnet110"][0] == 1_730_714


def test_key_layout_names_match_cohen_and_torchvision():
    keys50 = build_model("resnet50")[1].state_dict()
    assert keys50["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert keys50["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # stride on the 3x3, as torchvision
    assert build_model("resnet50")[1].layer2[0].conv2.stride == (2, 2)
    assert keys50["layer4.2.bn3.num_batches_tracked"].dtype == torch.long
    assert keys50["fc.weight"].shape == (1000, 2048)
    keys110 = build_model("cifar_resnet110").state_dict()
    assert "1.layer3.17.bn2.running_var" in keys110 and "1.layer3.18.conv1.weight" not in keys110
    assert "1.layer1.0.downsample.0.weight" not in keys110  # same shape: no shortcut conv
    assert keys110["1.layer2.0.downsample.0.weight"].shape == (32, 16, 1, 1)
    assert keys110["1.fc.weight"].shape == (10, 64)
    assert not any(key.startswith("0.") for key in keys110)  # the normaliser adds no keys


def test_resnet20_loads_and_matches_the_trained_module(resnet20_file):
    path, original = resnet20_file
    model = load_checkpoint(path)
    assert not model.training
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = original(x), model(x)
    assert got.shape == (4, 10)
    assert expected.std() > 0.01  # the comparison is not between constants
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_resnet110_loads_and_matches(tmp_path):
    path = tmp_path / "r110.pth"
    original = cohen_checkpoint(path, "cifar_resnet110", randomize(CifarResNet(110), 2), CIFAR10_MEAN, CIFAR10_SD)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(path, device="cpu")(x), original(x), rtol=1e-4, atol=1e-5)


def test_resnet50_with_data_parallel_prefix_loads_and_matches(tmp_path):
    path = tmp_path / "r50.pth.tar"
    original = cohen_checkpoint(
        path, "resnet50", randomize(ResNet50(), 3), IMAGENET_MEAN, IMAGENET_SD, data_parallel=True
    )
    keys = torch.load(path, weights_only=True)["state_dict"]
    assert next(iter(keys)).startswith("1.module.")  # the layout under test really is DataParallel's
    model = load_checkpoint(path)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got, expected = model(x), original(x)
    assert got.shape == (1, 1000)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_normalisation_moves_with_the_model_but_is_not_saved(resnet20_file):
    model = load_checkpoint(resnet20_file[0])
    norm = model[0]
    assert torch.allclose(norm.mean.flatten(), torch.tensor(CIFAR10_MEAN))
    assert torch.allclose(norm.sd.flatten(), torch.tensor(CIFAR10_SD))
    assert {name for name, _ in model.named_buffers()} >= {"0.mean", "0.sd"}
    assert not any(key.startswith("0.") for key in model.state_dict())
    assert model.double()[0].mean.dtype == torch.float64


def test_old_checkpoint_without_num_batches_tracked_loads(tmp_path, resnet20_file):
    blob = torch.load(resnet20_file[0], weights_only=True)
    blob["state_dict"] = {k: v for k, v in blob["state_dict"].items() if not k.endswith("num_batches_tracked")}
    torch.save(blob, tmp_path / "old.pth")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(tmp_path / "old.pth")(x), resnet20_file[1](x), rtol=1e-5, atol=1e-5)


def test_legacy_torch_save_format_loads(tmp_path, resnet20_file):
    blob = torch.load(resnet20_file[0], weights_only=True)
    torch.save(blob, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(tmp_path / "legacy.pth")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            load_checkpoint(tmp_path / "legacy.pth")(x), resnet20_file[1](x), rtol=1e-5, atol=1e-5
        )


def _resave(tmp_path, resnet20_file, change):
    blob = torch.load(resnet20_file[0], weights_only=True)
    change(blob)
    path = tmp_path / "changed.pth"
    torch.save(blob, path)
    return path


def test_unknown_arch_names_the_known_ones(tmp_path, resnet20_file):
    path = _resave(tmp_path, resnet20_file, lambda b: b.update(arch="vgg16"))
    with pytest.raises(
        CheckpointError, match=r"unknown arch 'vgg16' \(known: cifar_resnet20, cifar_resnet110, resnet50\)"
    ):
        load_checkpoint(path)


def test_missing_key_is_named(tmp_path, resnet20_file):
    path = _resave(tmp_path, resnet20_file, lambda b: b["state_dict"].pop("1.layer2.0.conv1.weight"))
    with pytest.raises(CheckpointError, match=r"does not fit cifar_resnet20: missing '1\.layer2\.0\.conv1\.weight'"):
        load_checkpoint(path)


def test_extra_key_is_named(tmp_path, resnet20_file):
    path = _resave(tmp_path, resnet20_file, lambda b: b["state_dict"].update({"1.head.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"unexpected '1\.head\.weight'"):
        load_checkpoint(path)


def test_wrong_arch_for_the_weights_says_what_fits_not(tmp_path, resnet20_file):
    path = _resave(tmp_path, resnet20_file, lambda b: b.update(arch="cifar_resnet110"))
    with pytest.raises(
        CheckpointError, match=r"does not fit cifar_resnet110: missing '1\.layer1\.3\.conv1\.weight'.* and \d+ more"
    ):
        load_checkpoint(path)


def test_shape_mismatch_is_named(tmp_path, resnet20_file):
    path = _resave(tmp_path, resnet20_file, lambda b: b["state_dict"].update({"1.fc.weight": torch.zeros(100, 64)}))
    with pytest.raises(
        CheckpointError, match=r"state_dict\['1\.fc\.weight'\] has shape \(100, 64\), cifar_resnet20 needs \(10, 64\)"
    ):
        load_checkpoint(path)


def test_bare_network_state_dict_is_refused_with_the_expected_layout(tmp_path):
    path = tmp_path / "bare.pth"
    torch.save({"arch": "cifar_resnet20", "state_dict": CifarResNet(20).state_dict()}, path)
    with pytest.raises(
        CheckpointError, match=r"missing '1\.conv1\.weight'.*unexpected 'conv1\.weight'.*Sequential\(normalize"
    ):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "blob, message",
    [
        ([1, 2, 3], r"expected a dict with 'arch' and 'state_dict'.*got a list"),
        ({"state_dict": {}}, r"has no 'arch'"),
        ({"arch": "resnet50", "model": {}}, r"has no 'state_dict'.*found 'arch', 'model'"),
        ({"arch": "resnet50", "state_dict": [1]}, r"'state_dict' is a list"),
        ({"arch": "cifar_resnet20", "state_dict": {"1.conv1.weight": [0.0]}}, r"does not fit"),
    ],
)
def test_malformed_checkpoints(tmp_path, blob, message):
    torch.save(blob, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "bad.pth")


def test_non_tensor_value_is_named(tmp_path, resnet20_file):
    path = _resave(tmp_path, resnet20_file, lambda b: b["state_dict"].update({"1.fc.bias": [0.0] * 10}))
    with pytest.raises(CheckpointError, match=r"state_dict\['1\.fc\.bias'\] is a list, not a tensor"):
        load_checkpoint(path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_that_would_run_code_is_refused_and_does_not_run(tmp_path, legacy):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save(
        {"arch": "cifar_resnet20", "state_dict": {}, "x": _RunsCode(marker)},
        path,
        _use_new_zipfile_serialization=not legacy,
    )
    with pytest.raises(CheckpointError, match=r"refused: its pickle refers to (posix|nt)\.system.*could run code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_plain_pickle_is_not_a_torch_file_and_does_not_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"arch": _RunsCode(marker)}))
    with pytest.raises(CheckpointError, match="not a file written by torch.save"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"hello world\n", bytes(range(256)) * 4])
def test_not_a_torch_file(tmp_path, content):
    (tmp_path / "x.pth").write_bytes(content)
    with pytest.raises(CheckpointError, match=r"x\.pth: not a file written by torch\.save"):
        load_checkpoint(tmp_path / "x.pth")


def test_truncated_checkpoint_is_corrupt(tmp_path, resnet20_file):
    data = resnet20_file[0].read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth: (corrupt|not a file written by torch.save)"):
        load_checkpoint(tmp_path / "cut.pth")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pth: no such file"):
        load_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


def test_bad_device_is_a_value_error(resnet20_file):
    with pytest.raises(ValueError, match="device must be"):
        load_checkpoint(resnet20_file[0], device="gpu0")


def test_is_torchscript_tells_archives_from_checkpoints(tmp_path, resnet20_file):
    import warnings

    with warnings.catch_warnings():  # newer torch deprecates TorchScript; saving one here is the point
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "ts.pt")
    assert is_torchscript(tmp_path / "ts.pt")
    assert not is_torchscript(resnet20_file[0])
    assert not is_torchscript(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert not is_torchscript(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="TorchScript archive.*torch.jit.load"):
        load_checkpoint(tmp_path / "ts.pt")


def test_importing_topk_certify_does_not_import_the_torch_packages():
    import subprocess
    import sys

    code = (
        "import sys, topk_certify; print('topk_certify.models' in sys.modules, 'topk_certify.datasets' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_data_parallel_layout_is_read_for_any_arch_and_named_in_messages(tmp_path):
    network = randomize(CifarResNet(20), 4)
    path = tmp_path / "dp.pth"
    original = cohen_checkpoint(path, "cifar_resnet20", network, CIFAR10_MEAN, CIFAR10_SD, data_parallel=True)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(path)(x), original(x), rtol=1e-5, atol=1e-5)
    blob = torch.load(path, weights_only=True)
    del blob["state_dict"]["1.module.fc.bias"]
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match=r"missing '1\.module\.fc\.bias'"):
        load_checkpoint(path)
