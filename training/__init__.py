"""Training and fine-tuning of the default model's parts: the bi-encoder's heads, the fusion
scorer, the features they learn from. Imported by the `train` commands and bench scripts only,
never by the query or index path."""
