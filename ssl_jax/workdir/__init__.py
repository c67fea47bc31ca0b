"""A pretraining run's directory (its workdir): what it holds and who writes and reads it.

`layout` names every file of a workdir and reads and writes its `config.json`; `lock` is its writer lock,
`checkpoints` its orbax checkpoints, `metrics` its metrics (JSON lines and TensorBoard), `resume` what a
relaunch into a workdir that holds a run may change and how it continues that run. This package imports
nothing of ssl_jax above it (tests/test_layering.py); importing it imports none of its modules.
"""
