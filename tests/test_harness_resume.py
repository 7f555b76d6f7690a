"""``--resume`` after a kill and ``torchrun`` sharding give the same summary.json as one
uninterrupted process (wall-clock fields and the world size aside)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

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
    for key in ("wall_time_s", "attack_time_s"):
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
