"""The self-supervised losses and their metrics, one module per family; import the one you need.

  common          shared checks, `l2_normalize`, log-sum-exp cross-entropy, and the cross-device helpers
                  (`shard_info`, `gather`, `global_mean`) with the `axis_name` convention every loss follows
  contrastive     SimCLR's NT-Xent, MoCo's InfoNCE, MoCo v3's (and CLIP's) symmetric InfoNCE, similarity stats
  debiased        debiased (Chuang et al.) and hard-negative (Robinson et al.) NT-Xent / InfoNCE
  dcl             decoupled contrastive learning: DCL and DCLW
  mochi           MoCHi's synthetic hard negatives and their InfoNCE
  swav            SwAV's Sinkhorn-Knopp codes and swapped-prediction loss
  banks           memory banks: instance discrimination (Wu et al.) and lightly's FIFO bank
  discrimination  instance-discrimination top-1 accuracy, the methods' `instance_accuracy` metric

e.g. `from ssl_jax.losses import contrastive; contrastive.nt_xent(z_a, z_b, temperature=0.1)`.
"""
