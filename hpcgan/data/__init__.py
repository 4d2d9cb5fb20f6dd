"""Datasets for training: the HDF5 format (schema 1), its writers and verification, and the
sharded readers built on it."""
