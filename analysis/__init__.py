"""Analyses that reproduce the seed papers' findings on evalkit checkpoints.

* :mod:`analysis.channels`: channel activation magnitude and uniformity (CAS);
* :mod:`analysis.importance`: CIFS channel-importance masks;
* :mod:`analysis.pooling`: feature-map size and pooling type (RCM), ``python -m analysis.pooling``;
* :mod:`analysis.sap_eot`: SAP under EOT attacks.

Each study writes tables, figures and an ``analysis.json`` index (schema: ``analysis/README.md``);
the CLI is ``evalkit analyze``. Submodules are imported on use so ``import analysis`` stays cheap.
"""

STUDIES = ("channels", "importance", "pooling", "sap-eot", "distributions")

__all__ = ["STUDIES"]
