"""The alpha mappings' names, parameters, defaults and descriptions (paper Table 2), as plain data.

Kept apart from `student/cpfd.py` (which computes them with torch) so that the command line can
build its `--mapping` choices and parameter options from them without importing torch.
`student.cpfd` re-exports every name here.
"""

from __future__ import annotations

MAPPINGS = ("constant", "threshold", "neg-sigmoid", "tanh", "exp-decay")

# All parameter names of each mapping, required ones first; the CLI option is `--` + name with dashes.
MAPPING_PARAMS: dict[str, tuple[str, ...]] = {
    "constant": ("alpha",),
    "threshold": ("tau", "alpha_high", "alpha_low"),
    "neg-sigmoid": ("beta", "center"),
    "tanh": ("beta", "center"),
    "exp-decay": ("alpha_min", "alpha_max", "loss_min", "loss_max"),
}

# Optional parameters and their defaults (paper Table 2: threshold 0.9 / 0.1); the rest are required
# (`cpfd distill` calibrates those it is not given, `constant`'s alpha from PFD's usual 0.5).
MAPPING_DEFAULTS: dict[str, dict[str, float]] = {
    "threshold": {"alpha_high": 0.9, "alpha_low": 0.1},
}

# Parameters the calibration rule (`student.cpfd.calibrate_params`) sets to a constant, whatever the
# teacher losses: PFD's usual 0.5, and exp-decay's span from 0.9 down to 0.1 (paper Table 2's values).
RULE_CONSTANTS: dict[str, float] = {"alpha": 0.5, "alpha_max": 0.9, "alpha_min": 0.1}

# What each parameter is, for help texts and docs.
PARAM_HELP: dict[str, str] = {
    "alpha": "the distillation weight of every sample (vanilla PFD)",
    "tau": "teacher-loss threshold (alpha-high below it, alpha-low at or above)",
    "alpha_high": "alpha where the teacher loss is below tau",
    "alpha_low": "alpha where the teacher loss is at or above tau",
    "beta": "steepness (>= 0)",
    "center": "teacher loss at which alpha = 0.5",
    "alpha_min": "alpha at and beyond loss-max (> 0)",
    "alpha_max": "alpha at and below loss-min",
    "loss_min": "teacher loss where the decay starts",
    "loss_max": "teacher loss where the decay reaches alpha-min",
}


def param_names() -> list[str]:
    """Every parameter name once, in the order of MAPPING_PARAMS."""
    return list(dict.fromkeys(name for names in MAPPING_PARAMS.values() for name in names))


def param_help(name: str) -> str:
    """`--NAME`'s help: which mappings take it, what it is, and where its value comes from."""
    users = [m for m, names in MAPPING_PARAMS.items() if name in names]
    defaults = {MAPPING_DEFAULTS[m][name] for m in users if name in MAPPING_DEFAULTS.get(m, {})}
    origin = (f"Default {defaults.pop():g}." if defaults else
              f"Default {RULE_CONSTANTS[name]:g}." if name in RULE_CONSTANTS else "Default: calibrated from the dump.")
    return f"{', '.join(users)}: {PARAM_HELP[name]}. {origin}"
