"""``evalkit info``: what a checkpoint holds, and what datasets/archs/defenses/attacks exist.

Reading a checkpoint never builds the model or touches data, so it answers instantly and
works for files from other machines (``--json`` for scripts).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

DESCRIPTION = """\
Describe a checkpoint (architecture, dataset, normalization, defense, training config and
history), or list the datasets, architectures, defense plugins, attacks and evaluation presets
this evalkit knows. Without options it lists everything.
"""

SECTIONS = ("datasets", "archs", "defenses", "attacks", "presets")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "info",
        help="describe a checkpoint, the datasets, architectures and attacks",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  evalkit info --ckpt runs/at/checkpoint.pt\n  evalkit info --attacks\n"
        "  evalkit info --json --presets",
    )
    p.add_argument(
        "--ckpt",
        default=None,
        metavar="PATH",
        help="checkpoint to describe (default: none; list what evalkit knows instead)",
    )
    for s in SECTIONS:
        p.add_argument(f"--{s}", action="store_true", help=f"list the {s}")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


def describe_checkpoint(path: str) -> dict[str, Any]:
    """The checkpoint's metadata; a plain foreign state_dict is reported as such."""
    from evalkit.checkpoint import FORMAT, find_state_dict, read_checkpoint_file, read_meta

    obj = read_checkpoint_file(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        meta = read_meta(obj, path).describe()
        meta["n_parameters"] = int(sum(v.numel() for v in obj["state_dict"].values()))
        meta["evalkit_version"] = obj.get("evalkit_version")
        meta["created"] = obj.get("created")
        return meta
    state = find_state_dict(obj)
    if state is None:
        from evalkit.errors import CheckpointError

        raise CheckpointError(f"{path} holds neither an evalkit checkpoint nor a state_dict")
    return {
        "path": str(path),
        "foreign": True,
        "n_tensors": len(state),
        "n_parameters": int(sum(v.numel() for v in state.values())),
        "first_keys": list(state)[:8],
        "hint": "plain state_dict: evaluate it with --arch and --dataset (and --normalize)",
    }


def listing(section: str) -> list[dict[str, Any]]:
    """Rows for one section of the listing."""
    if section == "datasets":
        from evalkit.data import DATASETS

        return [
            {
                "name": d.name,
                "classes": d.num_classes,
                "shape": [d.in_channels, d.input_size, d.input_size],
            }
            for d in DATASETS.values()
        ]
    if section == "archs":
        from evalkit.models import ARCHS

        return [{"name": a} for a in ARCHS]
    if section == "defenses":
        from evalkit.defenses.registry import get_plugin
        from evalkit.defenses.spec import OBJECTIVES, PLUGINS
        from evalkit.errors import EvalkitError

        rows = [{"name": o, "kind": "objective"} for o in OBJECTIVES]
        for name in PLUGINS:
            try:
                pl = get_plugin(name)
                rows.append(
                    {
                        "name": name,
                        "kind": "plugin",
                        "summary": pl.summary,
                        "test_time_only": pl.test_time_only,
                        "defaults": pl.defaults,
                    }
                )
            except EvalkitError:
                rows.append({"name": name, "kind": "plugin", "summary": "(not available)"})
        return rows
    if section == "attacks":
        from evalkit.attacks.registry import aliases_of, attack_names, get_attack

        return [
            {
                "name": s.name,
                "aliases": aliases_of(s.name)[1:],
                "norms": list(s.norms),
                "white_box": s.white_box,
                "description": s.description,
            }
            for s in (get_attack(name) for name in attack_names())
        ] + [
            {
                "name": "foolbox:AttackName",
                "norms": [],
                "description": "any Foolbox 3 attack by name",
            }
        ]
    if section == "presets":
        from evalkit.evaluation.protocol import PRESETS

        return [
            {
                "name": p.name,
                "eps": p.eps,
                "norm": p.norm,
                "description": p.description,
                "attacks": [a.id for a in p.attacks],
            }
            for p in PRESETS.values()
        ]
    raise ValueError(section)


def _text_row(row: dict[str, Any]) -> str:
    name = row["name"]
    rest = {k: v for k, v in row.items() if k != "name" and v not in (None, "", [], {})}
    desc = rest.pop("description", None) or rest.pop("summary", None)
    extra = ", ".join(f"{k}={v}" for k, v in rest.items())
    return f"  {name:<20} {desc or ''}{'  [' + extra + ']' if extra else ''}"


def run(args: argparse.Namespace) -> int:
    out: dict[str, Any] = {}
    if args.ckpt:
        out["checkpoint"] = describe_checkpoint(args.ckpt)
    chosen = [s for s in SECTIONS if getattr(args, s)]
    if not chosen and not args.ckpt:
        chosen = list(SECTIONS)
    for s in chosen:
        out[s] = listing(s)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    if "checkpoint" in out:
        print("checkpoint:")
        for k, v in out["checkpoint"].items():
            if k == "history":
                print(f"  {'history':<16} {len(v)} epochs" + (f", last: {v[-1]}" if v else ""))
            else:
                print(f"  {k:<16} {v}")
    for s in chosen:
        print(f"{s}:")
        for row in out[s]:
            print(_text_row(row))
    return 0
