"""``--resume`` after a kill and ``torchrun`` sharding give the same summary.json as one
uninterrupted process (wall-clock fields and the world size aside); a run directory is bound to
the contents of its checkpoint and data, so resuming after either changed is refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import one_line

from evalkit import __version__
from evalkit.checkpoint import load_model, save_checkpoint
from evalkit.cli import main
from evalkit.data import load_split
from evalkit.errors import EvalkitError
from evalkit.evaluation import evaluate

ARGS = [
    "--preset",
    "fast",
    "--attacks",
    "fgsm,pgd",
    "--eps",
    "8/255,4/255",
    "--n-examples",
    "64",
    "--batch-size",
    "8",
    "--seed",
    "11",
    "--no-sanity",
    "--no-progress",
    "--device",
    "cpu",
]
N_UNITS = 8 * (1 + 2 * 2)  # batches x (clean + attacks x eps)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = (
        str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    )
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "evalkit", "attack", *args]


def comparable(summary: dict) -> dict:
    """The summary without what legitimately differs between runs (time, world size)."""
    s = json.loads(json.dumps(summary))

    def drop_times(obj):
        if isinstance(obj, dict):
            return {k: drop_times(v) for k, v in obj.items() if not k.endswith("time_s")}
        return obj

    s["cost"] = drop_times(s["cost"])
    s["cost"].pop("estimate", None)  # what each process forecast from the batches it saw
    # passes outside the records are this process's own (a resume skips the batch-size probe);
    # the records' parts (clean, protocol, probes, ...) stay compared
    for key in ("unrecorded", "forward_passes", "backward_passes"):
        s["cost"].pop(key, None)
    s["environment"].pop("world_size", None)
    return s


def _count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.exists() else 0


@pytest.fixture(scope="module")
def reference(ev_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    subprocess.run(
        _cli("--ckpt", ev_ckpt, "--out", str(out), *ARGS),
        check=True,
        env=_env(),
        capture_output=True,
        timeout=300,
    )
    return out


def test_resume_after_kill_matches_uninterrupted(ev_ckpt, reference, tmp_path):
    out = tmp_path / "run"
    records = out / "records" / "rank0.jsonl"
    proc = subprocess.Popen(
        _cli("--ckpt", ev_ckpt, "--out", str(out), *ARGS),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    try:
        while _count_lines(records) < 16 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done = _count_lines(records)
    if proc.returncode == 0 or done >= N_UNITS:
        pytest.skip("the run finished before it could be killed (machine too fast)")
    assert not (out / "summary.json").exists()
    assert 0 < done < N_UNITS
    res = subprocess.run(
        _cli("--ckpt", ev_ckpt, "--out", str(out), "--resume", *ARGS),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    resumed = json.loads((out / "summary.json").read_text())
    ref = json.loads((reference / "summary.json").read_text())
    assert comparable(resumed) == comparable(ref)
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "examples.parquet"), pd.read_parquet(reference / "examples.parquet")
    )
    # the resumed process redid at most the one unit the kill interrupted
    assert _count_lines(records) <= N_UNITS + 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_match_one(ev_ckpt, reference, tmp_path):
    out = tmp_path / "dist"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",
        "evalkit",
        "attack",
        "--ckpt",
        ev_ckpt,
        "--out",
        str(out),
        *ARGS,
    ]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    sharded = json.loads((out / "summary.json").read_text())
    ref = json.loads((reference / "summary.json").read_text())
    assert sharded["environment"]["world_size"] == 2
    assert comparable(sharded) == comparable(ref)
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "examples.parquet"), pd.read_parquet(reference / "examples.parquet")
    )
    # both ranks did work: each wrote its own records
    assert _count_lines(out / "records" / "rank0.jsonl") > 0
    assert _count_lines(out / "records" / "rank1.jsonl") > 0


# ------------------------------------------------------------- resume bound to contents


QUIET = {"progress": False, "echo": False, "device": "cpu", "sanity": False}


def _partial(out: Path, keep: int) -> None:
    """Make a finished run directory look killed: drop the results and all but ``keep`` of its
    records (the tail of the last kept line torn, as a kill mid-write leaves it)."""
    (out / "summary.json").unlink()
    (out / "examples.parquet").unlink()
    records = out / "records" / "rank0.jsonl"
    lines = records.read_text().splitlines()
    assert len(lines) > keep
    records.write_text("\n".join(lines[:keep]) + "\n" + lines[keep][: len(lines[keep]) // 2])


def _other_weights(src: str, dst: Path, seed: int) -> None:
    """Write to ``dst`` the architecture of checkpoint ``src`` with different weights."""
    model, meta = load_model(src)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(dst, model, dataset=meta.dataset, input_size=meta.input_size)


def test_resume_after_the_checkpoint_changed_is_refused(ev_ckpt, tmp_path, one_thread):
    """Issue 10: kill, overwrite checkpoint.pt with other weights (the trainer does this every
    epoch), resume -> a one-line error naming the changed weights, never mixed numbers."""
    ckpt = tmp_path / "train" / "checkpoint.pt"
    ckpt.parent.mkdir()
    shutil.copy(ev_ckpt, ckpt)
    out = tmp_path / "run"
    kw = dict(attacks="fgsm", n=16, batch_size=8, out=out, **QUIET)
    evaluate(ckpt, **kw)
    _partial(out, keep=2)
    _other_weights(ev_ckpt, ckpt, seed=3)
    with pytest.raises(EvalkitError) as info:
        evaluate(ckpt, resume=True, **kw)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1 and f"cannot resume {out}" in msg
    assert "the model's weights changed" in msg and "the checkpoint file's bytes changed" in msg
    assert not (out / "summary.json").exists()
    # the same weights back: the interrupted run resumes and finishes
    shutil.copy(ev_ckpt, ckpt)
    assert evaluate(ckpt, resume=True, **kw).summary["n_examples"] == 16


def test_resume_after_the_checkpoint_changed_via_the_cli(ev_ckpt, tmp_path, capsys, one_thread):
    ckpt = tmp_path / "checkpoint.pt"
    shutil.copy(ev_ckpt, ckpt)
    out = tmp_path / "run"
    argv = ["attack", "--ckpt", str(ckpt), "--out", str(out), *ARGS[:4], "--n", "16"]
    argv += ["--batch-size", "8", "--no-sanity", "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    _partial(out, keep=3)
    _other_weights(ev_ckpt, ckpt, seed=4)
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert one_line(err), err
    assert "cannot resume" in err and "weights changed" in err


def test_resume_after_the_data_file_changed_is_refused(ev_ckpt, tmp_path, one_thread):
    split = load_split("fashion-mnist-mini", "test").first(32)
    x, y = split.x.numpy(), split.y.numpy()
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=y)
    out = tmp_path / "run"
    kw = dict(attacks="fgsm", n=16, batch_size=8, out=out, **QUIET)
    evaluate(ev_ckpt, data, **kw)
    _partial(out, keep=2)
    x2 = x.copy()
    x2[:16] = 255 - x2[:16]  # same file name, same shape, other images
    np.savez(data, x=x2, y=y)
    with pytest.raises(EvalkitError) as info:
        evaluate(ev_ckpt, data, resume=True, **kw)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1
    assert "the evaluation data (x, y) changed" in msg and "the data file's bytes changed" in msg
    # only points beyond n changed: the evaluated tensors are equal but the file is not
    x3 = x.copy()
    x3[20:] = 0
    np.savez(data, x=x3, y=y)
    with pytest.raises(EvalkitError, match="the data file's bytes changed"):
        evaluate(ev_ckpt, data, resume=True, **kw)


def test_config_records_the_fingerprints_and_versions(ev_ckpt, tmp_path, one_thread):
    out = tmp_path / "run"
    evaluate(ev_ckpt, attacks="fgsm", n=8, out=out, **QUIET)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["checkpoint_sha256"] == hashlib.sha256(Path(ev_ckpt).read_bytes()).hexdigest()
    assert len(cfg["model_sha256"]) == 64 and len(cfg["data_sha256"]) == 64
    assert cfg["evalkit_version"] == __version__ and cfg["torch_version"] == torch.__version__
