"""LipSDP's sub-networks in worker processes: the serial records, a sound product."""

import pytest

from lipkit.errors import InvalidArgumentError
from lipkit.estimate import estimate, load_network
from lipkit.estimate.lipsdp import lipsdp

from .conftest import exact_l2_constant_2d, random_mlp


def test_parallel_sub_networks_equal_the_serial_ones_and_bound_the_truth():
    network = load_network(random_mlp([2, 8, 8, 8, 8, 2], seed=4))
    serial = lipsdp(network, "neuron", split=2)
    messages = []
    parallel = lipsdp(network, "neuron", split=2, workers=2, progress=messages.append)
    assert serial.kind == parallel.kind == "upper" and parallel.status == "ok"
    assert len(parallel.details["pieces"]) == 3 and parallel.details["workers"] == 2
    for one, other in zip(serial.details["pieces"], parallel.details["pieces"], strict=True):
        assert one["value"] == pytest.approx(other["value"], rel=1e-9)
    assert parallel.value == pytest.approx(serial.value, rel=1e-9)
    # sound: above the exact constant (dense grid of the 2-D input plane)
    assert parallel.value >= exact_l2_constant_2d(network) * (1 - 1e-9)
    # the product of the pieces is looser than (or equal to) the whole network's SDP
    assert parallel.value >= lipsdp(network, "neuron").value * (1 - 1e-9)
    assert any("3 sub-networks on 2 worker processes" in m for m in messages)
    assert sum("solved" in m for m in messages) == 3


def test_workers_through_estimate_and_bad_values():
    model = random_mlp([3, 6, 6, 2], seed=1)
    statuses = []
    report = estimate(model, methods=["lipsdp-neuron"], split=1, workers=2,
                      status=statuses.append)
    assert report.bounds[0].status == "ok" and report.bounds[0].details["workers"] == 2
    assert statuses and all(s.startswith("lipsdp-neuron") for s in statuses)
    with pytest.raises(InvalidArgumentError, match="workers"):
        lipsdp(load_network(model), "neuron", split=1, workers=0)
