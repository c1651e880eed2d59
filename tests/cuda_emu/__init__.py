"""Run CUDA kernels on the CPU: see :mod:`cuda_emu.emu`."""
