"""Fitting across processes (torch.distributed, gloo on the CPU) against single-process and numpy references,
and a fit's memory against the number of training images."""

import contextlib
import gc
import os
import shutil
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from padim_utils import distributed
from padim_utils.cli import main
from padim_utils.config import preset
from padim_utils.errors import PadimError
from padim_utils.gaussian import GaussianStats
from padim_utils.model import Padim
from padim_utils.reduction import Reducer

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- helpers
def _data(n, d=4, h=3, w=5, seed=0):
    """(N, d, H, W) float64 with correlated channels and a different mean per position."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, h * w, d)) @ rng.normal(size=(d, d)) + 50 * rng.normal(size=(h * w, d))
    return x.transpose(0, 2, 1).reshape(n, d, h, w)


def _fit(x, batch=2, chunk=4):
    """GaussianStats of x fed in batches; chunk < P exercises the chunked loops."""
    n, d, h, w = x.shape
    stats = GaussianStats(h * w, d, chunk=chunk)
    for i in range(0, n, batch):
        stats.update(torch.from_numpy(x[i : i + batch]))
    return stats


#: How the N items of each case are split between rank 0 and rank 1.
SPLITS = {
    "interleaved, odd N": lambda n, r: list(range(r, n, 2)),
    "uneven": lambda n, r: list(range(2)) if r == 0 else list(range(2, n)),
    "rank 1 empty": lambda n, r: list(range(n)) if r == 0 else [],
}
N = 7


def _init(rank, world, init_file, timeout_s=60.0):
    import datetime

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))


def _merge_worker(rank, world, init_file, out_dir):
    """Each rank fits its items, all-reduces, and saves what it ends up with."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    _init(rank, world, init_file)
    x = _data(N)
    emb = torch.from_numpy(np.random.default_rng(1).normal(size=(N, 9, 2, 3)))  # (N, C, h, w) for PCA
    result = {}
    for name, split in SPLITS.items():
        idx = split(N, rank)
        stats = _fit(x[idx]) if idx else GaussianStats(15, 4, chunk=4)
        distributed.all_reduce_stats(stats)
        result[name] = (stats.n, stats.mean.clone(), stats.covariance())
        pca = Reducer("pca", [9], 3)
        pca.fit_pca((emb[i : i + 1] for i in idx), merge=distributed.all_reduce_stats)
        result[name + " pca"] = pca.projection
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _spawn(worker, tmp_path, *args, nprocs=2):
    mp.start_processes(worker, args=(nprocs, str(tmp_path / "init"), str(tmp_path), *args), nprocs=nprocs,
                       start_method="spawn")


# ---------------------------------------------------------------------------- all_reduce_stats
def test_all_reduce_stats_equals_one_fit_and_np_cov(tmp_path):
    _spawn(_merge_worker, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    x = _data(N)
    flat = x.reshape(N, 4, 15)  # (N, d, P)
    ref_mean = flat.mean(0).T  # (P, d)
    ref_cov = np.stack([np.cov(flat[:, :, p], rowvar=False) for p in range(15)])  # (P, d, d)
    one = _fit(x, batch=3)
    emb = torch.from_numpy(np.random.default_rng(1).normal(size=(N, 9, 2, 3)))
    one_pca = Reducer("pca", [9], 3)
    one_pca.fit_pca([emb])
    for name in SPLITS:
        (n0, mean0, cov0), (n1, mean1, cov1) = ranks[0][name], ranks[1][name]
        assert n0 == n1 == N, name
        assert torch.equal(mean0, mean1) and torch.equal(cov0, cov1), name  # every rank holds the same fit
        np.testing.assert_allclose(mean0.numpy(), ref_mean, rtol=1e-12, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(cov0.numpy(), ref_cov, rtol=1e-10, atol=1e-10, err_msg=name)
        np.testing.assert_allclose(cov0.numpy(), one.covariance().numpy(), rtol=1e-10, atol=1e-10, err_msg=name)
        p0, p1 = ranks[0][name + " pca"], ranks[1][name + " pca"]
        assert torch.equal(p0, p1), name  # the same projection on every rank
        np.testing.assert_allclose(p0.numpy(), one_pca.projection.numpy(), atol=1e-6, err_msg=name)


def _timeout_worker(rank, world, init_file, out_dir):
    """Rank 1 never joins the all-reduce: rank 0 must get one PadimError line after the timeout, not hang."""
    import torch.distributed as dist

    _init(rank, world, init_file, timeout_s=5)
    dist.barrier()  # both ranks are up
    done = Path(out_dir) / "done"
    if rank == 1:
        deadline = time.monotonic() + 60
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        dist.destroy_process_group()
        return
    t = time.monotonic()
    try:
        distributed.all_reduce_stats(_fit(_data(4)))
        outcome = "no error"
    except PadimError as e:
        outcome = f"PadimError after {time.monotonic() - t:.1f} s: {e}"
    (Path(out_dir) / "outcome").write_text(outcome)
    done.touch()
    dist.destroy_process_group()


def test_a_rank_that_never_joins_is_a_one_line_error_after_the_timeout(tmp_path):
    _spawn(_timeout_worker, tmp_path)
    outcome = (tmp_path / "outcome").read_text()
    assert outcome.startswith("PadimError after ") and "\n" not in outcome, outcome
    assert "the exchange with the other processes failed" in outcome
    assert float(outcome.split()[2]) < 30, outcome


# ---------------------------------------------------------------------------- sharding
@pytest.mark.parametrize("n", [0, 2, 5, 7])
def test_shards_partition_the_dataset(monkeypatch, n):
    data = list(range(100, 100 + n))

    class Items(torch.utils.data.Dataset):
        out_size, interpolation = 64, "bilinear"

        def __len__(self):
            return n

        def __getitem__(self, i):
            return data[i]

    shards = []
    for rank in range(3):
        monkeypatch.setenv("WORLD_SIZE", "3")
        monkeypatch.setenv("RANK", str(rank))
        items = Items()
        shard = distributed.shard(items)
        assert isinstance(shard, torch.utils.data.Subset) and shard.dataset is items  # what Padim's geometry check looks through
        shards.append([shard[i] for i in range(len(shard))])
    assert sorted(sum(shards, [])) == data  # every item exactly once
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced; empty ranks only when n < 3


def test_a_feature_cache_is_not_sharded(monkeypatch):
    from padim_utils.experiments.features import FeatureCache

    cache = FeatureCache("efficientnet_lite0", ("a",), 64, [torch.zeros(2, 1, 1, 1)], torch.zeros(2), None)
    with pytest.raises(PadimError, match="fit a FeatureCache in a single process"):
        distributed.shard(cache)


def test_bad_timeout_is_one_line(monkeypatch):
    monkeypatch.setenv("PADIM_DIST_TIMEOUT", "soon")
    with pytest.raises(PadimError, match="PADIM_DIST_TIMEOUT='soon' is not a positive number of seconds"):
        distributed.timeout()
    monkeypatch.setenv("PADIM_DIST_TIMEOUT", "90")
    assert distributed.timeout().total_seconds() == 90


def test_other_commands_refuse_torchrun_and_errors_name_the_rank(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["predict", "--model", str(tmp_path / "m"), "--input", str(tmp_path), "--out",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("padim: error: rank 1: only `padim fit` runs under torchrun (WORLD_SIZE=2); run `padim predict` "
                   "as one process")


# ---------------------------------------------------------------------------- torchrun end to end
def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")  # the working tree's package, one thread like torchrun's
    return env


def _torchrun(args, nproc, timeout=300):
    """`padim ...` under torchrun with `nproc` processes (gloo on the CPU)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                "-m", "padim_utils.cli"]
    return subprocess.run([*launcher, *args], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _fit_one_thread(args, capsys) -> None:
    """`padim ...` in this process with one thread, like each torchrun worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args) == 0, capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)


def _synthetic(root, n_train):
    from padim_utils.datasets.synthetic import make_synthetic_mvtec

    return make_synthetic_mvtec(root, categories=("carpet_syn",), image_size=64, n_train=n_train, n_test_good=1,
                                n_test_defect_per_type=1)


def _read(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


# batch size 1: every image goes through the backbone alone in both runs, so the features are the same to the
# bit and only the merging of the statistics is compared
@pytest.mark.parametrize("n_train, nproc, reduction", [
    (5, 2, "random"),  # odd: the ranks' shares differ
    (6, 2, "pca"),  # the PCA pass is merged too
    (2, 3, "pca"),  # fewer images than processes: rank 2 has none, yet joins both passes
])
def test_torchrun_fit_writes_the_single_process_model(tmp_path, capsys, n_train, nproc, reduction):
    root = _synthetic(tmp_path / "data", n_train)
    args = ["fit", "--root", str(root), "--category", "carpet_syn", "--config", "quick", "--dim", "12",
            "--batch-size", "1", "--reduction", reduction, "--device", "cpu", "--quiet"]
    _fit_one_thread([*args, "--out", str(tmp_path / "one.safetensors")], capsys)
    many = _torchrun([*args, "--out", str(tmp_path / "out" / "many.safetensors")], nproc=nproc)
    assert many.returncode == 0, many.stderr
    lines = many.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fitted efficientnet_lite0 d=12 on {n_train} images "
                                                   f"({nproc} processes)"), many.stdout  # rank 0 alone prints
    assert "padim: error" not in many.stderr and "Traceback" not in many.stderr, many.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["many.safetensors"]  # no temporary left
    (ref, ref_meta), (got, got_meta) = _read(tmp_path / "one.safetensors"), _read(tmp_path / "out" /
                                                                                  "many.safetensors")
    assert sorted(got) == sorted(ref)
    assert {k: got_meta[k] for k in ("config", "grid", "n_train")} == {k: ref_meta[k] for k in
                                                                      ("config", "grid", "n_train")}
    assert got_meta["n_train"] == str(n_train)
    for name in ref:
        assert got[name].dtype == ref[name].dtype and got[name].shape == ref[name].shape, name
        if name == "channel_index":
            assert torch.equal(got[name], ref[name])
        else:  # float32 rounding of float64 sums taken in another order
            np.testing.assert_allclose(got[name].numpy(), ref[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_an_error_on_one_rank_stops_the_others(tmp_path):
    root = _synthetic(tmp_path / "data", 4)
    bad = root / "carpet_syn" / "train" / "good" / "001.png"  # item 1: rank 1's share
    bad.write_bytes(b"not a png")
    out = tmp_path / "m.safetensors"
    t = time.monotonic()
    run = _torchrun(["fit", "--root", str(root), "--category", "carpet_syn", "--config", "quick", "--device", "cpu",
                  "--quiet", "--out", str(out)], nproc=2, timeout=240)
    assert run.returncode != 0 and not out.exists()
    assert time.monotonic() - t < 120  # rank 0 did not wait for the 30 min timeout
    errors = [line for line in run.stderr.splitlines() if line.startswith("padim: error: ")]
    assert f"padim: error: rank 1: cannot read image {bad}" in "\n".join(errors), run.stderr
    assert not any("Traceback" in line for line in run.stderr.splitlines() if line.startswith("[rank")), run.stderr


# ---------------------------------------------------------------------------- ranks that disagree, signals
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_rank(rank, world, port, args, **env):
    """`padim ...` as rank `rank` of `world`, with the variables torchrun sets (each rank its own options)."""
    env = {**_env(), "WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank),
           "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), **env}
    return subprocess.Popen([sys.executable, "-m", "padim_utils.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _fit_args(root, out, *extra):
    return ["fit", "--root", str(root), "--category", "carpet_syn", "--config", "quick", "--batch-size", "1",
            "--device", "cpu", "--quiet", "--out", str(out), *extra]


@pytest.mark.parametrize("case", ["seed", "dim", "more images", "other images"])
def test_ranks_that_disagree_are_refused_in_one_line_on_every_rank(tmp_path, case):
    root0 = _synthetic(tmp_path / "data0", 4)
    root1 = root0
    if case == "more images":
        root1 = _synthetic(tmp_path / "data1", 5)
    elif case == "other images":  # as many images, one of them another file
        root1 = tmp_path / "data1"
        shutil.copytree(root0, root1)
        first = sorted((root1 / "carpet_syn" / "train" / "good").iterdir())[0]
        first.write_bytes(sorted((root0 / "carpet_syn" / "test" / "good").iterdir())[0].read_bytes())
    options = {"seed": (["--seed", "0"], ["--seed", "1"]), "dim": (["--dim", "12"], ["--dim", "8"])}.get(case,
                                                                                                      ([], []))
    out, port = tmp_path / "m.safetensors", _free_port()
    ranks = [_start_rank(r, 2, port, _fit_args(root, out, *extra))
             for r, (root, extra) in enumerate(zip((root0, root1), options))]
    results = [(p.wait(timeout=240), p.communicate()) for p in ranks]
    expected = {"seed": "rank 1's seed differs from rank 0's", "dim": "rank 1's d differs from rank 0's",
                "more images": "rank 1 has 5 images, rank 0 4;",
                "other images": "rank 1 has 4 images, rank 0 4 (other names or sizes)"}[case]
    for r, (code, (stdout, stderr)) in enumerate(results):
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1 and stdout == "", (r, stderr)
        assert lines[0].startswith("padim: error: " + ("rank 1: " if r else "")) and expected in lines[0], lines
    assert not out.exists()  # nothing merged, nothing written


def _listening(port: int) -> bool:
    """Whether some process listens on TCP `port` of this machine (Linux /proc/net/tcp, state 0A)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if int(local.rsplit(":", 1)[1], 16) == port and state == "0A":
                    return True
    return False


@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "padim: interrupted"),
                                             (signal.SIGTERM, 143, "padim: terminated")])
def test_a_rank_waiting_for_one_that_never_starts_stops_at_once_on_a_signal(tmp_path, sig, code, said):
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("needs Linux's /proc/net/tcp to see when rank 0 waits")
    root, port = _synthetic(tmp_path / "data", 2), _free_port()
    rank0 = _start_rank(0, 2, port, _fit_args(root, tmp_path / "m.safetensors"), PADIM_DIST_TIMEOUT="600")
    deadline = time.monotonic() + 120
    while not _listening(port) and rank0.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _listening(port), rank0.communicate()  # rank 0 holds the rendezvous and waits for rank 1
    time.sleep(1)
    rank0.send_signal(sig)
    t = time.monotonic()
    try:
        rank0.wait(timeout=20)
    finally:
        rank0.kill()
    _, stderr = rank0.communicate()
    assert time.monotonic() - t < 10 and rank0.returncode == code, stderr
    assert stderr.strip() == said


def _interrupted_worker(rank, world, init_file, out_dir):
    """Rank 1 never joins the all-reduce but sends rank 0 a Ctrl-C: rank 0 must stop waiting at once."""
    import signal as signals

    import torch.distributed as dist

    _init(rank, world, init_file, timeout_s=120)
    dist.barrier()
    done = Path(out_dir) / "done"
    if rank == 1:
        time.sleep(2)
        os.kill(int((Path(out_dir) / "pid0").read_text()), signals.SIGINT)
        deadline = time.monotonic() + 60
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return  # no destroy_process_group: rank 0 left its all-reduce pending
    (Path(out_dir) / "pid0").write_text(str(os.getpid()))
    t = time.monotonic()
    try:
        distributed.all_reduce_stats(_fit(_data(4)))
        outcome = "no interruption"
    except KeyboardInterrupt:
        outcome = f"interrupted after {time.monotonic() - t:.1f} s"
    (Path(out_dir) / "outcome").write_text(outcome)
    done.touch()


def test_a_rank_waiting_in_a_collective_stops_at_once_on_ctrl_c(tmp_path):
    _spawn(_interrupted_worker, tmp_path)
    outcome = (tmp_path / "outcome").read_text()
    assert outcome.startswith("interrupted after "), outcome
    assert float(outcome.split()[2]) < 10, outcome  # 2 s until the signal, not the 120 s timeout


# ---------------------------------------------------------------------------- memory does not grow with N
class _Images(torch.utils.data.Dataset):
    out_size = 64

    def __init__(self, n):
        g = torch.Generator().manual_seed(n)
        self.images = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=g)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i]}


def _held_bytes(obj, seen=None) -> int:
    """Bytes of every tensor an object holds, also inside lists, tuples, dicts and its attributes."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.nbytes
    if isinstance(obj, (list, tuple, set)):
        return sum(_held_bytes(v, seen) for v in obj)
    if isinstance(obj, dict):
        return sum(_held_bytes(v, seen) for v in obj.values())
    return sum(_held_bytes(v, seen) for v in vars(obj).values()) if hasattr(obj, "__dict__") else 0


def _fit_and_watch(monkeypatch, n):
    """Fit on n images (batches of 2); per update: the statistics' bytes and how many batches' embeddings
    and layer outputs are still alive."""
    made = []  # weak references to every embedding and layer output the fit produced
    seen = []  # (stats bytes, live embeddings and layer outputs) at each update
    update, reduce = GaussianStats.update, Reducer.__call__

    def spy_reduce(self, features):
        out = reduce(self, features)
        made.extend(weakref.ref(t) for t in (out, *features))
        return out

    def spy_update(self, emb):
        update(self, emb)
        seen.append((_held_bytes(self), sum(r() is not None for r in made)))

    with monkeypatch.context() as m:
        m.setattr(Reducer, "__call__", spy_reduce)
        m.setattr(GaussianStats, "update", spy_update)
        m.setattr(Padim, "_images_per_update", lambda self: 4)  # two batches of 2 per update
        cfg = preset("quick").replace(d=8, batch_size=2, device="cpu")
        model = Padim(cfg).fit(_Images(n), progress=False)
    gc.collect()
    return model, seen, sum(r() is not None for r in made)


def test_fit_memory_does_not_grow_with_the_number_of_images(monkeypatch):
    model4, seen4, alive4 = _fit_and_watch(monkeypatch, 4)
    model16, seen16, alive16 = _fit_and_watch(monkeypatch, 16)
    assert len(seen4) == 1 and len(seen16) == 4  # one update per 4 images
    p, d = model4.mean.shape
    stats_bytes = 8 * (p * d + p * d * d)  # float64 mean (P, d) and scatter (P, d, d), nothing else
    layers = len(model4.reducer.channels)
    # after every update: the statistics hold the same bytes, and only the embeddings of the update's two
    # batches and the current batch's layer outputs are alive (one embedding kept per batch would grow with N)
    assert set(seen4) == set(seen16) == {(stats_bytes, 2 + layers)}
    assert alive4 == alive16 == 0  # nothing kept after the fit
    assert _held_bytes(model4) == _held_bytes(model16)  # the fitted model does not grow with N either


def test_images_per_update_are_bounded_by_memory():
    model = Padim(preset("quick").replace(device="cpu", d=8))
    model.grid = (16, 16)
    assert model._images_per_update() == 128  # tiny embeddings: the count cap
    model.grid, model.reducer.d = (56, 56), 550  # Wide-ResNet50's embedding: 6.9 MB an image
    assert model._images_per_update() == 2**29 // (56 * 56 * 550 * 4) == 77  # 512 MiB of float32 on the CPU
    model.grid, model.reducer.d = (512, 512), 550
    assert model._images_per_update() == model.config.batch_size  # never fewer than one batch
