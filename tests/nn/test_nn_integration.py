"""The constraints keep the torch workflow: torch.compile and DistributedDataParallel."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lipkit.nn import MaxMin, lipschitz_bound, make_lipschitz


def _model(method: str) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), MaxMin(), nn.Linear(16, 3))
    return make_lipschitz(model, method)


def test_torch_compile_trains_a_constrained_model_and_matches_eager():
    model = _model("spectral")
    compiled = torch.compile(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(32, 6)
    for _ in range(3):
        loss = compiled(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)
    assert lipschitz_bound(model) <= 1 + 1e-3


def _ddp_worker(rank: int, world: int, path: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    try:
        for method in ("spectral", "bjorck"):
            model = nn.parallel.DistributedDataParallel(_model(method))
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
            generator = torch.Generator().manual_seed(100 + rank)  # different data per rank
            for _ in range(3):
                x = torch.randn(16, 6, generator=generator)
                loss = model(x).square().mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            flat = torch.cat([p.detach().reshape(-1) for p in model.module.parameters()])
            results[(rank, method)] = (flat, lipschitz_bound(model.module.eval()))
    finally:
        dist.destroy_process_group()


def test_distributed_data_parallel_keeps_replicas_equal_and_constrained(tmp_path):
    torch.set_num_threads(1)
    manager = mp.Manager()
    results = manager.dict()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "rendezvous"), results), nprocs=2,
                       start_method="fork")
    for method in ("spectral", "bjorck"):
        (first, bound_first), (second, bound_second) = results[(0, method)], results[(1, method)]
        torch.testing.assert_close(first, second)  # gradients were averaged: same parameters
        assert bound_first <= 1 + 1e-3 and bound_second <= 1 + 1e-3, (method, bound_first)
