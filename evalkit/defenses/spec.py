"""The defense SPEC grammar, parsed in one place.

``SPEC := [objective] ("+" plugin)*`` e.g. ``standard``, ``at``, ``trades+cas``, ``at+he``,
``sap``, ``jpeg``. The objective (training loss) defaults to ``standard``; plugins are model transforms
(with optional extra losses) registered in :mod:`evalkit.defenses.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evalkit.errors import EvalkitError

OBJECTIVES = ("standard", "at", "trades", "mart")
OBJECTIVE_ALIASES = {
    "pgd_at": "at",
    "pgd-at": "at",
    "madry": "at",
    "pgdat": "at",
    "none": "standard",
    "natural": "standard",
    "clean": "standard",
}
# built in: evalkit/defenses/<name>.py (the last four apply to any model at test time)
PLUGINS = ("cas", "cifs", "he", "sap", "rcm", "bitdepth", "jpeg", "median", "bpda")
#: plugins registered at run time (``evalkit.defenses.registry.register``), e.g. by a user's
#: own module: a new defense is one module that registers itself (docs/extending.md)
REGISTERED: set[str] = set()


@dataclass(frozen=True)
class DefenseSpec:
    """A parsed SPEC: the training objective, the plugins in order, and their parameters."""

    objective: str = "standard"
    plugins: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict, compare=False)

    def __str__(self) -> str:
        if not self.plugins:
            return self.objective
        if self.objective == "standard":
            return "+".join(self.plugins)
        return "+".join((self.objective, *self.plugins))

    @property
    def adversarial(self) -> bool:
        """Whether training crafts adversarial examples."""
        return self.objective in ("at", "trades", "mart")

    def with_plugin(self, name: str) -> DefenseSpec:
        """This spec plus one more plugin (e.g. ``sap`` applied at test time)."""
        if name in self.plugins:
            return self
        return DefenseSpec(self.objective, (*self.plugins, name), dict(self.params))


def parse_spec(text: str | DefenseSpec | None, params: dict[str, Any] | None = None) -> DefenseSpec:
    """Parse ``"trades+cas"``; unknown parts give an error listing the known ones."""
    if isinstance(text, DefenseSpec):
        return text
    tokens = [t.strip().lower() for t in str(text or "standard").split("+") if t.strip()]
    if not tokens:
        raise EvalkitError("empty --defense (use e.g. standard, at, trades+cas)")
    objective = "standard"
    plugins: list[str] = []
    for i, tok in enumerate(tokens):
        tok = OBJECTIVE_ALIASES.get(tok, tok)
        if tok in OBJECTIVES:
            if i != 0:
                raise EvalkitError(
                    f"objective {tok!r} must come first in --defense {text!r} (e.g. at+cas)"
                )
            objective = tok
        elif tok in PLUGINS or tok in REGISTERED:
            if tok in plugins:
                raise EvalkitError(f"plugin {tok!r} appears twice in --defense {text!r}")
            plugins.append(tok)
        else:
            raise EvalkitError(
                f"unknown defense part {tok!r} in {text!r} (objectives: {', '.join(OBJECTIVES)}; "
                f"plugins: {', '.join(sorted({*PLUGINS, *REGISTERED}))})"
            )
    if "cas" in plugins and "cifs" in plugins:
        raise EvalkitError("cas and cifs both mask the same blocks; pick one")
    return DefenseSpec(objective, tuple(plugins), dict(params or {}))
