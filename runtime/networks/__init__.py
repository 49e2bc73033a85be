"""Extra networks applied to a loaded pipeline: LoRA/LyCORIS and hypernetworks."""
