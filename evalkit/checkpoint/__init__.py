"""Self-describing checkpoints.

One ``.pt`` file holding only tensors and plain values, read with
``torch.load(weights_only=True)`` so a hostile pickle is refused without running anything.
It records everything needed to rebuild the (defended) model: ``evalkit attack --ckpt x.pt``
needs no other flag. A plain foreign ``state_dict`` loads with ``arch``/``dataset`` given.

Loading is strict and refuses, with one line naming the fix:

* weights holding NaN/inf (the tensor is named);
* keys that do not match the architecture. Wrapper prefixes (``module.`` from DataParallel/DDP,
  ``_orig_mod.`` from ``torch.compile``, ``model.`` from Lightning-style wrappers), in any
  nesting and order, are removed *only where removing them makes a key match* the
  architecture, so a real submodule called ``model`` keeps its name;
* ``normalize`` given for an evalkit checkpoint that records a different normalization (it
  would silently change the model); ``force_normalize=True`` overrides.

A model built outside evalkit's registry (``pkg.module:factory``) is saved as an *external*
checkpoint: its ``state_dict`` plus what is known (shape, normalization, the factory string as
a note). Loading it needs the same factory, given explicitly
(``load_any("pkg.module:factory", ckpt=path)``): the factory named in a file is never imported
automatically, since that would let a checkpoint choose code to run.
"""

from evalkit.checkpoint.build import (
    expand_normalization,
    load_model,
    model_from_object,
    same_normalization,
)
from evalkit.checkpoint.format import (
    EXTERNAL,
    FORMAT,
    FORMAT_VERSION,
    REQUIRED_KEYS,
    CheckpointMeta,
    bare_module,
    external_note,
    read_checkpoint_file,
    read_meta,
    save_checkpoint,
)
from evalkit.checkpoint.state_dict import (
    WRAPPER_PREFIXES,
    adapt_foreign_state_dict,
    check_finite,
    classifier_rows,
    find_state_dict,
    load_weights_into,
    strip_wrapper_prefixes,
    weights_of,
    wrapper_strip_chain,
)

__all__ = [
    "EXTERNAL",
    "FORMAT",
    "FORMAT_VERSION",
    "REQUIRED_KEYS",
    "WRAPPER_PREFIXES",
    "CheckpointMeta",
    "adapt_foreign_state_dict",
    "bare_module",
    "check_finite",
    "classifier_rows",
    "expand_normalization",
    "external_note",
    "find_state_dict",
    "load_model",
    "load_weights_into",
    "model_from_object",
    "read_checkpoint_file",
    "read_meta",
    "same_normalization",
    "save_checkpoint",
    "strip_wrapper_prefixes",
    "weights_of",
    "wrapper_strip_chain",
]
