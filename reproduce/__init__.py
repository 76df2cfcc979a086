"""Reproduction of the paper's claims on synthetic sites (`make reproduce`).

It drives Flower federations (through `fl_server`), so it lives outside `core`.
"""
