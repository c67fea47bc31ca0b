"""Evaluation of pretrained encoders: embeddings, probes, supervised baseline, silhouette, metrics.

Entry points: `evaluate_encoder` (probes + silhouette of one frozen encoder), `evaluate_supervised`
(the end-to-end baseline), `random_init_variables` (the random-init baseline's variables),
`embed_split` (a whole split's embeddings and labels, e.g. for plots), `unavailable_numbers` (the budgets
a train split cannot serve); `summary.summary_table` (the console table of an evaluation's results).
"""

from ssl_jax.evaluation.suite import ArrayData
from ssl_jax.evaluation.suite import EvalData
from ssl_jax.evaluation.suite import PipelineData
from ssl_jax.evaluation.suite import TASKS
from ssl_jax.evaluation.suite import embed_split
from ssl_jax.evaluation.suite import evaluate_encoder
from ssl_jax.evaluation.suite import evaluate_supervised
from ssl_jax.evaluation.suite import random_init_variables
from ssl_jax.evaluation.suite import unavailable_numbers
