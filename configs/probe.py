"""Probe settings of the study's evaluation (`ssl_jax.evaluate`, `ssl_jax.evaluation`).

The study's protocol (`docs/study.md`): frozen encoder, a light head per task (AMC one linear layer,
AoA linear-ReLU-linear), label budgets 1, 10, 100, 200, 500 per class from the train split, scored on the
test split; silhouette of the test embeddings; a supervised baseline on the same budgets; ours besides:
a random-init baseline. The study does not give the probe optimiser, the AoA hidden width or the number
of seeds; the values below are ours. Override any key: `--probe_config.budgets=1,10`.

`--probe_config=configs/probe.py:scale=NAME` gives the study's settings at a scale (`configs/scales.py`):
budgets the scale's simulated train split can serve and shorter head training; `scale=full` keeps the
protocol's budgets and skips those the split cannot serve (the simulated split holds 200 per class).
"""

import ml_collections

from ssl_jax.data import spec


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The study's probe protocol; with `arg` = 'scale=NAME', its settings at that scale."""
  config = ml_collections.ConfigDict()
  config.tasks = ('aoa', 'amc')
  config.budgets = (1, 10, 100, 200, 500)  # labelled train examples per class
  config.num_seeds = 3  # label sets and heads per budget (mean ± std)
  # A budget the train split cannot serve (above its smallest class, or a class absent) is an error that
  # names it; True skips it instead, with the reason in the results and a warning.
  config.skip_unavailable_budgets = False
  config.embed_batch_size = 256  # examples per frozen-encoder call

  # Head training (on frozen, standardised embeddings): AdamW, cosine lr, fixed step count.
  config.probe = ml_collections.ConfigDict()
  config.probe.learning_rate = 1e-3
  config.probe.weight_decay = 1e-4
  config.probe.num_steps = 300
  config.probe.batch_size = 256  # full batch when the label set is smaller
  config.probe.std_floor = 1e-2  # std floored at sqrt(std_floor * mean variance)

  # Heads: hidden_dim 0 = one linear layer; > 0 = linear-ReLU-linear with that width.
  config.heads = ml_collections.ConfigDict()
  config.heads.aoa = ml_collections.ConfigDict({'hidden_dim': 512})
  config.heads.amc = ml_collections.ConfigDict({'hidden_dim': 0})

  # Silhouette of the test embeddings (standardised, euclidean; the study: 5,850 examples, no tuning).
  config.clustering = ml_collections.ConfigDict()
  config.clustering.normalize = 'standardize'  # 'standardize' | 'l2' | 'none'
  config.clustering.max_examples = spec.SILHOUETTE_EXAMPLES  # seeded subset if the test split is larger; <= 0: all

  # Baselines run by `ssl_jax.evaluate` besides the pretrained encoder.
  config.random_init = True  # the same probes on a randomly initialised encoder

  # Supervised baseline: the same encoder + head trained end to end on the same label sets.
  config.supervised = ml_collections.ConfigDict()
  config.supervised.enabled = False  # expensive on a CPU; the study script turns it on
  config.supervised.budgets = (1, 10, 100, 200, 500)
  config.supervised.num_seeds = 3
  # SGD at ShuffleNetV2's ImageNet recipe scaled to the batch (0.5 at 1024); AdamW generalised far worse
  # (experiments/results/amc_investigation.md).
  config.supervised.optimizer = 'sgd'  # 'sgd' (momentum, coupled weight decay) | 'adamw'
  config.supervised.learning_rate = 0.03125
  config.supervised.weight_decay = 4e-5
  config.supervised.momentum = 0.9
  config.supervised.batch_size = 64
  config.supervised.epochs = 30.0  # steps = clip(epochs * n / batch_size, min_steps, max_steps)
  config.supervised.min_steps = 100
  # The protocol's budgets train their 30 epochs in full (AoA at 500 per class: 52,735 steps); 600 steps, the
  # cap before, left AoA from 100 per class at under 2 epochs. The CPU scales cap lower (configs/scales.py).
  config.supervised.max_steps = 60_000
  config.supervised.warmup_steps = 10
  if not arg:
    return config
  from configs import scales  # Here: without an argument this file needs only ssl_jax (`ssl_jax.evaluate`'s default).
  return scales.apply_probe_scale(config, scales.parse_scale(arg, 'configs/probe.py'))
