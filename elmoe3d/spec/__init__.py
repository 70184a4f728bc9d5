"""Definitions: the one place each normative fact of the accelerator is written down.

This package is the bottom of the import graph (it imports only :mod:`elmoe3d.errors` and
:mod:`elmoe3d.config`, never ``sim``, ``firmware``, ``hw``, ``perf`` or ``synth``), so the
golden model, the ISS, the compiler, the RTL generators, the benches and the system model all
read the same definitions:

- :mod:`.numerics`: the normative numeric constants (bit slices, accumulator, integer layer);
- :mod:`.isa`: the command set (opcodes, fields, encoding, registers, status codes);
- :mod:`.image`: the memory-image format (nibble planes tiled as PE-array beats, scalar and
  multiplier records, SiLU table, token scales, output block, section order);
- :mod:`.timing`: the cycle formulas (PE-array GEMV, vector router, off-chip read, per-command
  overheads of the core) that the ISS charges, the benches check and ``perf`` uses.

``tests/test_import_layers.py`` enforces the direction.
"""
