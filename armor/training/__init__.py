"""Metric learning over items co-liked by a user: pair sampling, negative mining, losses, one epoch.

Everything here is plain torch and works on any iterable of ``dict[str, Tensor]`` batches, in a
single process or inside a torch.distributed group (Ray Train sets one up); it never imports Ray.
"""
