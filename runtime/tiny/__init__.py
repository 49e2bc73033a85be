"""Random-weight test models (tiny checkpoints, LoRAs, embeddings, ControlNets)."""
