"""The constraints keep the torch workflow: torch.compile and DistributedDataParallel."""

import os
import subprocess
import sys

import torch
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


_DDP_WORKER = """
import sys, torch, torch.distributed as dist
from torch import nn
from lipkit.nn import MaxMin, lipschitz_bound, make_lipschitz
rank, path, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method="file://" + path, rank=rank, world_size=2)
results = {}
for method in ("spectral", "bjorck"):
    torch.manual_seed(0)
    model = make_lipschitz(nn.Sequential(nn.Linear(6, 16), MaxMin(), nn.Linear(16, 3)), method)
    model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(100 + rank)  # different data on each rank
    for _ in range(3):
        loss = model(torch.randn(16, 6, generator=generator)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    flat = torch.cat([p.detach().reshape(-1) for p in model.module.parameters()])
    results[method] = (flat, lipschitz_bound(model.module.eval()))
dist.destroy_process_group()
torch.save(results, out)
"""


def test_distributed_data_parallel_keeps_replicas_equal_and_constrained(tmp_path):
    # two real processes (not forks of a test worker, which can deadlock), gloo on loopback
    script = tmp_path / "worker.py"
    script.write_text(_DDP_WORKER)
    environment = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    workers = [
        subprocess.Popen([sys.executable, str(script), str(rank), str(tmp_path / "rendezvous"),
                          str(tmp_path / f"rank{rank}.pt")], env=environment,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(2)
    ]
    for worker in workers:
        try:
            output, _ = worker.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for other in workers:
                other.kill()
            raise AssertionError("DDP workers did not finish in 240 s") from None
        assert worker.returncode == 0, output
    first = torch.load(tmp_path / "rank0.pt", weights_only=True)
    second = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for method in ("spectral", "bjorck"):
        (params_a, bound_a), (params_b, bound_b) = first[method], second[method]
        torch.testing.assert_close(params_a, params_b)  # averaged gradients: same parameters
        assert bound_a <= 1 + 1e-3 and bound_b <= 1 + 1e-3, (method, bound_a, bound_b)
