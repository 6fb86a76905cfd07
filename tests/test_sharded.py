"""Sharded, resumable sampling: 1 and 2 processes draw bitwise the same set, a killed run resumes to exactly
the uninterrupted result, a mismatched re-run is refused, and the README's torchrun line works verbatim."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp

from sde_lab.cli import main

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")

SOLVERS = {  # every solver, a few steps each (ode/sdeint/adaptive at loose tolerances)
    "pc": [], "ald": ["--steps", "6"], "ode": ["--rtol", "1e-3", "--atol", "1e-3"], "sdeint": ["--steps", "8"],
    "heun": [], "dpm_solver": [], "dpm_solver_pp": [], "dpm_solver_pp_sde": [], "euler_ancestral": [], "unipc": [],
    "deis": [], "adaptive": ["--solver-opt", "rel_tol=0.05", "--solver-opt", "abs_tol=0.05"], "dpm_adaptive": ["--rtol", "0.05", "--atol", "0.05"],
}


def argv(solver, out, noise="batch", n=24, batch=8):
    extra = SOLVERS[solver]
    steps = [] if "--steps" in extra or solver in ("ode", "adaptive", "dpm_adaptive") else ["--steps", "8"]
    return ["sample", "--target", "gmm16", "--sde", "vp", "--solver", solver, *steps, *extra, "--num-samples", str(n),
            "--batch-size", str(batch), "--noise", noise, "--seed", "3", "--out", str(out), "--quiet", "--threads", "1"]


LIKELIHOOD = ["likelihood", "--target", "gmm16", "--sde", "vp", "--n", "20", "--batch-size", "6", "--seed", "2",
              "--rtol", "1e-4", "--atol", "1e-4", "--no-progress", "--threads", "1"]  # Hutchinson: random probes per chunk


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, base):
    import torch
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        for solver in SOLVERS:
            for noise in ("batch", "per_sample"):
                assert main(argv(solver, Path(base) / f"two_{solver}_{noise}", noise)) == 0
                dist.barrier()
        assert main(LIKELIHOOD + ["--out", str(Path(base) / "two_ll")]) == 0
    finally:
        dist.destroy_process_group()


def test_two_processes_draw_bitwise_the_same_samples_as_one_for_every_solver(tmp_path, capsys):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for solver in SOLVERS:
        for noise in ("batch", "per_sample"):
            one = tmp_path / f"one_{solver}_{noise}"
            assert main(argv(solver, one, noise)) == 0
            a, b = (np.load(d / "samples.npz") for d in (one, tmp_path / f"two_{solver}_{noise}"))
            assert np.array_equal(a["samples"], b["samples"]), (solver, noise)
            assert np.array_equal(b["indices"], np.arange(24))
    # bits/dim: every example's value, the same on 2 processes as on 1, and their mean ± standard error
    assert main(LIKELIHOOD + ["--out", str(tmp_path / "one_ll")]) == 0
    one_out = capsys.readouterr().out
    a, b = (np.load(tmp_path / d / "likelihood.npz")["samples"] for d in ("one_ll", "two_ll"))
    assert a.shape == (20, 1) and np.array_equal(a, b)
    assert re.search(r"model NLL : [0-9.]+ ± [0-9.]+ nats/dim", one_out)
    # per-sample noise: the set does not depend on the batch size either
    assert main(argv("dpm_solver_pp_sde", tmp_path / "b5", "per_sample", batch=5)) == 0
    x5 = np.load(tmp_path / "b5" / "samples.npz")["samples"]
    x8 = np.load(tmp_path / "one_dpm_solver_pp_sde_per_sample" / "samples.npz")["samples"]
    assert np.abs(x5 - x8).max() < 1e-12
    # and with batch noise the chunks really differ (seeded per chunk, not one stream copied)
    xb = np.load(tmp_path / "one_pc_batch" / "samples.npz")["samples"]
    assert not np.array_equal(xb[:8], xb[8:16])


def test_a_killed_run_resumes_to_exactly_the_uninterrupted_result(tmp_path):
    args = ["--target", "ring", "--sde", "vp", "--solver", "pc", "--steps", "300", "--num-samples", "600",
            "--batch-size", "50", "--seed", "1", "--quiet", "--threads", "1"]
    cmd = [sys.executable, "-m", "sde_lab", "sample", *args]
    killed = tmp_path / "killed"
    p = subprocess.Popen(cmd + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    def shards():
        return len(list((killed / "shards").glob("*.npz"))) if (killed / "shards").is_dir() else 0

    deadline = time.time() + 240
    while time.time() < deadline and shards() < 3 and p.poll() is None:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    kept = sorted(f.name for f in (killed / "shards").glob("*.npz"))
    assert 3 <= len(kept) < 12, kept  # killed mid-way
    assert not (killed / "samples.npz").exists()
    r = subprocess.run(cmd + ["--out", str(killed)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"resuming: {len(kept)} of 12 chunks" in r.stderr
    assert main(["sample", *args, "--out", str(tmp_path / "whole")]) == 0
    a, b = (np.load(d / "samples.npz") for d in (killed, tmp_path / "whole"))
    assert np.array_equal(a["indices"], np.arange(600)) and len(np.unique(a["indices"])) == 600
    assert np.array_equal(a["samples"], b["samples"])


def test_a_mismatched_rerun_is_refused_and_a_finished_one_does_nothing(tmp_path, capsys):
    out = tmp_path / "s"
    base = ["sample", "--target", "ring", "--steps", "5", "--num-samples", "20", "--batch-size", "10", "--quiet", "--out", str(out)]
    assert main(base) == 0
    first = (out / "samples.npz").read_bytes()
    assert main(base) == 0
    assert "nothing to do" in capsys.readouterr().err
    for change, key in ((["--seed", "4"], "seed"), (["--solver", "ode"], "options.solver"), (["--sde", "ve"], "sde")):
        assert main(base + change) == 2
        err = capsys.readouterr().err
        assert "holds samples of another run" in err and key in err and "--overwrite" in err
    assert (out / "samples.npz").read_bytes() == first
    assert main(base + ["--seed", "4", "--overwrite"]) == 0
    assert (out / "samples.npz").read_bytes() != first


def _readme_torchrun_lines():
    text = (ROOT / "README.md").read_text()
    return [ln.split("#")[0].strip() for ln in text.splitlines() if ln.startswith("torchrun --standalone") and " sample " in ln]


def test_the_readme_torchrun_sample_line_works_verbatim(tmp_path):
    lines = _readme_torchrun_lines()
    assert lines, "the README documents a torchrun sample command"
    torchrun = Path(sys.executable).with_name("torchrun")
    for line in lines:
        parts = line.split()
        assert parts[0] == "torchrun"
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        r = subprocess.run([str(torchrun), *parts[1:]], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        out = tmp_path / parts[parts.index("--out") + 1]
        n = int(parts[parts.index("--num-samples") + 1])
        z = np.load(out / "samples.npz")
        assert np.array_equal(z["indices"], np.arange(n))
        assert re.search(rf"{n} samples .* on 2 processes", r.stdout), r.stdout
