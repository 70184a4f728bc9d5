"""The small MoE language model: configuration and weights file, the numpy model, its key/value cache, the training corpus, PyTorch training and the model card."""
