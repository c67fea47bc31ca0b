"""The PyTorch baseline of ssl_jax: the same encoder, heads and SimCLR/MoCo recipe in torch (see README.md)."""
