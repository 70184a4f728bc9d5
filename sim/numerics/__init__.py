"""The normative numerics (SPEC section 2): INT8 quantization, bit slices and planes with LSB augmentation, the bit-nested GEMVs, and the bit-nesting report that measures them."""
