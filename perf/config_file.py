"""``elmoe3d perf --config FILE``: systems and models added from a TOML or JSON file.

The file has up to two tables, ``systems`` and ``models``, keyed by name, in the form of
``perf/data/systems.json`` and ``perf/data/models.json``. A system may say ``based_on = "NAME"``
(a built-in or another system of the file) and override only some fields; a name that exists
replaces the built-in entry. Example (TOML)::

    [systems.elmoe3d_32g]
    based_on = "elmoe3d"
    label = "ELMoE-3D with 32 GiB of HB"
    hb = { gbps = 8704, capacity_gib = 32 }

    [models.tiny]
    d_model = 512
    n_layers = 8
    n_heads = 8
    n_kv_heads = 8
    head_dim = 64
    n_experts = 16
    top_k = 2
    d_expert = 1024
    vocab = 32000

Every mistake (unreadable file, syntax error, unknown table or field, a bad value) is a
:class:`~elmoe3d.errors.UserError` naming the file and the entry.
"""

import json
import tomllib
from pathlib import Path

from ..errors import UserError
from .models import builtin_models, model_from_dict
from .systems import accel_defaults, raw_systems, system_from_dict

TABLES = ("systems", "models")


def read(path):
    """The file's ``{"systems": {...}, "models": {...}}`` (raw mappings)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read --config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"--config {path} is not a text file (byte {exc.start} is not UTF-8); "
                        "give a TOML or JSON file") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise UserError(f"--config {path} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected tables 'systems' and/or 'models' at the top level")
    unknown = sorted(set(data) - set(TABLES))
    if unknown:
        raise UserError(f"--config {path}: unknown top-level key(s) {', '.join(unknown)}; expected systems, models")
    for key in TABLES:
        if not isinstance(data.get(key, {}), dict):
            raise UserError(f"--config {path}: '{key}' must be a table keyed by name")
    return data


def load(path=None):
    """``(systems, models)``: the built-in ones plus (and overridden by) those of ``path``."""
    table = dict(raw_systems())
    models = dict(builtin_models())
    if path is None:
        added_systems, added_models = {}, {}
    else:
        data = read(path)
        added_systems, added_models = data.get("systems", {}), data.get("models", {})
    table.update(added_systems)
    overrides = accel_defaults()
    systems = {}
    for name, raw in table.items():
        try:
            systems[name] = system_from_dict(name, raw, table, overrides if name not in added_systems else None)
        except UserError as exc:
            raise UserError(f"--config {path}: {exc}" if name in added_systems else str(exc)) from None
    for name, raw in added_models.items():
        try:
            models[name] = model_from_dict(name, raw)
        except UserError as exc:
            raise UserError(f"--config {path}: {exc}") from None
    return systems, models
