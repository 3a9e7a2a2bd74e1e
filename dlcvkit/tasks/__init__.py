"""Tasks only: what differs between training jobs (byol, classify, finetune with its settings A–E, segment), each a
`dlcvkit.engine.task.Task`; `registry` names them. Running a training, a series of them and what is done with a
finished run live in `dlcvkit.runs`."""
