"""Training recipes: hyper-parameter schedules, fit helpers and the learning-rate finder."""

from .fit import fit, fit_flat_cos, fit_one_cycle, fit_sgdr
from .functions import (
    CombinedSchedule,
    SchedCos,
    SchedExp,
    SchedLin,
    SchedNo,
    SchedPoly,
    Schedule,
    combine_scheds,
    combined_cos,
)
from .lightning_callbacks import (
    FlatCosSchedule,
    HyperScheduleCallback,
    OneCycleSchedule,
    SGDRSchedule,
)
from .lr_finder import LRFinder, lr_find, plot_lr_find
from .param_scheduler import ParamScheduler
from .suggestions import SuggestionMethod, minimum, slide, steep, valley

__all__: list[str] = [
    "Schedule",
    "SchedLin",
    "SchedCos",
    "SchedNo",
    "SchedExp",
    "SchedPoly",
    "CombinedSchedule",
    "combine_scheds",
    "combined_cos",
    "ParamScheduler",
    "HyperScheduleCallback",
    "OneCycleSchedule",
    "FlatCosSchedule",
    "SGDRSchedule",
    "fit",
    "fit_one_cycle",
    "fit_flat_cos",
    "fit_sgdr",
    "LRFinder",
    "lr_find",
    "plot_lr_find",
    "SuggestionMethod",
    "valley",
    "slide",
    "minimum",
    "steep",
]
