"""Golden model of the expert cache (policies, LRU/LFU/score) and the traces that drive it."""
