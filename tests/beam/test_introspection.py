"""Beam's introspection, remembered (beam/introspection.py): the same answers as Beam's own.

What could go wrong, and is tried here: a plain function and the same function bound to an
object answered alike (they differ by `self`); a caller that changes the lists it was given
changing what the next caller gets; state and timer parameters missed; a view that reads
another options object's values, or misses a value written through another view.
"""

from __future__ import annotations

import functools

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.transforms import core, userstate
from apache_beam.transforms.timeutil import TimeDomain

from masked_shards.beam.introspection import _remembering_arguments, _remembering_views, remember_introspection

BEAMS_ARGUMENTS = getattr(core.get_function_args_defaults, "beams_own", core.get_function_args_defaults)
BEAMS_VIEW_AS = getattr(PipelineOptions.view_as, "beams_own", PipelineOptions.view_as)
COUNT = userstate.BagStateSpec("count", beam.coders.VarIntCoder())
LATER = userstate.TimerSpec("later", TimeDomain.WATERMARK)


class StatefulFn(beam.DoFn):
    def process(self, element, count=beam.DoFn.StateParam(COUNT), later=beam.DoFn.TimerParam(LATER), window=beam.DoFn.WindowParam):
        yield element

    @userstate.on_timer(LATER)
    def fire(self, count=beam.DoFn.StateParam(COUNT)):
        yield from count.read()


class PlainFn(beam.DoFn):
    def process(self, element, scale=2):
        yield element * scale


def add(a, b=1, *rest, c=3, **more):
    return a + b


class Callable:
    def __call__(self, x, y=5):
        return x


CALLABLES = [
    add,
    lambda x, y=4: x,
    functools.partial(add, b=7),
    len,
    str.upper,
    Callable(),
    PlainFn.process,
    PlainFn().process,
    StatefulFn.process,
    StatefulFn().process,
    StatefulFn().fire,
]


def test_arguments_are_beams_own_in_any_order() -> None:
    remembered = _remembering_arguments(BEAMS_ARGUMENTS)
    for order in (CALLABLES, CALLABLES[::-1]):
        for f in order:
            assert remembered(f) == BEAMS_ARGUMENTS(f), f


def test_a_function_bound_and_unbound_are_told_apart() -> None:
    remembered = _remembering_arguments(BEAMS_ARGUMENTS)
    assert remembered(PlainFn().process) == (["element", "scale"], [2])
    assert remembered(PlainFn.process) == (["self", "element", "scale"], [2])
    assert remembered(PlainFn().process) == (["element", "scale"], [2])


def test_each_function_is_looked_at_once_and_callers_cannot_change_the_answer() -> None:
    looked = []

    def counting(f):
        looked.append(f)
        return BEAMS_ARGUMENTS(f)

    remembered = _remembering_arguments(counting)
    first = remembered(PlainFn().process)
    first[0].append("changed")
    first[1].clear()
    assert remembered(PlainFn().process) == (["element", "scale"], [2])  # another object, the same function
    assert len(looked) == 1
    remembered(functools.partial(add, b=7))
    remembered(functools.partial(add, b=7))
    assert len(looked) == 3  # not remembered: a partial is another object each time


def test_state_and_timers_are_still_found() -> None:
    remember_introspection()
    remember_introspection()  # twice: still one layer
    assert not hasattr(core.get_function_args_defaults.beams_own, "beams_own")
    for _ in range(2):
        states, timers = userstate.get_dofn_specs(StatefulFn())
        assert states == {COUNT} and timers == {LATER}
    assert not userstate.is_stateful_dofn(PlainFn())


def test_views_read_and_write_their_own_options() -> None:
    view_as = _remembering_views(BEAMS_VIEW_AS)
    flags = ["--runner=FnApiRunner", "--direct_num_workers=2"]
    options, other = PipelineOptions(flags), PipelineOptions(["--direct_num_workers=5"])
    direct = view_as(options, DirectOptions)
    assert direct.direct_num_workers == 2 and view_as(other, DirectOptions).direct_num_workers == 5
    assert view_as(options, StandardOptions).runner == "FnApiRunner"
    direct.direct_num_workers = 3  # written through one view ...
    assert view_as(options, DirectOptions).direct_num_workers == 3  # ... read through the next
    assert view_as(other, DirectOptions).direct_num_workers == 5
    fresh = PipelineOptions(flags)
    for cls in (DirectOptions, StandardOptions):
        view_as(fresh, cls)
        BEAMS_VIEW_AS(PipelineOptions(flags), cls)
    assert fresh.get_all_options() == PipelineOptions(flags).get_all_options()
