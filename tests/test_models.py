import ast
from pathlib import Path

import pytest
import torch

import cnnbench.models
from cnnbench.data import DATASETS
from cnnbench.models import SHARED_MODULES, create_model, list_models, model_dataset
from cnnbench.summary import count_params

# (trainable parameters, Keras "Total params") from the seeds' own summaries
SEED_COUNTS = {
    "cifar_base": (1_172_410, 1_172_410),
    "seed001_sep": (80_629, 81_973),
    "seed000_sep": (82_933, 84_277),
    "seed003_sep": (90_363, 92_027),
    "seed004_sep": (31_173, 32_261),
    "seed001_mnist": (13_582, 13_794),
    "seed002_mnist": (13_800, 14_000),
}


# ours: (trainable, Keras total) and the budget each is built for
OUR_COUNTS = {"mnist_7k": (7_442, 7_602, 8_000), "mnist_5k": (4_746, 4_874, 5_000),
              "sep_cifar_94k": (93_861, 95_589, 99_999)}


@pytest.mark.parametrize("name", sorted(OUR_COUNTS))
def test_our_models_fit_their_budgets_and_say_their_size(name):
    trainable, keras_total, budget = OUR_COUNTS[name]
    assert count_params(create_model(name)) == (trainable, keras_total) and trainable <= budget
    assert f"{trainable:,}" in create_model.__globals__["_REGISTRY"][name].__doc__


def test_separable_model_has_no_full_kxk_convolution():
    """The CIFAR assignment's rule: every kxk convolution is depthwise."""
    convs = [m for m in create_model("sep_cifar_94k").modules() if isinstance(m, torch.nn.Conv2d)]
    full = [m for m in convs if m.kernel_size != (1, 1) and m.groups != m.in_channels]
    assert convs and not full, full


@pytest.mark.parametrize("name", sorted(SEED_COUNTS))
def test_seed_parameter_counts_match_keras_summaries(name):
    assert count_params(create_model(name)) == SEED_COUNTS[name]


@pytest.mark.parametrize("name", sorted(SEED_COUNTS))
def test_seed_models_name_their_seed_and_result(name):
    doc = create_model.__globals__["_REGISTRY"][name].__doc__
    assert "Reported" in doc or "reported" in doc
    assert f"{SEED_COUNTS[name][0]:,}" in doc


@pytest.mark.parametrize("name", list_models())
def test_every_model_gives_logits_and_gradients(name):
    torch.manual_seed(0)
    spec = DATASETS[model_dataset(name)]
    model = create_model(name)
    x = torch.randn(4, *spec.input_shape)
    out = model(x)
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, torch.arange(4)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a gradient: {missing}"


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(KeyError) as err:
        create_model("resnet9000")
    assert "resnet9000" in str(err.value) and "seed001_mnist" in str(err.value)


def test_num_classes_override():
    assert create_model("seed001_mnist", num_classes=7)(torch.zeros(2, 1, 28, 28)).shape == (2, 7)


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_dropout_drops_p_and_scales_the_rest_like_torchs(p):
    """cnnbench's CPU dropout (models/layers.py) against nn.Dropout's contract: a fraction
    p zeroed, the rest scaled by 1/(1-p), the gradient through the same mask, the input's
    memory layout kept, nothing done in eval mode."""
    from cnnbench.models.layers import Dropout

    torch.manual_seed(0)
    x = torch.rand(32, 64, 16, 16).add_(0.5).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = Dropout(p).train()(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 4 * (p * (1 - p) / x.numel()) ** 0.5 + 1 / 65536  # 4 sigma
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / (1 - p))
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept) and torch.allclose(x.grad[kept], torch.tensor(1 / (1 - p)))
    # a different mask for every call and every channel (not one mask reused)
    assert not torch.equal(Dropout(p).train()(x) == 0, y == 0)
    assert not torch.equal(kept[:, 0], kept[:, 1])
    assert torch.equal(Dropout(p).eval()(x), x)
    torch.manual_seed(1)
    a = Dropout(p).train()(x)
    torch.manual_seed(1)
    assert torch.equal(a, Dropout(p).train()(x))  # reproducible from the seed


@pytest.mark.parametrize("name", list_models())
def test_each_architecture_lives_in_the_module_named_after_it(name):
    """train@<model> in dvc.yaml depends on src/cnnbench/models/<arch>.py: that file must
    hold the architecture, or an edit to it would not rerun the model."""
    assert cnnbench.models._REGISTRY[name].__module__ == f"cnnbench.models.{name}"


def test_architecture_modules_import_no_other_architecture():
    """An architecture that imported another's module would change with it unseen by DVC;
    what they share lives in the shared modules, which every train stage depends on."""
    shared = {f"cnnbench.models.{m}" for m in SHARED_MODULES}
    modules = [p for p in Path(cnnbench.models.__file__).parent.glob("*.py")
               if p.stem not in ("__init__", *SHARED_MODULES)]
    assert len(modules) == len(list_models())
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = {a.name for a in node.names}
                assert node.level == 0, f"{path.name}: relative import"
                assert (node.module in shared or node.module == "cnnbench.models" and names == {"register"}
                        or not node.module.startswith("cnnbench")), f"{path.name}: from {node.module} import {names}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("cnnbench") for a in node.names), path.name
