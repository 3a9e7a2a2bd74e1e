"""Tasks only: what differs between training jobs (byol, classify, finetune with its settings A–E, segment), each a
`dlcvkit.engine.task.Task`; `registry` names them and runs a training (recipe, `resolve`, engine, report).
What is done with a finished run lives in `dlcvkit.runs`."""
