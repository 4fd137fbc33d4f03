"""RecBole's multi-process path (``run_recbole.py --nproc=2``) for M6Rec on the CPU with gloo.

Full-batch training (one batch per epoch) makes the single-process and the two-process run take the same gradient
steps up to how the two ranks split the windows, so their losses agree closely; the item encoding, sharded across
ranks and gathered, must equal the single-process encoding.
"""

import re
import socket
import subprocess
import sys

import torch
from helpers import REPO

ARGS = [
    "--model=M6Rec",
    "--dataset=ml-100k",
    "--plm_name_or_path=tiny-random-llama",
    "--user_inter_num_interval=[0,30]",
    "--MAX_ITEM_LIST_LENGTH=10",
    "--epochs=2",
    "--train_batch_size=1024",
    "--learning_rate=0.01",
    # no ID dropout: its draws differ between one process and two ranks, and the losses are compared to 1%
    "--item_id_dropout=0.0",
    "--eval_history_mask=all",
    "--show_progress=False",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def run_script(tmp_path, name, *extra):
    folder = tmp_path / name
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, str(REPO / "run_recbole.py"), *ARGS, f"--text_cache_dir={folder / 'cache'}", *extra],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    output = done.stdout + done.stderr
    losses = [float(x) for x in re.findall(r"train loss: ([0-9.]+)", output)]
    return folder, output, losses


def items_cache(folder):
    (path,) = (folder / "cache" / "segments").glob("items-*.pt")
    return torch.load(path, weights_only=True)["tensors"]


def test_two_cpu_processes_train_in_sync_like_one(tmp_path):
    ddp_folder, ddp_out, ddp_losses = run_script(tmp_path, "ddp", "--nproc=2", f"--port={free_port()}")
    one_folder, _, one_losses = run_script(tmp_path, "single")
    assert "ranks in sync: trainable parameters identical on all 2 processes" in ddp_out
    assert "encoded 1683 items through" in ddp_out and "(2 processes)" in ddp_out
    assert "test result" in ddp_out
    # rank 0 reports the loss of its half of the windows; the two halves share one averaged gradient step
    assert len(ddp_losses) == len(one_losses) == 2
    for ddp_loss, one_loss in zip(ddp_losses, one_losses):
        assert abs(ddp_loss - one_loss) / one_loss < 0.01, (ddp_losses, one_losses)
    sharded, whole = items_cache(ddp_folder), items_cache(one_folder)
    assert torch.equal(sharded["mask"], whole["mask"])
    assert torch.allclose(sharded["states"], whole["states"], atol=1e-5)
