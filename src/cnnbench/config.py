"""params.yaml -> typed, validated configuration.

Every problem is found before any work starts and reported in one error, each by its
path: ``models.mnist_c10.optimizer.name: 'adamm' is not one of adam, adamw, sgd``.
Model entries inherit the ``defaults:`` section and override only what differs.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cnnbench import CnnbenchError


class ConfigError(CnnbenchError, ValueError):
    """params.yaml is invalid; the message lists every problem."""


class _Strict(BaseModel):
    # strict: a YAML true is not the integer 1 nor 2.5 the integer 2 (a float field still
    # takes an integer); no NaN or infinity, which would pass the range checks or turn the
    # learning rate into NaN
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Optimizer(_Strict):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(0.001, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    nesterov: bool = False  # sgd only
    eps: float = Field(1e-8, gt=0, lt=1)  # adam/adamw; Keras uses 1e-7


class Schedule(_Strict):
    """The LR multiplier over training.

    constant; inverse_time: 1/(1+decay*epoch), per epoch (the seeds' Keras scheduler);
    onecycle: linear warm-up to lr over pct_start, then cosine to zero (per step);
    cosine: cosine to zero after warmup_epochs of linear warm-up (per step);
    step: times gamma every step_size epochs;
    plateau: times gamma after step_size epochs in a row whose test loss is not 1e-4 below
    the best so far (Keras's ReduceLROnPlateau on val_loss, which in the seeds is the test
    set). It reuses step_size and gamma rather than adding fields, so that every existing
    config, and the checkpoints and resume states that record it, stays the same.
    """

    name: Literal["constant", "inverse_time", "onecycle", "cosine", "step", "plateau"] = "constant"
    decay: float = Field(0.0, ge=0)
    pct_start: float = Field(0.25, gt=0, lt=1)
    warmup_epochs: float = Field(0.0, ge=0)
    step_size: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0, le=1)


class Augment(_Strict):
    crop_padding: int = Field(0, ge=0, le=16)  # random crop after zero padding by this much
    # Keras ImageDataGenerator's width_shift_range and height_shift_range: a translation by
    # up to this fraction of the side, any fraction of a pixel, edges repeated
    shift: float = Field(0.0, ge=0, lt=1)
    flip: bool = False  # random horizontal flip
    cutout: int = Field(0, ge=0, le=32)  # side of a zeroed square, 0 = off


class Budget(_Strict):
    max_params: int | None = Field(None, ge=1)
    max_epochs: int | None = Field(None, ge=1)
    min_test_acc: float | None = Field(None, ge=0, le=1)


class Evaluation(_Strict):
    """How evaluate@<model> scores a trained model. Kept out of ``models.<name>`` so that
    changing it reruns only the evaluation, not the training."""

    # test-time augmentation: classify each test image and its left-right mirror image
    # and average the two softmax outputs (two forward passes, no extra parameters)
    flip: bool = False


class Reported(_Strict):
    """What the seed assignment reported, for the leaderboard."""

    test_acc: float = Field(ge=0, le=1)
    seed_file: str


class ModelConfig(_Strict):
    arch: str
    dataset: str
    epochs: int = Field(ge=1, le=10_000)
    batch_size: int = Field(ge=1, le=65_536)
    optimizer: Optimizer = Optimizer()
    schedule: Schedule = Schedule()
    weight_decay: float = Field(0.0, ge=0, lt=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment: Augment = Augment()
    seed: int = Field(0, ge=0, le=2**32 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bf16 autocast on CUDA, fp32 on the CPU (where bf16 is slow and CPU runs
    # are meant to be bit-reproducible)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # torch.compile mode for training; reduce-overhead adds CUDA graphs, which pays off
    # at small batch sizes on a GPU, where training is bound by kernel launches
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"
    # Keras's layer defaults, for reproducing the Keras seeds: BatchNorm momentum 0.99
    # (0.01 in PyTorch's convention), epsilon 1e-3 and debiased running statistics,
    # Glorot-uniform weights, zero biases, and Adam epsilon 1e-7 unless optimizer.eps is
    # given (models/keras.py)
    keras_defaults: bool = False
    train_limit: int | None = Field(None, ge=1)  # use only the first N training images
    budget: Budget = Budget()
    reported: Reported | None = None

    @model_validator(mode="before")
    @classmethod
    def _keras_adam_eps(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("keras_defaults") is True:
            optimizer = data.get("optimizer") or {}
            if isinstance(optimizer, dict) and "eps" not in optimizer:
                data = {**data, "optimizer": {**optimizer, "eps": 1e-7}}
        return data


class TorchvisionDataset(_Strict):
    source: Literal["torchvision"]


class NpzDataset(_Strict):
    """A local .npz (x_train, y_train, x_test, y_test, optional classes), pinned by sha256."""

    source: Literal["npz"]
    path: str
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class Params(_Strict):
    datasets: dict[str, Annotated[TorchvisionDataset | NpzDataset, Field(discriminator="source")]]
    defaults: dict[str, Any] = {}
    models: dict[str, ModelConfig]
    evaluation: dict[str, Evaluation] = {}


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with two differences that make it read params.yaml as DVC
    does: a key given twice in one mapping is an error (PyYAML keeps the last silently),
    and 1e-3 is a number (YAML 1.2; PyYAML's YAML 1.1 reads it as a string)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key != "<<" and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping (lines {seen[key] + 1} "
                    f"and {key_node.start_mark.line + 1}); keep one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))

# a model's and a dataset's name become file names (models/<name>.pt) and stage names
# (train@<name>)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _describe(err: dict) -> str:
    loc = list(err["loc"])
    if len(loc) > 2 and loc[0] == "datasets" and loc[2] in ("npz", "torchvision"):
        del loc[2]  # the tag pydantic adds for the discriminated union
    path = ".".join(str(p) for p in loc)
    given = err.get("input")
    if err["type"] == "literal_error":
        choices = err["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
        return f"{path}: {given!r} is not one of {choices}"
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown key (check its spelling)"
    if err["type"] == "missing":
        return f"{path}: required but missing"
    msg = err["msg"][0].lower() + err["msg"][1:]
    return f"{path}: {msg} (got {given!r})"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate already-loaded params; raise ConfigError listing every problem."""
    from cnnbench.data import DATASETS
    from cnnbench.models import list_models

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with datasets, defaults and models")
    raw = dict(raw)
    defaults = raw.get("defaults") or {}
    if isinstance(raw.get("models"), dict) and isinstance(defaults, dict):
        raw["models"] = {name: _merge(defaults, entry) if isinstance(entry, dict) else entry
                         for name, entry in raw["models"].items()}
    problems: list[str] = []
    params = None
    try:
        params = Params.model_validate(raw)
    except ValidationError as e:
        problems += [_describe(err) for err in e.errors()]
    # names are checked on the raw entries, so they are reported with the other problems
    datasets = raw.get("datasets") if isinstance(raw.get("datasets"), dict) else {}
    models = raw.get("models") if isinstance(raw.get("models"), dict) else {}
    for section, names in (("datasets", datasets), ("models", models)):
        problems += [f"{section}.{name}: a name becomes file and stage names: use letters, digits, "
                     f"'_', '-' and '.' only, starting with a letter or digit"
                     for name in names if not NAME.match(str(name))]
    for name, ds in datasets.items():
        if isinstance(ds, dict) and ds.get("source") == "torchvision" and name not in DATASETS:
            problems.append(f"datasets.{name}: {name!r} is not a built-in dataset "
                            f"({', '.join(DATASETS)}); declare it with source: npz")
    known_archs = list_models()
    for name, entry in models.items():
        if not isinstance(entry, dict):
            continue
        arch, dataset = entry.get("arch"), entry.get("dataset")
        if arch is not None and arch not in known_archs:
            problems.append(f"models.{name}.arch: {arch!r} is not one of {', '.join(known_archs)}")
        if dataset is not None and dataset not in datasets:
            problems.append(f"models.{name}.dataset: {dataset!r} is not one of "
                            f"{', '.join(datasets)} (declare it under datasets:)")
    evaluation = raw.get("evaluation") if isinstance(raw.get("evaluation"), dict) else {}
    for name in evaluation:
        if name not in models:
            problems.append(f"evaluation.{name}: not a model under models: ({', '.join(models)})")
    if problems:
        raise ConfigError(f"{source} has {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return params


def load_params(path: Path | str = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; run from the project root or pass --params")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{path} cannot be read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.object[e.start]:#04x} on line {line}); "
                          f"save it as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_ParamsLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from e
    return parse_params(raw, str(path))


def load_model_config(path: Path | str, name: str) -> ModelConfig:
    """The validated entry ``models.<name>``; the whole file is validated first."""
    params = load_params(path)
    if name not in params.models:
        raise ConfigError(f"model {name!r} is not in {path}; models: {', '.join(params.models)}")
    return params.models[name]


def load_evaluation(path: Path | str, name: str) -> Evaluation:
    """How evaluate@<name> scores the model: ``evaluation.<name>``, else the defaults."""
    return load_params(path).evaluation.get(name, Evaluation())


def flatten(config: BaseModel | dict, prefix: str = "") -> dict[str, Any]:
    """{"optimizer.lr": 0.003, ...}: a config as MLflow params."""
    data = config.model_dump() if isinstance(config, BaseModel) else config
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
