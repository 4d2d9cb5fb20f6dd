"""Turn datasets into hpcgan's HDF5 schema 1: `python -m data_prep {synth,convert,verify}`."""
