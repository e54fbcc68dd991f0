import pytest
import torch

from cnnbench.data import DATASETS
from cnnbench.models import create_model, list_models, model_dataset
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
