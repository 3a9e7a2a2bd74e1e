"""The shared engine: the training loop (`loop.fit`) and what it needs: the Task contract (`task`), LR schedules,
EMA, metrics, samplers, loaders, a model's features of a data set (`features`), checkpoints, weight files, the run
folder (`rundir`), run logs and progress lines (`runlog`), trackers (`trackers`), the Accelerator and the device
(`distributed`).

Every task runs the same loop, plugged in through `task.Task`; what differs between jobs lives in
`dlcvkit.tasks`. The engine imports nothing from tasks/, runs/, cli/ or the report.
"""
