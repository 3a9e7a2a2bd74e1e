"""The shared engine: the training loop (`loop.fit`), LR schedules, EMA, metrics, samplers, checkpoints, run logs.

Every task runs the same loop; what differs between jobs lives in `dlcvkit.tasks`.
"""
