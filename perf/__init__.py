"""System speed and energy model of MoE decoding (SPEC section 9): ``elmoe3d perf``.

Modules: :mod:`.models` (MoE shapes), :mod:`.systems` (serving systems as data), :mod:`.routing`
(unique experts and cache hits, calibrated on the shipped model's measured routing),
:mod:`.decode` (bytes per memory tier, MACs, time and energy of a decode step; the sweep),
:mod:`.validate` (GPU measurements and RTL cycle counts), :mod:`.report` (tables and plots).
"""
