"""No lost work: a workdir belongs to one run, one writer at a time, outputs checked before the work starts.

A training workdir holds ``run.json`` (the run's identity: config, its hash, seed, start time, host) and,
while a process writes into it, ``.sde_lab.lock`` (pid, host, command; held with ``fcntl.flock``, so the lock of a
process that died is free again and is reported as stale). :func:`claim_workdir` is what a trainer calls
before its first step:

* a fresh run into a folder that holds checkpoints is refused (``--resume`` continues it, ``--overwrite``
  moves the old run aside to ``<workdir>.old-<time>``);
* ``--resume`` of a folder without checkpoints is refused unless asked to start then (``--resume-or-start``);
* ``--resume`` with a config that differs in anything but the schedule (:data:`RESUME_FREE_KEYS`) is
  refused with the differing keys;
* the folder must be creatable and writable, checked by writing into it.

Every output of the command line (``sample --out``, ``eval --save-samples`` / ``--json``, ...) goes
through :func:`check_output_dir` / :func:`check_output_file` before any sampling: a file where a folder is
meant, a path under a file, a read-only folder, a training checkpoint or a run's workdir, or an existing
output without ``--overwrite`` are refused there. Files are written with :func:`atomic_write` (temporary
file in the same folder + ``os.replace``); :func:`remove_stale_temps` deletes the temporary files of
processes that were killed.

Messages name command-line flags; :class:`OutputError` is a ``ValueError``, so the CLI prints it as one
line.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "OutputError",
    "RunLocked",
    "WorkdirLock",
    "RESUME_FREE_KEYS",
    "claim_workdir",
    "config_differences",
    "config_hash",
    "lock_holder",
    "is_workdir",
    "is_training_checkpoint",
    "check_output_dir",
    "check_output_file",
    "atomic_write",
    "remove_stale_temps",
]

RUN_FILE = "run.json"
LOCK_FILE = ".sde_lab.lock"

# config keys a resumed run may change: when and how often things happen, not what is trained
RESUME_FREE_KEYS = (
    "training.n_iters", "training.snapshot_freq", "training.log_freq", "training.sample_freq",
    "training.keep_checkpoints", "training.n_grid_samples", "training.tensorboard", "training.num_workers",
    "device", "sampling.*", "eval.*",
)


class OutputError(ValueError):
    """An output or workdir that would lose work or fail late; the message says what to do."""


class RunLocked(OutputError):
    """Another live process writes into this workdir."""


# --------------------------------------------------------------------------------------------------
# identity
# --------------------------------------------------------------------------------------------------
def _canonical(d: Any) -> str:
    return json.dumps(d, sort_keys=True, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o))


def config_hash(config: dict) -> str:
    """A short hash of a config dict (key order does not matter)."""
    return hashlib.sha256(_canonical(config).encode()).hexdigest()[:16]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _free(key: str, free) -> bool:
    return any(key == f or (f.endswith(".*") and key.startswith(f[:-1])) for f in free)


def config_differences(old: dict, new: dict, free=RESUME_FREE_KEYS) -> list[str]:
    """``key: old -> new`` for every dotted key that differs, ignoring the keys in ``free``."""
    a, b = _flatten(json.loads(_canonical(old))), _flatten(json.loads(_canonical(new)))
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in keys
            if a.get(k, "<absent>") != b.get(k, "<absent>") and not _free(k, free)]


# --------------------------------------------------------------------------------------------------
# atomic writes and temporary files
# --------------------------------------------------------------------------------------------------
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)$")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def atomic_write(path, write: Callable[[Any], None]) -> Path:
    """Write ``path`` through ``write(binary file)`` atomically (temporary file beside it + ``os.replace``): a crash
    leaves the old file or the new one, never half of one; :func:`remove_stale_temps` cleans up after a SIGKILL."""
    from .training.checkpoint import atomic_write as _atomic

    return _atomic(path, write)


def remove_stale_temps(folder) -> list[Path]:
    """Delete ``.<name>.tmp<pid>`` files in ``folder`` whose process is gone (killed mid-write); returns them."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP_RE.match(p.name)
        if m and p.is_file() and not _pid_alive(int(m.group("pid"))):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


# --------------------------------------------------------------------------------------------------
# the lock
# --------------------------------------------------------------------------------------------------
def _read_holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(h: dict) -> str:
    return f"pid {h.get('pid', '?')} on {h.get('host', '?')} since {h.get('started', '?')} ({h.get('command', '?')})"


class WorkdirLock:
    """An exclusive lock on a workdir: ``.sde_lab.lock`` with the holder's pid, host and command.

    Taken with ``fcntl.flock`` (released by the kernel when the holder exits or is killed, so a lock file
    left behind by a dead process is taken over and reported as stale); where ``fcntl`` is missing, with
    ``O_EXCL`` and a check that the recorded pid still lives on this host.
    """

    def __init__(self, workdir, command: str | None = None):
        self.path = Path(workdir) / LOCK_FILE
        self.command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]
        self._fd: int | None = None
        self.stale: dict | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "WorkdirLock":
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
              "started": _dt.datetime.now().isoformat(timespec="seconds")}
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            fcntl = None
        if fcntl is not None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RunLocked(self._locked_message(_read_holder(self.path))) from None
            previous = _read_holder(self.path)
            if previous.get("pid") and previous.get("pid") != os.getpid():
                self.stale = previous
        else:  # pragma: no cover
            while True:
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                    break
                except FileExistsError:
                    h = _read_holder(self.path)
                    if h.get("host") == me["host"] and not _pid_alive(int(h.get("pid", 0))):
                        self.stale = h
                        self.path.unlink(missing_ok=True)
                        continue
                    raise RunLocked(self._locked_message(h)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def _locked_message(self, h: dict) -> str:
        return (f"{self.path.parent} is in use by another sde-lab process: {_describe(h)}. Wait for it to finish, "
                f"stop it (kill {h.get('pid', '<pid>')}), or use another --workdir")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def __del__(self):  # pragma: no cover - interpreter shutdown
        try:
            self.release()
        except Exception:
            pass


def lock_holder(workdir) -> dict | None:
    """The holder of ``workdir``'s lock if a live process holds it, else ``None``."""
    path = Path(workdir) / LOCK_FILE
    if not path.is_file():
        return None
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        h = _read_holder(path)
        return h if _pid_alive(int(h.get("pid", 0))) else None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_holder(path) or {"pid": "?"}
    finally:
        os.close(fd)
    return None


# --------------------------------------------------------------------------------------------------
# what a path is
# --------------------------------------------------------------------------------------------------
_CKPT_RE = re.compile(r"^checkpoint_\d+\.pt$")


def is_workdir(path) -> bool:
    """A training run's folder: it has sde_lab's ``run.json``, its lock, or ``checkpoints/checkpoint_<step>.pt``."""
    p = Path(path)
    if not p.is_dir():
        return False
    if (p / LOCK_FILE).is_file() or _read_run(p).get("format") == "sde_lab.run/1":
        return True
    ck = p / "checkpoints"
    return ck.is_dir() and any(_CKPT_RE.match(q.name) for q in ck.iterdir())


def is_training_checkpoint(path) -> bool:
    """An sde_lab training checkpoint (or the ``latest`` pointer / a file in a run's ``checkpoints/``)."""
    p = Path(path)
    if not p.is_file():
        return False
    if p.parent.name == "checkpoints" and (_CKPT_RE.match(p.name) or p.name == "latest"):
        return True
    if p.name == RUN_FILE and is_workdir(p.parent):
        return True
    try:
        import zipfile

        if not zipfile.is_zipfile(p):
            return False
        import torch

        from .training.checkpoint import CHECKPOINT_FORMAT

        obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT
    except Exception:
        return False


def _inside_workdir(p: Path) -> Path | None:
    for a in [p, *p.parents]:
        if is_workdir(a):
            return a
    return None


def _first_existing(p: Path) -> Path:
    for a in [p, *p.parents]:
        if a.exists():
            return a
    return Path("/")


def _probe_writable(folder: Path, flag: str) -> None:
    try:
        fd, name = tempfile.mkstemp(prefix=".sde_lab_probe", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise OutputError(f"{flag} {folder} is not writable ({e.strerror}); choose a folder you can write to, "
                          "or fix its permissions (chmod u+w)") from None


def _check_parent_chain(p: Path, flag: str, folder: bool = True) -> Path:
    """The nearest existing ancestor of folder ``p`` (of a file ``p``: of its folder), checked to be a writable folder."""
    anc = _first_existing(p if folder else p.parent)
    if anc.exists() and not anc.is_dir():
        raise OutputError(f"{flag} {p} lies under {anc}, which is a file, not a folder; choose another path")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {p}: {anc} is not writable; choose a folder you can write to")
    return anc


def check_output_dir(path, *, flag: str = "--out", outputs=(), overwrite: bool = False, create: bool = False) -> Path:
    """Check an output folder before any work: not a file, not under a file, writable, not a run's workdir,
    and none of ``outputs`` (file names in it) present unless ``overwrite``. Nothing is created unless
    ``create`` (the caller makes the folder when it writes, so a command that fails leaves nothing behind)."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputError(f"{flag} {p} is a file; {flag} names a folder (give a new folder name)")
    _check_parent_chain(p, flag)
    wd = _inside_workdir(p)
    if wd is not None:
        holder = lock_holder(wd)
        who = f" (in use by {_describe(holder)})" if holder else ""
        raise OutputError(f"{flag} {p} is inside the training workdir {wd}{who}; write outputs to a folder of their own, "
                          f"e.g. {flag} {wd.parent / (wd.name + '_samples')}")
    present = [name for name in outputs if (p / name).exists()]
    if present and not overwrite:
        raise OutputError(f"{flag} {p} already holds {', '.join(present)}; pass --overwrite to replace them or choose another {flag}")
    # writable: probed where the files will go, or at the nearest existing ancestor (created at write time)
    _probe_writable(p if p.is_dir() else _first_existing(p), flag)
    if create:
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create {flag} {p} ({e.strerror}); choose a folder you can write to") from None
        remove_stale_temps(p)
    return p


def check_output_file(path, *, flag: str, overwrite: bool = False, suffixes=None, create_parent: bool = False) -> Path:
    """Check an output file before any work: not a folder, not a training checkpoint or run file, parent
    creatable and writable, no existing file unless ``overwrite``, suffix in ``suffixes`` if given."""
    p = Path(path).expanduser()
    if suffixes and p.suffix not in suffixes:
        raise OutputError(f"{flag} {p} must end in {' or '.join(suffixes)}")
    if p.is_dir():
        raise OutputError(f"{flag} {p} is a folder; {flag} names a file")
    if p.exists() and is_training_checkpoint(p):
        raise OutputError(f"{flag} {p} is a training checkpoint (or a run's file); writing there would destroy it; "
                          "choose another file name")
    wd = _inside_workdir(p.parent)
    if wd is not None and (p.parent.name == "checkpoints" or lock_holder(wd)):
        raise OutputError(f"{flag} {p} is inside the training workdir {wd}"
                          + (f", in use by {_describe(lock_holder(wd))}" if lock_holder(wd) else "")
                          + "; choose a path outside it")
    if p.exists() and not overwrite:
        raise OutputError(f"{flag} {p} already exists; pass --overwrite to replace it or choose another file name")
    _check_parent_chain(p, flag, folder=False)
    _probe_writable(p.parent if p.parent.is_dir() else _first_existing(p.parent), flag)
    if create_parent:
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create the folder of {flag} {p} ({e.strerror})") from None
        remove_stale_temps(p.parent)
    return p


# --------------------------------------------------------------------------------------------------
# claiming a workdir for a run
# --------------------------------------------------------------------------------------------------
def _has_checkpoints(workdir: Path) -> bool:
    ck = workdir / "checkpoints"
    return ck.is_dir() and any(_CKPT_RE.match(q.name) for q in ck.iterdir())


def _stored_config(workdir: Path) -> dict | None:
    run = workdir / RUN_FILE
    if run.is_file():
        try:
            return json.loads(run.read_text()).get("config")
        except ValueError:
            return None
    return None


def claim_workdir(workdir, *, config: dict, seed: int, resume: bool | str = False, overwrite: bool = False,
                  lock: bool = True, command: str | None = None) -> tuple[str, WorkdirLock | None, list[str]]:
    """Take ``workdir`` for a run before its first step; returns ``(mode, lock, notes)``.

    ``mode`` is ``"fresh"`` or ``"resume"``. ``resume``: ``False`` (a fresh run; refused if the folder holds
    checkpoints unless ``overwrite``, which moves the old run to ``<workdir>.old-<time>``), ``True`` (continue;
    refused if there is nothing to continue or the config differs outside :data:`RESUME_FREE_KEYS`) or
    ``"auto"`` (continue if there is a checkpoint, else start). ``config`` is the run's config dict (``{}`` for
    a run built from objects: only the seed is compared). The lock is held until ``lock.release()``.
    """
    wd = Path(workdir).expanduser()
    notes: list[str] = []
    if wd.exists() and not wd.is_dir():
        raise OutputError(f"--workdir {wd} is a file; --workdir names a folder")
    _check_parent_chain(wd, "--workdir")
    if resume is True and not _has_checkpoints(wd):
        raise OutputError(f"--resume: {wd} holds no checkpoint to resume from (is the --workdir spelled right?); "
                          "drop --resume to start a fresh run there, or pass --resume-or-start")
    try:
        wd.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create --workdir {wd} ({e.strerror}); choose a folder you can write to") from None
    _probe_writable(wd, "--workdir")
    held = WorkdirLock(wd, command).acquire() if lock else None
    try:
        if held is not None and held.stale:
            notes.append(f"note: took over a stale lock of {_describe(held.stale)}, which is no longer running")
        has = _has_checkpoints(wd)
        if resume is True and not has:
            raise OutputError(f"--resume: {wd} holds no checkpoint to resume from (is the --workdir spelled right?); "
                              "drop --resume to start a fresh run there, or pass --resume-or-start")
        mode = "resume" if (resume and has) else "fresh"
        if mode == "fresh" and has:
            if not overwrite:
                raise OutputError(f"--workdir {wd} already holds a run ({_run_summary(wd)}); pass --resume to continue it, "
                                  "--overwrite to move it aside and start afresh, or choose another --workdir")
            aside = _move_aside(wd, held)
            notes.append(f"note: moved the previous run in {wd} to {aside}")
        if mode == "resume":
            old = _stored_config(wd)
            if old is None:
                old = _checkpoint_config(wd)
            if old is not None and (old or config):
                diff = config_differences(old, config)
                if diff:
                    raise OutputError(
                        f"--resume: the config differs from the run in {wd} in {len(diff)} key(s) that change what is trained: "
                        + "; ".join(diff[:8]) + (" ..." if len(diff) > 8 else "")
                        + ". Resume with the original config (only the schedule may change: "
                        + ", ".join(RESUME_FREE_KEYS) + "), or start a new run in another --workdir")
            run = _read_run(wd)
            if run and "seed" in run and int(run["seed"]) != int(seed):
                raise OutputError(f"--resume: the run in {wd} has seed {run['seed']}, this command seed {seed}; "
                                  "resume with the original seed or start a new run in another --workdir")
        ck = wd / "checkpoints"
        removed = remove_stale_temps(ck) + remove_stale_temps(wd)
        if removed:
            notes.append(f"note: removed {len(removed)} temporary file(s) left by a killed process: "
                         + ", ".join(p.name for p in removed[:5]))
        if mode == "fresh":
            record = {"format": "sde_lab.run/1", "config_hash": config_hash(config), "seed": int(seed),
                      "started": _dt.datetime.now().isoformat(timespec="seconds"), "host": socket.gethostname(),
                      "command": held.command if held is not None else (command or ""), "config": config}
            atomic_write(wd / RUN_FILE, lambda f: f.write(json.dumps(record, indent=1, default=str).encode()))
        return mode, held, notes
    except BaseException:
        if held is not None:
            held.release()
        raise


def _read_run(wd: Path) -> dict:
    try:
        return json.loads((wd / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _run_summary(wd: Path) -> str:
    from .training.checkpoint import checkpoint_steps

    steps = checkpoint_steps(wd / "checkpoints")
    run = _read_run(wd)
    bits = [f"checkpoints at steps {', '.join(map(str, steps[-4:]))}" if steps else "no checkpoint yet"]
    if run:
        bits.append(f"seed {run.get('seed')}, started {run.get('started')}")
    return "; ".join(bits)


def _checkpoint_config(wd: Path) -> dict | None:
    from .training.checkpoint import latest_checkpoint

    p = latest_checkpoint(wd)
    if p is None:
        return None
    try:
        import torch

        state = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        return json.loads(state.get("config", "{}"))
    except Exception:
        return None


def _move_aside(wd: Path, held: WorkdirLock | None) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = wd.with_name(f"{wd.name}.old-{stamp}")
    k = 1
    while aside.exists():
        aside = wd.with_name(f"{wd.name}.old-{stamp}-{k}")
        k += 1
    aside.mkdir()
    for item in list(wd.iterdir()):
        if item.name == LOCK_FILE:
            continue
        shutil.move(str(item), str(aside / item.name))
    return aside
