"""The training lab: FER2013 loading, training, k-fold, evaluation reports, distillation, weight averaging.

Serving (fer_core.pipeline, detectors, models, serve, cli, the Spark job, the dashboards) never imports
this package: a shipped model is a plain .keras file of stock Keras layers plus its spec.json, which
fer_core.models loads without it (tests/test_lab_boundary.py). Entry points: ``python -m fer_core.train``
and ``python -m fer_core.evaluate``.
"""
