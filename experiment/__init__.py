"""`cpfd experiment`: the paper's comparison on one corpus, from the teacher to the report.

`run` (the steps and the order they run in), `launch` (one step in this process or as a torchrun
job), `report` (report.md, report.json, figures), `stats` (paired intervals and verdicts),
`options` (what the command adds to the training options), and `synth`, the synthetic corpus the
experiment runs on by default (also `cpfd synth`).
"""
