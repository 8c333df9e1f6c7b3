"""Runs behind ``lipkit certify``: train and certify a preset, or certify a user's model.

:func:`train_and_certify` writes one output folder: ``metrics.json`` (clean accuracy, VRA
and PGD accuracy at each eps, broken certificates, the guaranteed L and the best lower bound
on L that ``lipkit.estimate`` finds), ``model.onnx`` (the exported plain model, checked with
onnxruntime), ``report.md``, ``certified_accuracy.png``, ``checkpoint.pt`` (atomic, for
resume) and, for MLPs, ``model.safetensors`` (the plain weights). :func:`load_classifier`
reads a model a user brings without executing it.
"""

from __future__ import annotations

import io
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from lipkit import distributed
from lipkit.certify.accuracy import certified_accuracy, plot_certified_accuracy
from lipkit.certify.presets import lipschitz_convnet, lipschitz_mlp
from lipkit.certify.train import TrainingConfig, train_certified
from lipkit.errors import (
    InvalidArgumentError,
    LipkitError,
    UnknownMethodError,
    check_finite_tensor,
    check_labels,
)
from lipkit.io import (
    MAX_DATA_BYTES,
    MAX_MODEL_BYTES,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_input_file,
    json_safe,
)
from lipkit.training import ProgressEvent

MODELS = ("mlp", "convnet")
DATASETS = ("digits", "mnist:DIR", "fashion-mnist:DIR", "cifar10:DIR")
# peak learning rate, offset and temperature of the benchmark recipe (issue 8, section 5)
DEFAULT_LOSS_OPTIONS = {"margin-ce": {"offset": 2.12, "temperature": 0.25},
                        "hkr": {"alpha": 50.0, "min_margin": 1.0},
                        "hinge": {"min_margin": 1.0}, "gloro": {"eps": 0.5}, "ce": {}}


def load_data(name: str, flat: bool = True, seed: int = 0, test_only: bool = False):
    """A data set: ``digits`` split 80/20 (stratified, ``random_state=seed``); the files a
    user has, with their own train / test split: ``mnist:DIR`` or ``fashion-mnist:DIR`` (the
    four idx files, :func:`lipkit.data.load_mnist`), ``cifar10:DIR`` (the binary batches,
    :func:`lipkit.data.load_cifar10`); or a safetensors file holding ``x_train, y_train,
    x_test, y_test`` (or just ``x, y`` for certifying). ``flat``: images as vectors."""
    from lipkit.data import load_cifar10, load_digits, load_mnist

    if name == "digits":
        return load_digits(test_fraction=0.2, seed=seed, flat=flat)
    kind, _, folder = name.partition(":")
    loaders = {"mnist": load_mnist, "fashion-mnist": load_mnist, "cifar10": load_cifar10}
    if kind in loaders and folder:
        data = loaders[kind](folder, test_only=True) if test_only and kind != "cifar10" \
            else loaders[kind](folder)
        if flat:
            data = data._replace(x_train=data.x_train.flatten(1), x_test=data.x_test.flatten(1))
        return data
    path = Path(name)
    if path.suffix == ".safetensors":
        return _load_tensors(check_input_file(path, "data", MAX_DATA_BYTES))
    raise InvalidArgumentError(f"unknown data '{name}'; choose from: {', '.join(DATASETS)}, "
                               "or a .safetensors file with x, y tensors")


def _load_tensors(path: Path):
    """A safetensors data file: ``x_train, y_train, x_test, y_test`` or ``x, y``, checked
    (finite inputs, 1-D non-negative integer labels, one per input, train and test inputs of
    one shape)."""
    from types import SimpleNamespace

    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as error:
        raise InvalidArgumentError(f"data {path}: not a readable safetensors file "
                                   f"({type(error).__name__})") from None
    names = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
    if {"x", "y"} <= set(tensors):
        names = {"test": ("x", "y")}
    missing = {name for pair in names.values() for name in pair} - set(tensors)
    if missing:
        raise InvalidArgumentError(f"data {path}: missing tensors {sorted(missing)} (expected "
                                   "x_train, y_train, x_test, y_test or x, y)")
    data = SimpleNamespace()
    for split, (x_name, y_name) in names.items():
        x, y = tensors[x_name], tensors[y_name]
        if x.ndim < 2 or not (x.is_floating_point() or x.dtype == torch.uint8):
            raise InvalidArgumentError(f"data {path}: {x_name} must be a float tensor (n, "
                                       f"...), got {x.dtype} of shape {tuple(x.shape)}")
        if len(x) == 0:
            raise InvalidArgumentError(f"data {path}: {x_name} is empty")
        check_finite_tensor(f"data {path}: {x_name}", x)
        setattr(data, f"x_{split}", x.float())
        setattr(data, f"y_{split}", check_labels(f"data {path}: {y_name}", y, None, len(x)))
    if "train" not in names:  # certify-only data
        data.x_train, data.y_train = data.x_test[:0], data.y_test[:0]
    if len(data.x_train) and data.x_train.shape[1:] != data.x_test.shape[1:]:
        raise InvalidArgumentError(f"data {path}: x_train's inputs of shape "
                                   f"{tuple(data.x_train.shape[1:])} differ from x_test's "
                                   f"{tuple(data.x_test.shape[1:])}")
    return data


def check_labels_fit(classifier, x: torch.Tensor, labels: torch.Tensor, data_name: str):
    """``labels`` checked against the classifier's number of logits on ``x`` (the data's
    name in the message)."""
    from lipkit.certify.accuracy import evaluation_model

    if len(x) == 0:
        raise InvalidArgumentError(f"data {data_name}: no inputs to certify")
    try:
        with torch.no_grad():
            width = evaluation_model(classifier)(x[:1].double()).shape[-1]
    except (RuntimeError, ValueError) as error:
        raise InvalidArgumentError(f"data {data_name}: inputs of shape {tuple(x.shape[1:])} do "
                                   f"not fit the model ({' '.join(str(error).split())[:160]})"
                                   ) from None
    return check_labels(f"data {data_name}: labels", labels, width, len(x))


def fit_inputs(classifier, x: torch.Tensor) -> torch.Tensor:
    """``x`` reshaped to the input shape ``classifier`` reads (an imported network's, or the
    first dense layer's), when the sizes agree: images for a convnet, vectors for an MLP."""
    from lipkit.estimate import Network

    if isinstance(classifier, Network):
        shape = classifier.input_shape
    else:
        first = next((m for m in classifier.modules() if isinstance(m, nn.Linear)), None)
        shape = None if first is None else (first.in_features,)
    if shape is None or tuple(x.shape[1:]) == tuple(shape):
        return x
    if math.prod(x.shape[1:]) != math.prod(shape):
        raise InvalidArgumentError(f"the data's inputs of shape {tuple(x.shape[1:])} do not fit "
                                   f"the model's input of shape {tuple(shape)}")
    return x.reshape(len(x), *shape)


def build_model(model: str, data, layer: str, last: str, size: str = "medium") -> nn.Module:
    """A preset for the data's input shape and number of classes."""
    classes = int(torch.cat([data.y_train, data.y_test]).max()) + 1
    shape = tuple(data.x_train.shape[1:])
    if model == "mlp":
        return nn.Sequential(nn.Flatten(), *lipschitz_mlp(math.prod(shape), classes, size,
                                                          layer, last)) if len(shape) > 1 \
            else lipschitz_mlp(shape[0], classes, size, layer, last)
    if model == "convnet":
        if len(shape) != 3:
            raise InvalidArgumentError(f"a convnet needs image inputs (C, H, W), got {shape}")
        if shape[1] != shape[2]:
            raise InvalidArgumentError(f"the convnet presets take square images, got {shape}")
        return lipschitz_convnet(shape[0], shape[1], classes, size, layer, last)
    raise UnknownMethodError("model", model, MODELS)


def train_and_certify(out: str | Path, data_name: str = "digits", model_name: str = "mlp",
                      size: str = "medium", layer: str = "bjorck", last: str = "orthonormal",
                      config: TrainingConfig | None = None, eps=(0.1, 0.3, 0.5, 1.0),
                      norm="2", form: str = "pairwise",
                      progress: Callable[[ProgressEvent], None] | None = None) -> dict | None:
    """Train a preset on the data and write the output folder (module docstring).

    In a process group (:mod:`lipkit.distributed`) every process trains its share of each
    global batch; rank 0 alone certifies, writes the folder and returns the metrics, the
    others return None once training is done.
    """
    out = Path(out)
    config = config or TrainingConfig()
    if config.loss_options is None:
        config.loss_options = dict(DEFAULT_LOSS_OPTIONS.get(config.loss, {}))
    data = load_data(data_name, flat=model_name == "mlp")
    if len(data.x_train) == 0:
        raise InvalidArgumentError(f"data {data_name}: no training split")
    check_labels(f"data {data_name}: y_train", data.y_train, None, len(data.x_train))
    check_labels(f"data {data_name}: y_test", data.y_test, None, len(data.x_test))
    if data.x_train.shape[1:] != data.x_test.shape[1:]:
        raise InvalidArgumentError(f"data {data_name}: train inputs of shape "
                                   f"{tuple(data.x_train.shape[1:])} differ from test inputs "
                                   f"of shape {tuple(data.x_test.shape[1:])}")
    torch.manual_seed(config.seed)
    model = build_model(model_name, data, layer, last, size)
    model(data.x_train[:2])  # record convolution input sizes

    def evaluate(model):
        device = next(model.parameters()).device
        with torch.no_grad():
            predicted = torch.cat([model(data.x_test[i:i + 1024].to(device)).argmax(1).cpu()
                                   for i in range(0, len(data.x_test), 1024)])
        return {"test_accuracy": float((predicted == data.y_test).float().mean())}

    started = time.perf_counter()
    history = train_certified(
        model, data.x_train, data.y_train, config, checkpoint=out / "checkpoint.pt",
        data_name=data_name,
        progress=progress, evaluate=evaluate)
    if not distributed.is_main():
        return None
    model.cpu()
    certification = certified_accuracy(model, data.x_test, data.y_test, list(eps), norm, form,
                                       seed=config.seed)
    onnx_difference = write_onnx(model, data.x_test[:64], out / "model.onnx")
    lower = _lower_bound(model, data.x_test, out / "model.onnx")
    if model_name == "mlp":  # a dense chain that `lipkit certify check` reads back
        from safetensors.torch import save

        from lipkit.nn import export

        state = {k: v.contiguous() for k, v in export(model).state_dict().items()}
        atomic_write_bytes(out / "model.safetensors", save(state))
    metrics = {
        "data": data_name, "model": model_name, "size": size, "layer": layer, "last": last,
        "training": asdict(config), "train_seconds": history["seconds"],
        "total_seconds": time.perf_counter() - started, "history": history["epochs"],
        **certification.to_dict(),
        "lipschitz_guaranteed": certification.constants.whole,
        "lipschitz_lower": lower,
        "lipschitz_gap": certification.constants.whole / lower["value"]
        if lower["value"] > 0 else "inf",
        "onnx_max_abs_difference": onnx_difference,
    }
    atomic_write_json(out / "metrics.json", json_safe(metrics))
    plot_certified_accuracy({f"{model_name}/{layer}/{config.loss}": certification},
                            out / "certified_accuracy.png")
    atomic_write_text(out / "report.md", _report(metrics))
    return metrics


def _lower_bound(model: nn.Module, x: torch.Tensor, onnx_path: Path) -> dict:
    """The best lower bound on ``||f||_L`` (a witnessed ratio) lipkit.estimate finds, on the
    torch model or else on its ONNX export, or value 0 with the reason when it cannot import
    either."""
    from lipkit.estimate import estimate, load_network

    try:
        try:
            network = load_network(model, tuple(x.shape[1:]))
        except LipkitError:  # MaxMin on feature maps: the ONNX importer reads it
            network = load_network(onnx_path)
        report = estimate(network, methods=["lower-jacobian", "lower-adversarial"],
                          data=x[:256])
    except LipkitError as error:
        return {"value": 0.0, "method": None, "status": str(error)}
    best = report.lower
    return {"value": best.value if best else 0.0, "method": best.method if best else None,
            "status": "ok" if best else "no lower bound found"}


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> float:
    """Export the plain model to ONNX (atomically) and return the largest difference between
    onnxruntime's outputs and torch's on ``example``."""
    from lipkit.nn import export

    plain = export(model).float().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the tracer's notes on MaxMin's shape check
        warnings.simplefilter("ignore")
        torch.onnx.export(plain, (example[:1],), buffer, dynamo=False, input_names=["x"],
                          output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    atomic_write_bytes(path, buffer.getvalue())
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (outputs,) = session.run(None, {"x": example.float().numpy()})
    with torch.no_grad():
        expected = plain(example.float())
    return float((torch.from_numpy(outputs) - expected).abs().max())


def load_classifier(path: str | Path, activation: str = "maxmin"):
    """A user's classifier, read as data: an ONNX file (imported into a
    :class:`lipkit.estimate.Network`), or a state dict of a dense chain (``.pt`` / ``.pth``
    loaded with ``weights_only=True``, or ``.safetensors``) with keys ``<index>.weight`` /
    ``<index>.bias``, rebuilt as Linear layers with ``activation`` between them."""
    from lipkit.estimate import load_network

    path = check_input_file(path, "model", MAX_MODEL_BYTES)
    suffix = path.suffix.lower()
    try:
        if suffix == ".onnx":
            return load_network(path)
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif suffix in (".pt", ".pth"):
            state = torch.load(path, weights_only=True, map_location="cpu")
        else:
            raise InvalidArgumentError(f"{path}: unsupported model file '{suffix}'; lipkit "
                                       "reads .onnx, .pt/.pth state dicts and .safetensors")
    except LipkitError:
        raise
    except Exception as error:  # protobuf, zip, safetensors: many types for a corrupt file
        raise InvalidArgumentError(f"model {path}: not a readable {suffix} model file "
                                   f"({type(error).__name__})") from None
    return _dense_chain(state, path, activation)


def _dense_chain(state, path: Path, activation: str) -> nn.Sequential:
    from lipkit.nn import MaxMin

    activations = {"maxmin": MaxMin, "relu": nn.ReLU, "tanh": nn.Tanh}
    if activation not in activations:
        raise UnknownMethodError("activation", activation, activations)
    if not isinstance(state, dict) or not state:
        raise InvalidArgumentError(f"{path}: expected a state dict of tensors")
    layers: dict[int, dict] = {}
    for key, value in state.items():
        match = re.fullmatch(r"(?:.*\.)?(\d+)\.(weight|bias)", str(key))
        if match is None or not isinstance(value, torch.Tensor):
            raise InvalidArgumentError(f"{path}: unexpected entry '{key}' (expected "
                                       "<index>.weight / <index>.bias of dense layers)")
        layers.setdefault(int(match.group(1)), {})[match.group(2)] = value
    modules: list[nn.Module] = []
    for position, index in enumerate(sorted(layers)):
        weight = layers[index].get("weight")
        if weight is None or weight.ndim != 2:
            raise InvalidArgumentError(f"{path}: layer {index} has no 2-D weight")
        bias = layers[index].get("bias")
        if bias is not None and tuple(bias.shape) != (weight.shape[0],):
            raise InvalidArgumentError(f"{path}: layer {index} has a bias of shape "
                                       f"{tuple(bias.shape)} for a weight of shape "
                                       f"{tuple(weight.shape)}")
        for name, tensor in (("weight", weight), ("bias", bias)):
            if tensor is not None and not (tensor.is_floating_point()
                                           and bool(torch.isfinite(tensor).all())):
                raise InvalidArgumentError(f"{path}: layer {index} has a non-finite or "
                                           f"non-float {name}")
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if bias is not None:
                linear.bias.copy_(bias)
        if position:
            modules.append(activations[activation]())
        modules.append(linear)
    for first, second in zip(modules[::2], modules[2::2], strict=False):
        if first.out_features != second.in_features:
            raise InvalidArgumentError(f"{path}: layer sizes do not chain "
                                       f"({first.out_features} -> {second.in_features})")
    return nn.Sequential(*modules).eval()



def _report(metrics: dict) -> str:
    rows = []
    for eps, vra in metrics["certified_accuracy"].items():
        pgd = metrics["pgd_accuracy"][eps] if metrics["pgd_accuracy"] else math.nan
        rows.append(f"| {eps} | {vra:.3f} | {pgd:.3f} |")
    constants = metrics["constants"]
    lower = metrics["lipschitz_lower"]
    return "\n".join([
        "# lipkit certify report", "",
        f"{metrics['model']} ({metrics['size']}, {metrics['layer']} layers, "
        f"{metrics['last']} last layer) on {metrics['data']}, loss {metrics['training']['loss']}"
        f" {metrics['training']['loss_options']}, {metrics['training']['epochs']} epochs "
        f"({metrics['train_seconds']:.1f} s).", "",
        f"Clean accuracy: **{metrics['clean_accuracy']:.3f}**. Certificates: the "
        f"{metrics['form']} form in l{metrics['norm']}, constants from "
        f"`{constants['source']}` (||f||_L <= {constants['whole']:.4f}); the best lower bound "
        f"lipkit.estimate found is {lower['value']:.4f} ({lower['method']}).", "",
        "| eps | certified accuracy (VRA, lower bound) | PGD accuracy (upper bound) |",
        "|---|---|---|", *rows, "",
        f"Certificates broken by PGD inside their radius: l2 "
        f"{metrics['broken_certificates']['2']}, l-inf {metrics['broken_certificates']['inf']}"
        " (0 for sound certificates).", "",
        f"`model.onnx`: plain operators, onnxruntime agrees with torch to "
        f"{metrics['onnx_max_abs_difference']:.1e}.", "",
        "![certified accuracy](certified_accuracy.png)", "",
    ])
