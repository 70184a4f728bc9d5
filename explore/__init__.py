"""Design-space exploration on Ray: ``elmoe3d explore [SPACE.toml]``.

Modules: :mod:`.space` (the design-space file: parameters, workloads, search; validated with one
line naming the key), :mod:`.blocks` (synthesis of a point's blocks through ``elmoe3d.synth``,
cached by block parameters, tool versions and Liberty file), :mod:`.perf_adapter` (the one place
that calls ``elmoe3d.perf``), :mod:`.evaluate` (one point: hardware and system figures),
:mod:`.run` (grid, random and Optuna search on Ray; resumable JSONL store), :mod:`.report`
(table, Pareto front, plots, best point per workload, reproducing command lines).

Nothing here imports Ray at module level: only :func:`.run.explore` does, so the other commands
start fast.
"""
