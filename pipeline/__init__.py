"""What the stages share and how they are chained: data, tokenization, training loop, metrics,
the synthetic corpus and the experiment."""
