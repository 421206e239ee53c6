"""Bridges from sflam-opt to other federated-learning frameworks.

Each framework lives in its own subpackage and is installed by its own extra, e.g.
``pip install 'sflam-opt[flower]'`` for :mod:`sflam_opt.integrations.flower`.
"""
