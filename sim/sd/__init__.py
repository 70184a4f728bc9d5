"""Elastic self-speculative decoding (SPEC section 4) on the language model, its expert caches and the routing traces it records."""
