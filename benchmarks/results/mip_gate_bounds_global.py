import sys, time, json
sys.path.insert(0, '/work/main/benchmarks')
from bench_mip import random_mlp
from lipkit.estimate import METHODS, load_network, options_for
import lipkit
out = []
for widths, seed in [((4,16,16,16,1),0), ((4,24,24,24,1),1), ((4,16,16,16,16,1),2), ((4,32,32,1),3), ((6,20,20,20,1),4)]:
    net = load_network(random_mlp(list(widths), seed=seed) if True else None)
    t = time.perf_counter()
    r = METHODS["exact-mip"].function(net, options_for("exact-mip", net, norm="inf", time_limit=60))
    r = r if not isinstance(r, list) else r[0]
    out.append(dict(net="-".join(map(str,widths)), seed=seed, kind=r.kind, value=r.value, s=round(time.perf_counter()-t,2), lower=r.details.get("lower")))
print(json.dumps(dict(src=lipkit.__file__, rows=out)))
