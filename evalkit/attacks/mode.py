"""The model state an attack needs (eval mode, no weight gradients, autograd on), set for one
attack and given back module by module: :func:`attack_mode`, defined in
:mod:`evalkit.utils.mode` (below the attack registry, which applies it to every registered
attack) and re-exported here, where users look for it.
"""

from evalkit.utils.mode import attack_mode, check_parameters, model_mode

__all__ = ["attack_mode", "check_parameters", "model_mode"]
