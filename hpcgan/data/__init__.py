"""Datasets for training: the HDF5 schema shared with data_prep, and readers built on it."""
