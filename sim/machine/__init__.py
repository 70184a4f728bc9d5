"""The machine: stream sequencing (the dispatch model the command processor follows) and the instruction-set simulator."""
