"""Beam's repeated introspection, remembered: the same answers, worked out once a run.

Beam looks at the same things again and again while it builds, translates and runs a job, and
neither answer changes in between:

- a view of the options (`PipelineOptions.view_as`) builds an argparse parser of every option
  of the class and parses the flags again (about 0.4 ms), some 500 times a run;
- the arguments of a DoFn's methods (`core.get_function_args_defaults`, through
  `inspect.signature`): each check of a DoFn for state and timers looks at every method it has,
  about 30, and Beam checks each of our 57 DoFns eight times (twice in building, four times in
  translating, twice in the bundle processor that runs it), some 14,000 signatures a run.

Together 0.3 s of the interpreter's time before the first record and at each stage's start, of a
run of 55k chats that takes 7 s (medians of six `--limit 100` runs, main-thread CPU 3.80 against
3.47 s). The answers are remembered only where they are a function of what they are keyed by:

- a view, by the options' shared value table, the view's class and the flags. Every view of one
  options object reads and writes that one table (Beam's own design: "modifications of values in
  any view-object will apply to current object and other view-objects"), so a view made earlier
  and a new one read and write the same values;
- a method's arguments, by its function, for plain functions and methods bound to one: the
  signature of a bound method is its function's without the first parameter, whatever the object.
  Other callables (partials, builtins, callable objects) are looked at as before.

The table of functions holds them weakly (a lambda of a finished pipeline goes); the views are few
(one options object a run) and dropped past a bound. Installing is idempotent and touches only
this process: Dataflow's workers are other machines and look for themselves.
"""

from __future__ import annotations

import types
import weakref

from apache_beam.options import pipeline_options
from apache_beam.transforms import core

_VIEWS_KEPT = 256


def remember_introspection() -> None:
    """Put the remembering wrappers in place of Beam's two functions (once)."""
    if getattr(core.get_function_args_defaults, "remembered", False):
        return
    core.get_function_args_defaults = _remembering_arguments(core.get_function_args_defaults)
    pipeline_options.PipelineOptions.view_as = _remembering_views(pipeline_options.PipelineOptions.view_as)


def _remembering_arguments(arguments):
    bound: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    plain: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get_function_args_defaults(f):
        if isinstance(f, types.MethodType) and isinstance(f.__func__, types.FunctionType):
            table, key = bound, f.__func__
        elif isinstance(f, types.FunctionType):
            table, key = plain, f
        else:
            return arguments(f)
        known = table.get(key)
        if known is None:
            known = table[key] = arguments(f)
        names, defaults = known
        return list(names), list(defaults)  # fresh lists, as Beam's own returns

    get_function_args_defaults.remembered = True
    get_function_args_defaults.beams_own = arguments
    return get_function_args_defaults


def _remembering_views(view_as):
    views: dict[tuple, tuple[dict, object]] = {}

    def remembered_view_as(self, cls):
        values = self._all_options
        key = (id(values), cls, tuple(self._flags or ()))
        known = views.get(key)
        if known is not None and known[0] is values:  # the id is of this table, not of a freed one
            return known[1]
        if len(views) >= _VIEWS_KEPT:
            views.clear()
        view = view_as(self, cls)
        views[key] = (values, view)
        return view

    remembered_view_as.beams_own = view_as
    return remembered_view_as
