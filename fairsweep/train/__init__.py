"""One training loop, the losses, and the stage recipes (base, finetune; SNL lives in linearize/)."""
