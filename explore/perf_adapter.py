"""The one place ``elmoe3d explore`` calls the system model ``elmoe3d.perf``.

The system model is being reworked (issue 18); everything explore needs from it goes through
:func:`system_figures`, so a change of its API is one function to follow.
"""

BASE_SYSTEM = "elmoe3d"      # the system a design point modifies (perf/data/systems.json)


def system_figures(point, hw, workload, system, energy_scale=None, name="explore"):
    """Tokens/s and J/token of one design point on one workload, from ``elmoe3d.perf``.

    Parameters
    ----------
    point : dict        the point's parameters (:data:`elmoe3d.explore.space.PARAMS`): array
                        rows, cols, lanes, pipeline, arrays; cache_policy (the routing model's
                        measured policy efficiency); hb_capacity_gib, hb_gbps (None: the base
                        system's capacity, and its GB/s per GiB times the capacity)
    hw : dict or None   the synthesized PE array's ``pj_per_mac`` ``{"draft", "full"}`` in pJ at
                        the Liberty's node; None keeps the system model's own figures
    workload : dict     model, batch (1..16); optional acceptance (0..1), gamma, k_d, context
    system : dict       ``clock_mhz`` (None: the base system's clock)
    energy_scale : float or None   pJ at the Liberty's node -> pJ at the system's node (None: the
                        system model's 45 nm -> 7 nm scale)
    name : str          the system's name in the reproducing ``elmoe3d perf --config`` file

    Returns ``{"tokens_per_s", "j_per_token", "bound", "acceptance", "perf_system", "perf_args"}``:
    ``perf_system`` is the system as a ``perf --config`` entry and ``perf_args`` the ``elmoe3d
    perf`` options that recompute these figures with it. Raises ``UserError`` for a model,
    policy or value the system model refuses.
    """
    from ..errors import UserError
    from ..perf import decode, models, systems

    table = systems.raw_systems()
    base = systems.builtin_systems()[BASE_SYSTEM]
    array = {"kind": "bit_sliced", "rows": point["rows"], "cols": point["cols"], "lanes": point["lanes"],
             "arrays": point["arrays"], "pipeline": point["pipeline"],
             "clock_mhz": float(system.get("clock_mhz") or base.array.clock_mhz),
             "source": "elmoe3d explore design point"}
    cap = point.get("hb_capacity_gib")
    cap = float(base.hb.capacity_gib if cap is None else cap)
    gbps = point.get("hb_gbps")
    gbps = float(base.hb.gbps * cap / base.hb.capacity_gib if gbps is None else gbps)
    raw = {"based_on": BASE_SYSTEM, "label": f"{name}: explore design point", "array": array,
           "hb": {"capacity_gib": cap, "gbps": gbps}}
    if hw is not None:
        if energy_scale is None:
            # the system model's 45 nm -> 7 nm energy scale (perf/data/systems.json constants)
            energy_scale = systems._constants()["node_energy_scale"]["value"]
        raw["compute"] = {"pj_per_mac": {m: hw["pj_per_mac"][m] * energy_scale for m in ("draft", "full")},
                          "source": f"synthesized PE array x {energy_scale:g}"}
    policy = point["cache_policy"]
    route_policies = decode.Settings().routing().eta
    if policy not in route_policies:
        raise UserError(f"cache_policy {policy!r}: the system model has measured hit-rate efficiencies for "
                        f"{', '.join(sorted(route_policies))} only")
    table = {**table, name: raw}
    sysobj = systems.system_from_dict(name, raw, table)
    all_models = models.builtin_models()
    if workload["model"] not in all_models:
        raise UserError(f"model {workload['model']!r} is not one of the system model's: {', '.join(all_models)}")
    model = all_models[workload["model"]]
    settings = decode.Settings(gamma=workload.get("gamma", 4), k_d=workload.get("k_d", 1),
                               context=workload.get("context", 1024), policy=policy,
                               acceptance=workload.get("acceptance"))
    if settings.k_d > model.top_k:
        raise UserError(f"k_d {settings.k_d} exceeds top-k = {model.top_k} of model {model.name}")
    row = decode.run_round(sysobj, model, settings, workload["batch"])
    args = ["--systems", name, "--models", model.name, "--batch", str(workload["batch"]), "--policy", policy,
            "--gamma", str(settings.gamma), "--k-d", str(settings.k_d), "--context", str(settings.context)]
    if settings.acceptance is not None:
        args += ["--acceptance", f"{settings.acceptance:g}"]
    return {"tokens_per_s": row["tokens_per_s"], "j_per_token": row["j_per_token"], "bound": row["bound"],
            "acceptance": row["acceptance"], "perf_system": raw, "perf_args": args}
