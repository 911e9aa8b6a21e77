"""What both stages run on: options, the dataset and loaders over corpus shards, tokenization, the
training loop, checkpoints, the distributed set-up, scoring, evaluation and metrics. Never imports
`teacher`, `student` or `experiment`: the stages hand it their models and losses."""
