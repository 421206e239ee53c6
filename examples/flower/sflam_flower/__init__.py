"""Flower app: FedAvg of an MLP on digits with SFLAM allocations (see README.md)."""
