"""DDP on gloo: 2 spawned processes equal the 1-process run with accumulation; shards; one decision."""

import socket
import time

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

from sfotheory.validation import ParameterError  # noqa: E402
from sfotorch.checkpoint import load_checkpoint  # noqa: E402
from sfotorch.distributed import (  # noqa: E402
    DistributedContext,
    DistributedExactMonitor,
    ShardedLoader,
    sharded_sizes,
)
from sfotorch.monitors import ExactMonitor  # noqa: E402
from sfotorch.sampler import ResizableLoader  # noqa: E402
from tests.torch.scripts import ddp_worker  # noqa: E402

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")
WORLD = 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Run ddp_worker.worker on 2 spawned gloo processes once; a hang fails after 150 s."""
    out = tmp_path_factory.mktemp("ddp")
    ctx = torch.multiprocessing.start_processes(ddp_worker.worker, args=(WORLD, free_port(), str(out)),
                                                nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + 150
    while not ctx.join(timeout=max(0.0, min(5.0, deadline - time.monotonic()))):
        if time.monotonic() >= deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail("the 2-rank gloo run did not finish within 150 s (a collective hung?)")
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single_process():
    """The same run in one process: the global batch through one loader, accumulated in micro-batches."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, sched, loop = ddp_worker.setup(DistributedContext())
        norms, sizes = [], []
        for _ in range(ddp_worker.STEPS):
            sizes.append(loop.step().samples)
            norms.append(sched.last_norm)
    finally:
        torch.set_num_threads(threads)
    return model, sched, norms, sizes


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_with_accumulation(ranks, single_process):
    """Same stage transitions at the same steps, same measured norms and parameters to float64 rounding."""
    _, results = ranks
    model, sched, norms, sizes = single_process
    steps = [t["step"] for t in sched.transitions]
    assert len(steps) >= 3 and steps[0] > ddp_worker.SCHEDULE["tau"], "a few stages, with failed checks before"
    assert {b % WORLD for b in sizes} == {0, 1}, \
        "the run's global batches split both evenly and unevenly over the ranks"
    for res in results:
        assert [(t["step"], t["stage"], t["b"]) for t in res["transitions"]] == \
               [(t["step"], t["stage"], t["b"]) for t in sched.transitions]
        for key, value in model.state_dict().items():
            torch.testing.assert_close(res["model"][key], value, rtol=1e-10, atol=1e-12)
        for a, b in zip(res["norms"], norms):
            assert (a is None and b is None) or abs(a - b) <= 1e-10 * max(1.0, abs(b))
        assert res["state"]["samples"] == int(sched.state.samples)            # SFO is global
        assert res["state"]["check_samples"] == int(sched.state.check_samples)


@pytest.mark.slow
def test_ranks_never_diverge(ranks):
    """Inside the group every step compared the rule states (check_ranks_agree); at the end the
    gathered states, transitions, measured norms and parameters are identical, bit for bit."""
    _, results = ranks
    for res in results:
        first = res["gathered"][0]
        for other in res["gathered"][1:]:
            assert other["state"] == first["state"] and other["transitions"] == first["transitions"]
            assert other["norms"] == first["norms"]
            assert all(torch.equal(a, b) for a, b in zip(first["params"], other["params"]))


@pytest.mark.slow
def test_a_two_rank_run_resumes_bit_identically_from_its_checkpoint(ranks):
    _, results = ranks
    assert all(res["resumed"] and res["resume_equal"] for res in results)


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(ranks):
    _, results = ranks
    for res in results:
        assert res["nan_stop"] == [f"TrainingLoop step {ddp_worker.STEPS + ddp_worker.RESUME_STEPS + 1}"] * WORLD


@pytest.mark.slow
def test_shards_cover_each_global_batch_without_overlap_also_after_size_changes(ranks):
    _, results = ranks
    ref = ResizableLoader(torch.utils.data.TensorDataset(torch.arange(ddp_worker.SHARD_N)), batch_size=5, seed=2)
    it = iter(ref)
    seen_by_epoch: dict[int, list[int]] = {}
    for step, b in enumerate(ddp_worker.SHARD_SIZES):
        if b is not None:
            ref.batch_size = b
        try:
            batch = next(it)
        except StopIteration:
            it = iter(ref)
            batch = next(it)
        global_batch = batch[0].tolist()
        parts = [res["shards"][step]["local"] for res in results]
        assert sorted(sum(parts, [])) == sorted(global_batch), f"step {step}: shards do not cover the batch"
        assert parts == [global_batch[r::WORLD] for r in range(WORLD)]
        assert [len(p) for p in parts] == sharded_sizes(len(global_batch), WORLD)
        assert all(res["shards"][step]["global_len"] == len(global_batch) for res in results)
        seen_by_epoch.setdefault(ref.epoch, []).extend(global_batch)
    assert sorted(seen_by_epoch[0]) == list(range(ddp_worker.SHARD_N)), "epoch 0 lost or repeated samples"
    assert any(len(res["shards"][s]["local"]) == 0 for res in results for s in range(len(ddp_worker.SHARD_SIZES))), \
        "a global batch of one sample leaves a rank empty for a step"


@pytest.mark.slow
def test_moments_are_all_reduced_sums_over_every_ranks_micro_batches(ranks):
    _, results = ranks
    got, ref = results[0]["moments"], results[0]["moments"]["reference"]
    assert got["samples"] == 13 and got["micro_batches"] == ref["micro_batches"] == 5    # 7 → 3,2,2 ; 6 → 3,3
    for key in ("weighted_sq", "sq_norm", "trace_cov"):
        assert abs(got[key] - ref[key]) <= 1e-10 * abs(ref[key]), key
    assert results[1]["moments"]["trace_cov"] == got["trace_cov"]


@pytest.mark.slow
def test_a_two_rank_checkpoint_refuses_a_one_process_resume(ranks):
    out, _ = ranks
    model, sched, loop = ddp_worker.setup(DistributedContext())
    with pytest.raises(ParameterError, match=r"'world_size' parameter of load_checkpoint.*written with, 2.*"
                                             r"Got world_size=1 instead"):
        load_checkpoint(out / "ddp_ckpt.pt", model=model, optimizer=loop.optimizer, scheduler=sched,
                        loader=loop.loader)


# -- one process -----------------------------------------------------------------------------------------

def test_shard_sizes_follow_the_stated_rule():
    assert sharded_sizes(5, 2) == [3, 2] and sharded_sizes(4096, 3) == [1366, 1365, 1365]
    assert sharded_sizes(2, 4) == [1, 1, 0, 0]


def test_a_world_size_above_one_needs_a_process_group():
    with pytest.raises(ParameterError, match=r"'world_size' parameter of DistributedContext must be 1 unless "
                                             r"torch.distributed.init_process_group\(\) was called.*Got world_size=2"):
        DistributedContext(rank=0, world_size=2)
    with pytest.raises(ParameterError, match=r"'rank' parameter .* < world_size = 1.*Got rank=1"):
        DistributedContext(rank=1, world_size=1)


def test_a_one_rank_sharded_view_yields_the_loaders_batches():
    ds = torch.utils.data.TensorDataset(torch.arange(17))
    plain = ResizableLoader(ds, batch_size=4, seed=9)
    view = ShardedLoader(ResizableLoader(ds, batch_size=4, seed=9), DistributedContext())
    a, b = iter(plain), iter(view)
    for size in [4, 4, 6, 6, 6, 2, 5, 5]:
        plain.batch_size = view.batch_size = size
        try:
            x = next(a)
        except StopIteration:
            a = iter(plain)
            x = next(a)
        try:
            y = next(b)
        except StopIteration:
            b = iter(view)
            y = next(b)
        assert x[0].tolist() == y[0].tolist() and plain.last_batch_len == view.last_batch_len
        assert plain.state_dict() == view.state_dict()


def test_the_distributed_exact_monitor_on_one_rank_equals_the_exact_monitor():
    model, sched, loop = ddp_worker.setup(DistributedContext())
    x, y = ddp_worker.data()
    loss_fn = torch.nn.CrossEntropyLoss()
    a = DistributedExactMonitor(model, (x, y), loss_fn, batch_size=7).measure()
    b = ExactMonitor(model, (x, y), loss_fn, batch_size=32).measure()
    assert abs(a.norm - b.norm) <= 1e-12 * b.norm and a.cost == b.cost == ddp_worker.N


def test_the_loop_feeds_the_debiased_monitor_the_reduced_batch_moments():
    """With min_micro_batches=2 even b = 5 ≤ c gives tr Σ̂; update() receives ‖g_B‖², tr Σ̂ and b of the step."""

    class Recorder:
        def __init__(self):
            self.calls = []

        def update(self, sq_norm, trace_cov, batch_size):
            self.calls.append((sq_norm, trace_cov, batch_size))

    rec = Recorder()
    model, sched, loop = ddp_worker.setup(DistributedContext())
    loop.debiased, loop.accumulator.min_micro_batches = rec, 2
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = loop.loader.epoch_order(0)[:5]
    loop.step()
    x, y = ddp_worker.data()
    model.load_state_dict(state)
    from sfotorch.accumulate import GradientAccumulator
    ref = GradientAccumulator(model, torch.nn.CrossEntropyLoss(), max_micro_batch=3).accumulate(x[first], y[first])
    sq, trace, b = rec.calls[0]
    assert b == 5 and ref.micro_batches == 2
    assert abs(sq - ref.sq_norm()) <= 1e-12 * ref.sq_norm() and abs(trace - ref.trace_cov()) <= 1e-10 * ref.trace_cov()
