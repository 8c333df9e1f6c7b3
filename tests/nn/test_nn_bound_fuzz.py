"""``lipschitz_bound`` of lipkit's own layers against the models' pair ratios, and the
findings of the layer fuzzer (``tests/nn/layer_fuzz.py``; the long run is
``benchmarks/fuzz_layers.py``) as regression tests, each against an oracle that shares no
code with lipkit's bound: the float64 operator of the weight the float32 layer computes,
materialized and SVD-ed, or pairs of inputs."""

from __future__ import annotations

import importlib.util
import itertools
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lipkit import nn as lnn
from lipkit.errors import InvalidArgumentError, UnsupportedModuleError
from lipkit.nn.operator_norm import ConvGeometry, gram_bound

_SPEC = importlib.util.spec_from_file_location("layer_fuzz", Path(__file__).with_name(
    "layer_fuzz.py"))
layer_fuzz = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("layer_fuzz", layer_fuzz)
_SPEC.loader.exec_module(layer_fuzz)


@pytest.mark.parametrize("seed", range(24))
def test_random_models_of_lipkit_layers_stay_under_their_bound(seed):
    record = layer_fuzz.check(seed)
    assert not record["failures"], record
    if "bound" in record:
        assert record["lower"] <= record["bound"] * (1 + record["slack"])


def test_fuzz_oracle_finds_the_constant_of_an_orthogonal_map():
    # the oracle is not blind: on a Björck-orthogonal square layer (constant 1 exactly, to
    # rounding) its pairs reach 1
    torch.manual_seed(0)
    model = nn.Sequential(lnn.bjorck(nn.Linear(6, 6))).eval()
    lower, _ = layer_fuzz.oracle_lower(lnn.export(model), torch.randn(4, 6))
    assert lower == pytest.approx(1.0, abs=1e-5)


def test_cayley_bound_is_the_norm_of_the_transfer_the_forward_pass_uses():
    # a large kernel makes I + A ill-conditioned: in float32 the Cayley transform is far from
    # unitary, and the layer's function (its float32 Q, in exact arithmetic) is not 1-Lipschitz
    torch.manual_seed(0)
    layer = lnn.CayleyConv2d(3, bias=False)
    with torch.no_grad():
        layer.weight.mul_(300.0)
    x = torch.randn(1, 3, 6, 6)
    layer(x)
    plain = lnn.export(layer)
    transfer = plain.transfer.to(torch.complex128)
    plain.transfer = transfer

    def function(z):
        return lnn.cayley.apply_transfer(transfer, z)

    basis = torch.eye(3 * 36, dtype=torch.float64).reshape(-1, 3, 6, 6)
    matrix = function(basis).reshape(3 * 36, -1).T
    exact = float(torch.linalg.svdvals(matrix)[0])
    recomputed = lnn.cayley.transfer_norm(lnn.cayley.cayley_transfer(
        layer.weight.detach().double(), (6, 6)))
    assert exact > recomputed + 1e-6  # the float64 recomputation would be a false bound
    assert lnn.lipschitz_bound(layer) >= exact * (1 - 1e-12)


def test_sll_scaling_survives_a_large_trained_log_q():
    # exp(log q) overflows float32 above ~88: T is invariant to scaling q, so the layer
    # normalizes it; the weight stays finite and within its bound
    torch.manual_seed(0)
    layer = lnn.sdp_scaling(nn.Linear(5, 4))
    with torch.no_grad():
        layer.parametrizations.weight[0].log_q.copy_(torch.tensor([900.0, 0.0, -900.0, 5.0]))
    weight = layer.weight.detach()
    assert torch.isfinite(weight).all()
    exact = float(torch.linalg.svdvals(weight.double())[0])
    assert 0 < exact <= lnn.lipschitz_bound(layer) <= 1 + 1e-6


def test_a_parametrization_that_computes_nan_is_named():
    # finite parameters, a non-finite computed weight (a user's own constraint)
    class Overflowing(lnn.Constraint):
        def forward(self, weight):
            return weight * 1e30 * 1e30

    layer = lnn.constraint.register_constraint(nn.Linear(3, 3), Overflowing())
    model = nn.Sequential(nn.Identity(), layer)
    with pytest.raises(InvalidArgumentError, match=r"layer '1'.*Overflowing.*NaN or infinite"):
        lnn.lipschitz_bound(model)


def test_batchnorm_bound_is_computed_in_float64():
    # var + eps and the root rounded in float32 can land under the constant
    bn = nn.BatchNorm1d(64).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        bn.running_var.copy_(torch.rand(64) * 1e-3)
        bn.weight.copy_(torch.randn(64))
    exact = max(abs(float(g)) / math.sqrt(float(v) + bn.eps)
                for g, v in zip(bn.weight.detach().double(), bn.running_var.double(),
                               strict=True))
    assert lnn.lipschitz_bound(bn) >= exact


@pytest.mark.parametrize("make", ["aol", "sll", "aoc"])
def test_float32_rescaled_and_orthogonal_layers_are_bounded_by_their_computed_weight(make):
    # in float32 the nominal lambda of AOL / SLL rescaling / orthogonal kernels is exceeded by
    # rounding: the bound holds for the weight the layer computes (materialized in float64)
    worst = 0.0
    for seed in range(6):
        torch.manual_seed(seed)
        if make == "aoc":
            layer = lnn.aoc(nn.Conv2d(4, 4 * (1 + seed % 2), 3, stride=1 + seed % 2,
                                      padding=1))
        elif make == "aol":
            layer = lnn.aol(nn.Conv2d(3, 5, 3, padding=1))
        else:
            layer = lnn.sdp_scaling(nn.Conv2d(3, 5, 3, padding=1))
        x = torch.randn(1, layer.in_channels, 6, 6)
        layer(x)
        weight = layer.weight.detach().double()
        geometry = ConvGeometry.of(layer, (6, 6))
        exact = float(torch.linalg.svdvals(lnn.conv_matrix(weight, geometry))[0])
        bound = lnn.lipschitz_bound(layer)
        assert exact <= bound
        worst = max(worst, bound)
    assert worst <= 1 + 1e-5  # and the bound is still the construction's lambda, to rounding


def _conv_cases():
    for groups, stride, dilation, padding, mode, kernel in itertools.product(
            (1, 2), (1, 2, 3), (1, 2), (0, 1, 2), ("zeros", "circular", "reflect",
                                                   "replicate"), (1, 2, 3)):
        if mode != "zeros" and padding == 0:
            continue
        yield groups, stride, dilation, padding, mode, kernel


def test_gram_bound_is_above_the_materialized_operator_norm():
    # random kernels, every geometry, input sizes 3 to 9: the bound must hold for each size
    checked = 0
    for index, (groups, stride, dilation, padding, mode, kernel) in enumerate(_conv_cases()):
        generator = torch.Generator().manual_seed(index)
        conv = nn.Conv2d(2 * groups, 2 * groups, kernel, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, padding_mode=mode, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        bound = gram_bound(conv.weight, ConvGeometry.of(conv))
        for size in (3, 9):
            if size + 2 * padding < dilation * (kernel - 1) + 1 or padding >= size:
                continue
            geometry = ConvGeometry.of(conv, (size, size))
            matrix = lnn.conv_matrix(conv.weight.detach().double(), geometry)
            # (the SVD itself errs by ~1e-16 relative)
            assert float(torch.linalg.svdvals(matrix)[0]) <= bound * (1 + 1e-13), (conv, size)
            checked += 1
    assert checked > 300


def test_gram_bound_is_tight_on_strided_orthogonal_kernels():
    # AOC's strided kernel has orthonormal rows on the infinite grid: its polyphase Gram on
    # the output side is the identity, so the bound is 1 (where the size-free bound is not)
    torch.manual_seed(0)
    layer = lnn.aoc(nn.Conv2d(8, 4, 3, stride=2, padding=1))
    layer(torch.randn(1, 8, 8, 8))
    geometry = ConvGeometry.of(layer)
    assert gram_bound(layer.weight, geometry) == pytest.approx(1.0, abs=1e-5)
    assert gram_bound(layer.weight, geometry, side="input") > 1.1


@pytest.mark.parametrize("make", ["bcop", "aoc"])
def test_orthogonal_convolutions_compute_the_same_weight_with_and_without_autograd(make):
    # at a converged point Björck iterated once more when autograd recorded: the layer was a
    # different function (by ~1e-7) under a gradient attack than the one certified
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1)
    layer = lnn.bcop(conv) if make == "bcop" else lnn.aoc(conv)
    layer.eval()
    with torch.no_grad():
        quiet = layer.weight.clone()
    recorded = layer.weight
    assert recorded.requires_grad
    assert torch.equal(quiet, recorded.detach())
    recorded.sum().backward()  # and the gradient still flows
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


class _Doubled(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


class _Renamed(nn.Conv2d):
    """A subclass that only renames: its function is the convolution's."""


def test_a_layer_subclass_that_replaces_forward_is_refused_not_misread():
    # read as an nn.Linear, _Doubled's bound would be half its constant
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), _Doubled(3, 2))
    with pytest.raises(UnsupportedModuleError, match=r"'2'.*replaces Linear.forward"):
        lnn.lipschitz_bound(model)
    from lipkit.estimate.importers.torch_module import import_module
    with pytest.raises(UnsupportedModuleError, match=r"replaces Linear.forward"):
        import_module(model)
    renamed = _Renamed(2, 2, 3, padding=1)
    x = torch.randn(1, 2, 5, 5)
    expected = lnn.conv_operator_norm_upper(renamed.weight, ConvGeometry.of(renamed, (5, 5)))
    assert lnn.lipschitz_bound(renamed, example_input=x) == expected


def test_a_forward_hook_that_could_change_the_output_is_refused():
    from lipkit.estimate.importers.torch_module import import_module

    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    handle = model[2].register_forward_hook(lambda module, args, out: 10 * out)
    with pytest.raises(UnsupportedModuleError, match=r"'2'.*forward hook"):
        lnn.lipschitz_bound(model)
    with pytest.raises(UnsupportedModuleError, match=r"forward hook"):
        import_module(model)
    handle.remove()
    handle = nn.modules.module.register_module_forward_hook(lambda m, a, out: out)
    try:
        with pytest.raises(UnsupportedModuleError, match=r"global forward hook"):
            lnn.lipschitz_bound(model)
    finally:
        handle.remove()
    assert lnn.lipschitz_bound(model) > 0


def test_torch_spectral_norm_pre_hook_is_read_as_the_eval_forward_uses_it():
    # after an optimizer step the weight attribute is stale: the next eval forward
    # recomputes it from weight_orig, and that is the function to bound
    from lipkit.estimate.importers.torch_module import import_module

    torch.manual_seed(0)
    layer = nn.utils.spectral_norm(nn.Linear(8, 8))
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    for _ in range(3):
        optimizer.zero_grad()
        layer(torch.randn(2, 8)).pow(2).sum().backward()
        optimizer.step()
    stale = float(torch.linalg.svdvals(layer.weight.detach().double())[0])
    bound = lnn.lipschitz_bound(layer)
    layer.eval()
    with torch.no_grad():
        layer(torch.randn(2, 8))  # the eval forward sets the weight it uses
    exact = float(torch.linalg.svdvals(layer.weight.detach().double())[0])
    assert abs(stale - exact) > 1e-3  # the test can tell the two apart
    assert bound == pytest.approx(exact, rel=1e-12)
    # the importer reads the same weight: its network computes the eval forward's function,
    # after another optimizer step has made the attribute stale again
    layer.train()
    optimizer.zero_grad()
    layer(torch.randn(2, 8)).pow(2).sum().backward()
    optimizer.step()
    stale = layer.weight.detach().double().clone()
    network = import_module(nn.Sequential(layer))
    layer.eval()
    x = torch.randn(5, 8)
    with torch.no_grad():
        expected = layer(x).double()
    assert (layer.weight.detach().double() - stale).abs().max() > 1e-3
    torch.testing.assert_close(network.forward(x.double()), expected, rtol=1e-5, atol=1e-5)


def test_bounding_a_model_in_training_mode_reads_the_inference_weight_and_changes_nothing():
    # torch's own spectral_norm parametrization iterates whenever its weight is read in
    # training mode
    torch.manual_seed(1)
    layer = nn.utils.parametrizations.spectral_norm(nn.Linear(6, 6), n_power_iterations=1)
    layer.train()
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    bound = lnn.lipschitz_bound(layer)
    assert layer.training
    assert all(torch.equal(state[k], v) for k, v in layer.state_dict().items())
    layer.eval()
    with torch.no_grad():
        exact = float(torch.linalg.svdvals(layer.weight.double())[0])
    assert bound == pytest.approx(exact, rel=1e-12)


def test_a_softplus_with_a_visible_jump_is_refused():
    # torch switches to x where beta x > threshold: at threshold -5 it drops by ~5, and a
    # pair straddling the switch has a ratio in the millions
    jumpy = nn.Softplus(beta=1.0, threshold=-5.0)
    a = torch.tensor([[-5.0000001]], dtype=torch.float64)
    b = torch.tensor([[-4.9999999]], dtype=torch.float64)
    assert float((jumpy(a) - jumpy(b)).abs() / (a - b).abs()) > 1e6
    with pytest.raises(UnsupportedModuleError, match="Softplus with threshold=-5 jumps"):
        lnn.lipschitz_bound(nn.Sequential(nn.Linear(1, 1), jumpy))
    assert lnn.lipschitz_bound(nn.Softplus()) == 1.0  # the default's 2e-9 drop is ignored


def test_average_pooling_with_a_negative_divisor_has_a_positive_bound():
    pool = nn.AvgPool2d(2, divisor_override=-1)  # torch computes minus the window's sum
    basis = torch.eye(16, dtype=torch.float64).reshape(16, 1, 4, 4)
    exact = float(torch.linalg.svdvals(pool(basis).reshape(16, -1).T)[0])
    assert exact == pytest.approx(2.0)
    assert lnn.lipschitz_bound(pool) >= exact


def test_elu_and_celu_with_negative_alpha():
    # torch accepts them: ELU's slope reaches |alpha|, CELU's is unbounded
    x = torch.linspace(-20.0, 5.0, 100_001, dtype=torch.float64)

    def steepest(module):
        y = module(x)
        return float(((y[1:] - y[:-1]).abs() / (x[1:] - x[:-1])).max())

    elu = nn.ELU(alpha=-5.0)
    assert steepest(elu) <= lnn.lipschitz_bound(elu) == 5.0
    assert steepest(elu) > 4.99
    celu = nn.CELU(alpha=-0.5)
    assert steepest(celu) > 1e10
    with pytest.raises(UnsupportedModuleError, match=r"CELU with alpha=-0\.5 is not Lipschitz"):
        lnn.lipschitz_bound(celu)


def test_a_residual_t_outside_the_unit_interval_from_a_state_dict_is_still_bounded():
    block = lnn.Residual(nn.Linear(3, 3, bias=False), t=0.5)
    state = block.state_dict()
    state["_t"] = torch.tensor(5.0)
    block.load_state_dict(state)
    weight = block.branch.weight.detach().double()
    exact = float(torch.linalg.svdvals(-4 * torch.eye(3, dtype=torch.float64) + 5 * weight)[0])
    assert lnn.lipschitz_bound(block) >= exact


def test_a_cpl_block_whose_padding_mode_was_changed_after_construction_is_refused():
    block = lnn.CPLConv2d(2)
    block(torch.randn(1, 2, 5, 5))
    block.layer.padding_mode = "circular"  # V^T is then no longer V's adjoint
    with pytest.raises(InvalidArgumentError, match="zero padding"):
        lnn.lipschitz_bound(block)


def test_a_constrained_convolution_whose_geometry_changed_after_registration_is_refused():
    for layer in (lnn.SkewOrthogonalConv2d(2), lnn.aol(nn.Conv2d(2, 2, 3, padding=1))):
        layer(torch.randn(1, 2, 5, 5))
        conv = layer.conv if isinstance(layer, lnn.SkewOrthogonalConv2d) else layer
        conv.padding_mode = "reflect"
        with pytest.raises(InvalidArgumentError, match="changed after"):
            lnn.lipschitz_bound(layer)


def test_weight_clipping_bound_uses_the_clip_value_as_float32_rounds_it():
    # the fuzzer's seed 10100: float32(0.1) = 0.10000000149 > 0.1, so a weight clamped to
    # +-0.1 in float32 exceeds the implied bound computed with 0.1
    layer = lnn.weight_clip(nn.Linear(2, 1, bias=False), clip_value=0.1)
    with torch.no_grad():
        layer.parametrizations.weight.original.copy_(torch.tensor([[-5.0, 5.0]]))
    exact = float(torch.linalg.svdvals(layer.weight.detach().double())[0])
    assert exact > 0.1 * math.sqrt(2)
    assert lnn.lipschitz_bound(layer) >= exact


@pytest.mark.parametrize("module", [
    nn.ZeroPad2d((1, 2, 0, 1)), nn.ConstantPad1d(2, 3.0), nn.ReflectionPad2d((1, 2, 0, 1)),
    nn.ReflectionPad1d(2), nn.ReplicationPad1d((2, 1)), nn.ReplicationPad2d(1),
    nn.CircularPad2d((1, 1, 2, 0)), nn.Upsample(scale_factor=2, mode="nearest"),
    nn.Upsample(scale_factor=(1.5, 3.0), mode="nearest"),
    nn.Upsample(scale_factor=2.5, mode="nearest-exact"), nn.PixelShuffle(2),
    nn.PixelUnshuffle(2), nn.ChannelShuffle(2)], ids=repr)
def test_padding_upsampling_and_shuffles_against_their_materialized_maps(module):
    # the bound holds for every input size, and with the size recorded
    checked = 0
    for shape in ((4, 1, 1), (4, 3, 3), (4, 2, 4), (4, 4, 4)):
        if isinstance(module, nn.ReflectionPad1d | nn.ReflectionPad2d) and min(shape[1:]) < 3:
            continue
        if isinstance(module, nn.CircularPad2d) and min(shape[1:]) < 2:
            continue
        x = torch.zeros(1, *shape)
        if isinstance(module, nn.ReflectionPad1d | nn.ReplicationPad1d | nn.ConstantPad1d):
            shape = shape[:2]
            x = torch.zeros(1, *shape)
        size = math.prod(shape)
        basis = torch.eye(size, dtype=torch.float64).reshape(size, *shape)
        try:
            with torch.no_grad():
                matrix = (module(basis) - module(torch.zeros(1, *shape, dtype=torch.float64))
                          ).reshape(size, -1).T
        except RuntimeError:  # a size the module does not take (PixelUnshuffle on 1x1)
            continue
        exact = float(torch.linalg.svdvals(matrix)[0])
        assert exact <= lnn.lipschitz_bound(module) * (1 + 1e-12), shape
        assert exact <= lnn.lipschitz_bound(module, example_input=x) * (1 + 1e-12), shape
        checked += 1
    assert checked >= 2


def test_upsampling_that_mixes_samples_is_refused():
    with pytest.raises(UnsupportedModuleError, match="bilinear"):
        lnn.lipschitz_bound(nn.Upsample(scale_factor=2, mode="bilinear"))
    with pytest.raises(UnsupportedModuleError, match="target size"):
        lnn.lipschitz_bound(nn.Upsample(size=(8, 8)))


def test_an_exported_orthogonal_convnet_is_bounded_near_1_without_its_input_size():
    # a plain torch copy knows no input size: the size-free bound was sqrt(#taps) = 3 per
    # layer; the Gram row sums (valid for every size) give ~1 for orthogonal kernels
    torch.manual_seed(0)
    model = nn.Sequential(lnn.aoc(nn.Conv2d(8, 8, 3, padding=1)), nn.ReLU(),
                          lnn.bcop(nn.Conv2d(8, 8, 3, padding=1)))
    model(torch.randn(1, 8, 8, 8))
    plain = lnn.export(model)
    sizeless = lnn.lipschitz_bound(plain)
    assert sizeless <= 1 + 1e-5
    for size in (3, 6):
        for index in (0, 2):
            conv = plain[index]
            matrix = lnn.conv_matrix(conv.weight.detach().double(),
                                     ConvGeometry.of(conv, (size, size)))
            assert float(torch.linalg.svdvals(matrix)[0]) <= lnn.lipschitz_bound(conv)


def test_bad_arguments_get_one_line_errors():
    with pytest.raises(InvalidArgumentError, match=r"expects a torch\.nn\.Module, got str"):
        lnn.lipschitz_bound("not a module")
    with pytest.raises(InvalidArgumentError, match=r"example_input of shape \(4, 5\) does not "
                                                   r"run through the model: mat1"):
        lnn.lipschitz_bound(nn.Linear(3, 2), torch.randn(4, 5))
    with pytest.raises(InvalidArgumentError, match="example_input must be a tensor"):
        lnn.lipschitz_bound(nn.Linear(3, 2), "x")
    with pytest.raises(InvalidArgumentError, match="exact_entries must be an int"):
        lnn.lipschitz_bound(nn.Linear(3, 2), exact_entries="big")
