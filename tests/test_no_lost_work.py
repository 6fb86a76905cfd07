"""No lost work: a workdir belongs to one run and one process, outputs are checked before the work starts,
and every bad input ends in a one- or two-line message naming command-line flags.

Permission cases need an unprivileged process (root writes anywhere): under root they run in a forked child
that drops to ``nobody`` (everything it needs is imported beforehand); as an ordinary user they run as is.
"""

import json
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

import sde_lab.cli.eval  # noqa: F401  (imported before any fork: the child cannot read the install as nobody)
import sde_lab.cli.likelihood  # noqa: F401
import sde_lab.cli.sample as sample_cli
import sde_lab.cli.train  # noqa: F401  (the same: imported before any fork)
from sde_lab.cli import build_parser, main
from sde_lab.config import apply_overrides, build_trainer, load_config
from sde_lab.training import CheckpointError, load_checkpoint
from sde_lab.workdir import (OutputError, RunLocked, WorkdirLock, check_output_dir, check_output_file, config_differences,
                             lock_holder, remove_stale_temps)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "vp" / "toy2d.py"
pytestmark = pytest.mark.usefixtures("one_thread")

build_parser()  # imports every subcommand module now

TINY = ["--set", "training.batch_size=16", "--set", "training.log_freq=1", "--set", "training.tensorboard=False",
        "--set", "model.hidden=16", "--set", "model.layers=2", "--set", "model.embed_dim=8", "--set", "optim.warmup=2",
        "--set", "device='cpu'", "--no-progress", "--threads", "1"]


def train_cli(workdir, *extra, n_iters=6, snapshot=3):
    return main(["train", "--config", str(CONFIG), "--workdir", str(workdir), *TINY,
                 "--set", f"training.n_iters={n_iters}", "--set", f"training.snapshot_freq={snapshot}", *extra])


def one_message(capsys, *needles):
    """The command printed a short error (one or two lines, no traceback) containing every needle."""
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if ln.startswith("sde-lab")]
    assert lines, err
    msg = lines[-1]
    assert "Traceback" not in err
    assert len(msg) < 700, msg
    for n in needles:
        assert n in msg, msg
    return msg


def digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------
# a workdir belongs to one run
# --------------------------------------------------------------------------------------------------
def test_fresh_train_into_used_workdir_is_refused_and_keeps_the_run(tmp_path, capsys):
    wd = tmp_path / "run"
    assert train_cli(wd) == 0
    before = digest(wd / "checkpoints")
    assert set(before) == {"checkpoint_3.pt", "checkpoint_6.pt", "latest"}
    assert train_cli(wd, "--set", "seed=7", n_iters=3) == 2
    one_message(capsys, "already holds a run", "--resume", "--overwrite", "steps 3, 6")
    assert digest(wd / "checkpoints") == before

    # --overwrite moves the old run aside, whole
    assert train_cli(wd, "--set", "seed=7", "--overwrite", n_iters=3) == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and digest(aside[0] / "checkpoints") == before
    assert json.loads((aside[0] / "run.json").read_text())["seed"] == 42
    assert json.loads((wd / "run.json").read_text())["seed"] == 7
    assert sorted(p.name for p in (wd / "checkpoints").glob("*.pt")) == ["checkpoint_3.pt"]


def test_resume_refuses_another_config_and_accepts_a_longer_schedule(tmp_path, capsys):
    wd = tmp_path / "run"
    assert train_cli(wd) == 0
    before = digest(wd / "checkpoints")
    assert train_cli(wd, "--resume", "--set", "seed=7", "--set", "optim.lr=0.5", n_iters=9) == 2
    msg = one_message(capsys, "--resume", "optim.lr: 0.001 -> 0.5", "seed: 42 -> 7")
    assert "n_iters" not in msg.split("(only")[0]
    assert digest(wd / "checkpoints") == before
    assert train_cli(wd, "--resume", n_iters=9, snapshot=100) == 0  # the schedule may change
    assert load_checkpoint(wd)["step"] == 9


def test_config_differences_ignores_only_the_schedule():
    a = {"training": {"n_iters": 10, "batch_size": 8}, "optim": {"lr": 1.0}, "sampling": {"num_steps": 5}}
    b = {"training": {"n_iters": 99, "batch_size": 16}, "optim": {"lr": 1.0}, "sampling": {"num_steps": 7}, "x": 1}
    assert config_differences(a, b) == ["training.batch_size: 8 -> 16", "x: '<absent>' -> 1"]


def test_resume_of_a_missing_workdir_is_refused_unless_asked_to_start(tmp_path, capsys):
    wd = tmp_path / "rnu"  # misspelled
    assert train_cli(wd, "--resume") == 2
    one_message(capsys, "holds no checkpoint", "--resume-or-start")
    assert not wd.exists()
    assert train_cli(wd, "--resume-or-start", n_iters=3) == 0
    assert load_checkpoint(wd)["step"] == 3
    assert train_cli(wd, "--resume-or-start", n_iters=6) == 0  # and continues next time
    assert load_checkpoint(wd)["step"] == 6


def test_stale_latest_pointer_resumes_from_the_newest_checkpoint_with_a_note(tmp_path, capsys):
    wd = tmp_path / "run"
    assert train_cli(wd) == 0
    (wd / "checkpoints" / "latest").write_text("checkpoint_3.pt")  # stopped between checkpoint and pointer
    capsys.readouterr()
    assert train_cli(wd, "--resume", n_iters=9, snapshot=100) == 0
    err = capsys.readouterr().err
    assert "checkpoint_6.pt is newer" in err and "resuming from checkpoint_6.pt" in err
    state = load_checkpoint(wd)
    assert state["step"] == 9


def test_stale_temporary_files_are_removed(tmp_path, capsys):
    wd = tmp_path / "run"
    assert train_cli(wd) == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = wd / "checkpoints" / f".checkpoint_9.pt.tmp{pid}"
    stale.write_bytes(b"")
    live = wd / "checkpoints" / f".checkpoint_99.pt.tmp{os.getpid()}"  # a live writer's file is left alone
    live.write_bytes(b"")
    assert train_cli(wd, "--resume", n_iters=9) == 0
    assert not stale.exists() and live.exists()
    assert "removed 1 temporary file" in capsys.readouterr().err
    live.unlink()


@pytest.mark.parametrize("key, value, msg", [
    ("training.n_iters", -5, "training.n_iters must be a positive integer"),
    ("training.n_iters", 0, "training.n_iters must be a positive integer"),
    ("training.snapshot_freq", -1, "training.snapshot_freq must be a non-negative integer"),
    ("training.log_freq", 0, "training.log_freq must be a positive integer"),
])
def test_values_that_make_no_sense_are_refused_before_anything_is_written(tmp_path, capsys, key, value, msg):
    wd = tmp_path / "run"
    assert train_cli(wd, "--set", f"{key}={value}") == 2
    one_message(capsys, msg, "--set")
    assert not (wd / "checkpoints").exists()


# --------------------------------------------------------------------------------------------------
# one writer at a time
# --------------------------------------------------------------------------------------------------
def test_a_second_process_on_a_locked_workdir_is_refused_with_the_holders_pid(tmp_path, capsys):
    wd = tmp_path / "run"
    assert train_cli(wd) == 0
    config = load_config(CONFIG)
    apply_overrides(config, [a for a in TINY[1::2] if "=" in a][:9] + ["training.n_iters=9"])
    holder = build_trainer(config, wd, resume=True, progress=False)  # holds the lock until fit ends / close
    try:
        assert lock_holder(wd)["pid"] == os.getpid()
        env = dict(os.environ, OMP_NUM_THREADS="1")
        for argv in (["train", "--config", str(CONFIG), "--workdir", str(wd), "--resume", *TINY],
                     ["sample", "--target", "ring", "--n", "4", "--steps", "3", "--out", str(wd / "samples")],
                     ["eval", "--metric", "sw2", "--target", "ring", "--n", "4", "--steps", "3",
                      "--json", str(wd / "checkpoints" / "eval.json")]):
            r = subprocess.run([sys.executable, "-m", "sde_lab", *argv], capture_output=True, text=True, env=env, timeout=300)
            assert r.returncode == 2, r.stderr
            assert f"pid {os.getpid()}" in r.stderr and "Traceback" not in r.stderr, r.stderr
        before = digest(wd / "checkpoints")
        with pytest.raises(RunLocked, match=f"pid {os.getpid()}"):
            WorkdirLock(wd).acquire()
    finally:
        holder.close()
    assert lock_holder(wd) is None
    assert digest(wd / "checkpoints") == before
    assert not (wd / "samples").exists()


def test_the_lock_of_a_killed_process_is_stale_and_taken_over(tmp_path):
    wd = tmp_path / "run"
    wd.mkdir()
    code = ("import sys, time; sys.path.insert(0, %r); from sde_lab.workdir import WorkdirLock; "
            "L = WorkdirLock(%r, 'holder').acquire(); print('held', flush=True); time.sleep(60)") % (str(ROOT), str(wd))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        assert lock_holder(wd)["pid"] == p.pid
        with pytest.raises(RunLocked, match=f"pid {p.pid}"):
            WorkdirLock(wd).acquire()
    finally:
        p.kill()
        p.wait()
    assert lock_holder(wd) is None  # the kernel released it; the file is still there
    lock = WorkdirLock(wd).acquire()
    assert lock.stale["pid"] == p.pid
    lock.release()
    assert not (wd / ".sde_lab.lock").exists()


# --------------------------------------------------------------------------------------------------
# outputs checked before the work starts
# --------------------------------------------------------------------------------------------------
def test_eval_outputs_never_replace_a_training_checkpoint(tmp_path, capsys):
    wd = tmp_path / "run"
    assert train_cli(wd) == 0
    ck = wd / "checkpoints" / "checkpoint_6.pt"
    copy = tmp_path / "elsewhere.pt"
    shutil.copy(ck, copy)  # a checkpoint outside its workdir is recognised by its content
    before = ck.read_bytes()
    for flag, target in (("--json", ck), ("--save-samples", ck), ("--json", copy), ("--save-samples", copy),
                         ("--json", wd / "run.json")):
        argv = ["eval", "--metric", "sw2", "--target", "ring", "--n", "8", "--steps", "3", "--no-progress", flag, str(target)]
        assert main(argv + ["--overwrite"]) == 2
        one_message(capsys, flag, "training checkpoint")
    assert ck.read_bytes() == before and copy.read_bytes() == before
    assert load_checkpoint(wd)["step"] == 6


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["sample", "--target", "ring", "--n", "8", "--steps", "3", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    first = (out / "samples.npz").read_bytes()
    assert main(argv) == 0  # the same command again: the samples are complete, nothing is redrawn
    assert "nothing to do" in capsys.readouterr().err and (out / "samples.npz").read_bytes() == first
    assert main(argv + ["--seed", "1"]) == 2
    one_message(capsys, "holds samples of another run", "seed: 0 -> 1", "--overwrite")
    assert (out / "samples.npz").read_bytes() == first
    assert main(argv + ["--seed", "1", "--overwrite"]) == 0
    assert (out / "samples.npz").read_bytes() != first
    js = tmp_path / "r.json"
    ev = ["eval", "--metric", "sw2", "--target", "ring", "--n", "8", "--steps", "3", "--no-progress", "--json", str(js)]
    assert main(ev) == 0
    text = js.read_text()
    assert main(ev) == 2
    one_message(capsys, "--json", "already exists", "--overwrite")
    assert js.read_text() == text
    assert main(ev + ["--overwrite"]) == 0


@pytest.fixture
def no_sampling(monkeypatch):
    """Sampling fails the test: the command must stop before it."""
    def boom(*a, **k):
        raise AssertionError("sampling ran before the output was checked")
    monkeypatch.setattr(sample_cli, "sample", boom)
    monkeypatch.setattr("sde_lab.config.sample", boom)


def test_sample_out_that_cannot_be_written_is_refused_before_sampling(tmp_path, capsys, no_sampling):
    f = tmp_path / "file"
    f.write_text("x")
    base = ["sample", "--target", "ring", "--n", "8", "--steps", "3", "--quiet", "--out"]
    assert main(base + [str(f)]) == 2
    one_message(capsys, "--out", "is a file")
    assert main(base + [str(f / "sub")]) == 2
    one_message(capsys, "lies under", "which is a file")
    wd = tmp_path / "run"
    (wd / "checkpoints").mkdir(parents=True)
    (wd / "checkpoints" / "checkpoint_1.pt").write_bytes(b"x")
    assert main(base + [str(wd)]) == 2
    one_message(capsys, "inside the training workdir")
    assert f.read_text() == "x"


def as_nobody(fn):
    """Run ``fn() -> int`` as an unprivileged user; returns ``(exit code, output)``. Under root: a forked child
    drops to ``nobody``; otherwise ``fn`` runs here."""
    if os.geteuid() != 0:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
            rc = fn()
        return rc, buf.getvalue()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        rc = 99
        try:
            os.close(r)
            os.dup2(w, 1)
            os.dup2(w, 2)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            torch.set_num_threads(1)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            rc = fn()
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(rc if isinstance(rc, int) else 98)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


@pytest.fixture
def readonly_dir():
    """A folder an unprivileged process can traverse but not write (pytest's tmp_path is private to root)."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="sde_lab_ro_"))
    os.chmod(base, 0o755)
    ro = base / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    yield ro
    os.chmod(ro, 0o755)
    shutil.rmtree(base)


def test_read_only_outputs_are_refused_before_any_work(readonly_dir, monkeypatch, tmp_path):
    # everything the commands import is imported here first: the unprivileged child cannot read the install
    assert train_cli(tmp_path / "warm", n_iters=1) == 0
    # the config as a file nobody can read (the checkout itself may be private, e.g. a mktemp clone)
    cfg_dir = readonly_dir.parent / "cfg"
    cfg_dir.mkdir()
    for f in (CONFIG, ROOT / "configs" / "default.py"):
        shutil.copy(f, cfg_dir / f.name)
        os.chmod(cfg_dir / f.name, 0o644)
    os.chmod(cfg_dir, 0o755)
    config = str(cfg_dir / CONFIG.name)
    monkeypatch.setattr(sample_cli, "sample", lambda *a, **k: (_ for _ in ()).throw(AssertionError("sampled")))
    cases = [
        (["sample", "--target", "ring", "--n", "8", "--steps", "3", "--quiet", "--out", str(readonly_dir / "s")], "--out"),
        (["sample", "--target", "ring", "--n", "8", "--steps", "3", "--quiet", "--out", str(readonly_dir)], "--out"),
        (["eval", "--metric", "sw2", "--target", "ring", "--n", "8", "--steps", "3", "--json", str(readonly_dir / "r.json")], "--json"),
        (["train", "--config", config, "--workdir", str(readonly_dir / "w"), *TINY], "--workdir"),
        (["train", "--config", config, "--workdir", str(readonly_dir), *TINY], "--workdir"),
    ]
    for argv, flag in cases:
        rc, out = as_nobody(lambda: main(argv))
        assert rc == 2, out
        assert "Traceback" not in out and "not writable" in out and flag in out, out
        assert "sampled" not in out
    assert list(readonly_dir.iterdir()) == []


def test_check_output_helpers(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # nothing is created by a check
    p = check_output_file(tmp_path / "x" / "r.json", flag="--json")
    assert not p.parent.exists()
    with pytest.raises(OutputError, match="must end in .pt"):
        check_output_file(tmp_path / "r.json", flag="--save-samples", suffixes=(".pt",))
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path, flag="--json")
    assert remove_stale_temps(tmp_path / "missing") == []


# --------------------------------------------------------------------------------------------------
# errors, not tracebacks
# --------------------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("argv", [
    ["sample", "--target", "ring", "--n", "4", "--device", "cuda"],
    ["likelihood", "--target", "ring", "--n", "4", "--device", "cuda"],
    ["eval", "--metric", "sw2", "--target", "ring", "--n", "4", "--device", "cuda:1"],
])
def test_missing_cuda_names_the_devices_available(argv, tmp_path, capsys):
    if argv[0] == "sample":
        argv = argv + ["--out", str(tmp_path / "o")]
    assert main(argv) == 2
    one_message(capsys, "CUDA is not available", "available here: cpu")
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_a_healthy_checkpoint_mapped_to_absent_cuda_is_not_called_corrupt(tmp_path):
    wd = tmp_path / "run"
    assert train_cli(wd) == 0
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(wd, map_location="cuda")
    assert "CUDA is not available" in str(e.value) and "corrupt" not in str(e.value) and "delete" not in str(e.value)


def test_config_errors_name_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("from configs.default import toy2d\n\ndef get_config(:\n    return toy2d('vp')\n")
    assert main(["train", "--config", str(bad), "--workdir", str(tmp_path / "w")]) == 2
    one_message(capsys, str(bad), "line 3", "invalid syntax")
    bad.write_text("def get_config():\n    return 1 / 0\n")
    assert main(["train", "--config", str(bad), "--workdir", str(tmp_path / "w")]) == 2
    one_message(capsys, "line 2", "ZeroDivisionError")
    bad.write_text("from configs.nonexistent_base import x\n\ndef get_config():\n    return x\n")
    assert main(["train", "--config", str(bad), "--workdir", str(tmp_path / "w")]) == 2
    one_message(capsys, "configs.nonexistent_base", "copy it beside the file")
    assert not (tmp_path / "w").exists()


def test_a_config_copied_outside_configs_imports_its_base(tmp_path):
    own = tmp_path / "mine"
    own.mkdir()
    shutil.copy(CONFIG, own / "toy2d.py")  # alone: the project's configs/default.py is used
    assert load_config(own / "toy2d.py").training.sde == "vp"
    (own / "default.py").write_text(  # with a copied (edited) base next to it: that copy wins
        (ROOT / "configs" / "default.py").read_text() + "\n_orig = toy2d\n\ndef toy2d(sde):\n    c = _orig(sde)\n"
        "    c.seed = 1234\n    return c\n")
    assert load_config(own / "toy2d.py").seed == 1234
    assert load_config(CONFIG).seed != 1234  # and does not leak into the project's configs
    assert "configs" not in sys.modules or "mine" not in str(getattr(sys.modules["configs"], "__path__", ""))


def test_non_checkpoint_files_get_one_line(tmp_path, capsys):
    rnd = tmp_path / "random.pt"
    rnd.write_bytes(os.urandom(4096))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    out = str(tmp_path / "o")
    for f, needle in ((rnd, "not a checkpoint"), (empty, "empty (0 bytes)")):
        assert main(["sample", "--ckpt", str(f), "--out", out, "--n", "4"]) == 2
        msg = one_message(capsys, needle)
        assert "weights_only" not in msg
    assert main(["sample", "--target", "ring", "--class", "0", "--classifier", str(rnd), "--out", out, "--n", "4"]) == 2
    one_message(capsys, "classifier", "sde-lab train-classifier")
    for f in (rnd, empty):
        assert main(["eval", "--metric", "sw2", "--samples", str(f), "--dataset", "ring"]) == 2
        msg = one_message(capsys, "--samples")
        assert "weights_only" not in msg and "In PyTorch" not in msg
    txt = tmp_path / "s.txt"
    txt.write_text("1 2")
    assert main(["eval", "--metric", "sw2", "--samples", str(txt), "--dataset", "ring"]) == 2
    one_message(capsys, ".pt, .npz or .npy")
    assert not Path(out).exists()


def test_messages_name_cli_flags_not_python_arguments(tmp_path):
    from sde_lab.checkpoints import load_official_checkpoint

    f = tmp_path / "noema.pth"
    torch.save({"model": {}, "step": 1}, f)
    with pytest.raises(CheckpointError, match="--no-ema"):
        load_official_checkpoint(f, load_config(ROOT / "configs" / "vp" / "cifar10_ddpmpp_continuous.py"))


def test_likelihood_n_larger_than_the_split_is_an_error(tmp_path, capsys):
    wd = tmp_path / "digits"
    assert main(["train", "--config", str(ROOT / "configs" / "vp" / "digits.py"), "--workdir", str(wd), "--no-progress",
                 "--set", "training.n_iters=1", "--set", "training.batch_size=4", "--set", "training.tensorboard=False",
                 "--set", "device='cpu'", "--threads", "1"]) == 0
    assert main(["likelihood", "--ckpt", str(wd), "--split", "test", "--n", "500", "--no-progress"]) == 2
    one_message(capsys, "--n 500", "has only 297 examples")


def test_log_likelihood_warns_on_data_far_outside_the_training_range(tmp_path):
    from sde_lab import log_likelihood
    from sde_lab.config import load_checkpoint_score

    wd = tmp_path / "run"
    assert train_cli(wd) == 0
    model = load_checkpoint_score(wd)
    lo, hi = model.data_range
    assert lo < -0.5 and hi > 0.5  # the ring target's samples
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.warns(UserWarning, match="far outside the range the model was trained on"):
        log_likelihood(model, x + 100 * hi, divergence="exact", rtol=1e-3, atol=1e-3)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log_likelihood(model, x, divergence="exact", rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------------------------------
# threads
# --------------------------------------------------------------------------------------------------
def test_threads_follow_the_model_size_and_the_flag(monkeypatch):
    from types import SimpleNamespace

    from sde_lab.cli._common import set_threads

    n = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert set_threads(SimpleNamespace(threads=None), 10_000) == 1
        assert torch.get_num_threads() == 1
        cores = len(os.sched_getaffinity(0))
        assert set_threads(SimpleNamespace(threads=None), 50_000_000) == cores
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores))
        assert set_threads(SimpleNamespace(threads=None), 50_000_000) == 1
        assert set_threads(SimpleNamespace(threads=3), 10) == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(2)
        assert set_threads(SimpleNamespace(threads=None), 10) == 2
    finally:
        torch.set_num_threads(n)
