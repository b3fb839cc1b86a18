"""One training loop, the losses, the fairness mitigations (Algorithm 1 and the released code's), and the
stage recipes (base, finetune; SNL and DeepReDuce live in linearize/)."""
