"""Tasks only: what differs between training jobs (classify, finetune with its settings A–E, segment,
and the self-supervised methods byol, dino and simclr on the shared base `ssl`), each a
`dlcvkit.engine.task.Task`; `registry` names them. Running a training, a series of them and what is done with a
finished run live in `dlcvkit.runs`."""
