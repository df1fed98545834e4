"""Training LIIF: YAML configs, one readable loop (single process or torchrun DDP), checkpoints, bench."""
