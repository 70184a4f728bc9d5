"""Yosys / OpenSTA flows: area per module, timing, power and energy per MAC of generated tops.

:mod:`.flow` is the public API (``synthesize``, ``synthesize_component``, ``synthesize_verilog``)
behind ``elmoe3d synth``; :mod:`.yosys_flow` runs Yosys, :mod:`.sta_flow` runs OpenSTA.
"""
