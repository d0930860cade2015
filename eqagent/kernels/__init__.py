"""Fused relaxation kernels (Triton on CUDA); the torch path in :mod:`eqagent.relax` runs everywhere else."""
