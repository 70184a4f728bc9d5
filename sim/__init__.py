"""The golden model, by concept (see docs/simulation.md):

- :mod:`.numerics`: INT8 quantization, bit slices and LSB augmentation, the bit-nested GEMVs;
- :mod:`.golden`: the reference and integer MoE layers, calibration, the HB memory's golden model;
- :mod:`.lm`: the small MoE language model, its training and model card;
- :mod:`.sd`: Elastic self-speculative decoding and its expert caches;
- :mod:`.cache`: the expert-cache policies and traces;
- :mod:`.machine`: the dispatch model and the instruction-set simulator;
- :mod:`.benches`: the cocotb benches of the RTL.

``DATA`` is the folder of the shipped model, its integer scales and its model card.
"""

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
