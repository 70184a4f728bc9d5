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
                        measured policy efficiency); hb_capacity_gib (None: the base system's),
                        hb_gbps (None: the system model's HB rule for the capacity)
    hw : dict or None   the synthesized PE array's ``pj_per_mac`` ``{"draft", "full"}`` in pJ at
                        the Liberty's node; None keeps the system model's own figures
    workload : dict     model, batch (1..16); optional acceptance (0..1), scenario, context, and
                        gamma, k_d (those not given are the system model's elastic-policy choice,
                        for the most tokens/s)
    system : dict       ``clock_mhz`` (None: the base system's clock)
    energy_scale : float or None   pJ at the Liberty's node -> pJ at the system's node (None: the
                        system model's own 45 nm -> 7 nm scaling of bench-pe figures)
    name : str          the system's name in the reproducing ``elmoe3d perf --config`` file

    Returns ``{"tokens_per_s", "j_per_token", "bound", "acceptance", "perf_system", "perf_args"}``:
    ``perf_system`` is the system as a ``perf --config`` entry and ``perf_args`` the ``elmoe3d
    perf`` options that recompute these figures with it. Raises ``UserError`` for a model,
    policy or value the system model refuses.
    """
    from ..errors import UserError
    from ..perf import decode, models, studies, systems

    base = systems.builtin_systems()[BASE_SYSTEM]
    array = {"kind": "bit_sliced", "rows": point["rows"], "cols": point["cols"], "lanes": point["lanes"],
             "arrays": point["arrays"], "pipeline": point["pipeline"],
             "clock_mhz": float(system.get("clock_mhz") or base.array.clock_mhz),
             "source": "elmoe3d explore design point"}
    raw = {"based_on": BASE_SYSTEM, "label": f"{name}: explore design point", "array": array}
    cap, gbps = point.get("hb_capacity_gib"), point.get("hb_gbps")
    hb_gib = None
    if gbps is not None:        # a stated bandwidth: capacity and bandwidth in the system itself
        raw["hb"] = {"capacity_gib": float(base.hb.capacity_gib if cap is None else cap), "gbps": float(gbps)}
    elif cap is not None:       # bandwidth by the system model's one HB rule (perf --hb-gib)
        hb_gib = float(cap)
    if hw is not None:
        pj45 = {m: hw["pj_per_mac"][m] for m in ("draft", "full")}
        pj = (systems.array_pj_per_mac("bit_sliced", pj45) if energy_scale is None
              else {m: v * energy_scale for m, v in pj45.items()})
        raw["compute"] = {"pj_per_mac": pj, "source": "synthesized PE array, scaled to the system's node"}
    all_models = models.builtin_models()
    if workload["model"] not in all_models:
        raise UserError(f"model {workload['model']!r} is not one of the system model's: {', '.join(all_models)}")
    model = all_models[workload["model"]]
    given = {k: workload[k] for k in ("gamma", "k_d") if k in workload}
    settings = decode.Settings(gamma=given.get("gamma", 4), k_d=given.get("k_d"),
                               context=workload.get("context", 1024), policy=point["cache_policy"],
                               acceptance=workload.get("acceptance"), scenario=workload.get("scenario", "shipped"))
    if settings.k_d is not None and settings.k_d > model.top_k:
        raise UserError(f"k_d {settings.k_d} exceeds top-k = {model.top_k} of model {model.name}")
    policy = point["cache_policy"]
    route_policies = settings.routing().eta
    if policy not in route_policies:
        raise UserError(f"cache_policy {policy!r}: the system model has measured hit-rate efficiencies for "
                        f"{', '.join(sorted(route_policies))} only")
    # what `elmoe3d perf --config FILE --systems NAME ...` does with the system of the file:
    # the default footing, the HB rule, the elastic policy over the settings not given
    sysobj = systems.system_from_dict(name, raw, {**systems.raw_systems(), name: raw})
    footed = studies.footed([sysobj], "equal", None, None, hb_gib, None)
    free = tuple(k for k in ("gamma", "k_d") if k not in given)
    row = decode.sweep(footed, [model], settings, [workload["batch"]], "tokens_per_s" if free else None, free)[0]
    args = ["--systems", name, "--models", model.name, "--batch", str(workload["batch"]), "--policy", policy,
            "--context", str(settings.context), "--scenario", settings.scenario]
    args += [x for k, v in given.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    if settings.acceptance is not None:
        args += ["--acceptance", repr(settings.acceptance)]
    if hb_gib is not None:
        args += ["--hb-gib", repr(hb_gib)]
    return {"tokens_per_s": row["tokens_per_s"], "j_per_token": row["j_per_token"], "bound": row["bound"],
            "acceptance": row["acceptance"], "gamma": row.get("gamma"), "k_d": row.get("k_d"),
            "perf_system": raw, "perf_args": args}
