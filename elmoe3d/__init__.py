"""elmoe3d: Elastic Self-Speculative Decoding of MoE models on a 3D-stacked accelerator.

Sub-packages (each a top-level folder of the repository):

- ``elmoe3d.hw``: Amaranth generators of the accelerator's blocks;
- ``elmoe3d.sim``: the numpy golden model, cocotb benches and performance model;
- ``elmoe3d.firmware``: command set and command-stream compiler;
- ``elmoe3d.synth``: Yosys / OpenSTA flows.
"""

__version__ = "0.1.0"
