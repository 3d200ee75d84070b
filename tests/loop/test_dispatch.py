"""The one dispatcher: gating by `run`/`run_train`/`run_valid`, order, and errors named.

A callback called alone (`cb("after_loss")`) and the learner's dispatch go through the same code;
each rule is checked both ways.
"""

from __future__ import annotations

import pytest

from lightning_accel import Callback, CancelFitException, Learner
from lightning_accel.loop.dispatch import Dispatcher, call_callback


class Counter(Callback):
    def __init__(self, log=None):
        self.calls = [] if log is None else log

    def before_batch(self):
        self.calls.append((self, "before_batch"))

    def before_fit(self):
        self.calls.append((self, "before_fit"))


def _both_ways(learn: Learner, event_name: str) -> None:
    """Emit through the learner; then call every callback alone."""
    learn(event_name)
    for cb in learn.cbs:
        cb(event_name)


def test_callback_call_is_the_dispatchers_code():
    assert Callback.__call__ is call_callback


@pytest.mark.parametrize("how", ["learner", "alone"])
def test_run_flags_gate_events(how):
    learn = Learner()
    train_only, valid_only, off = Counter(), Counter(), Counter()
    train_only.run_valid = False
    valid_only.run_train = False
    off.run = False
    learn.add_cbs(train_only, valid_only, off)

    def emit(name):
        if how == "learner":
            learn(name)
        else:
            for cb in learn.cbs:
                cb(name)

    learn.training = True
    emit("before_batch")
    learn.training = False
    emit("before_batch")
    emit("before_fit")  # not a batch event: run_train/run_valid do not gate it
    assert [e for _, e in train_only.calls] == ["before_batch", "before_fit"]
    assert [e for _, e in valid_only.calls] == ["before_batch", "before_fit"]
    assert off.calls == []
    emit("after_fit")
    assert off.run  # switched back on for the next fit, as in the reference


def test_callbacks_run_in_the_learners_order():
    log = []
    first = type("First", (Counter,), {"order": -1})(log)
    last = type("Last", (Counter,), {"run_after": "First", "order": -5})(log)
    middle = type("Middle", (Counter,), {})(log)
    learn = Learner().add_cbs(last, middle, first)
    learn("before_fit")
    assert [type(cb).__name__ for cb, _ in log] == ["First", "Last", "Middle"]


@pytest.mark.parametrize("how", ["learner", "alone"])
def test_an_exception_names_class_and_event_and_keeps_its_type(how):
    class Broken(Callback):
        def after_loss(self):
            raise ValueError("bad value")

    learn = Learner().add_cbs(Broken())
    with pytest.raises(ValueError, match=r"`Broken`.*`after_loss`.*bad value") as info:
        learn("after_loss") if how == "learner" else learn.cbs[0]("after_loss")
    assert info.value.args[0].count("Exception in callback") == 1


@pytest.mark.parametrize("how", ["learner", "alone"])
def test_cancel_exceptions_pass_through_untouched(how):
    class Stop(Callback):
        def after_batch(self):
            raise CancelFitException

    learn = Learner().add_cbs(Stop())
    with pytest.raises(CancelFitException) as info:
        learn("after_batch") if how == "learner" else learn.cbs[0]("after_batch")
    assert info.value.args == ()


def test_a_callback_with_its_own_call_keeps_its_dispatch():
    class OwnDispatch(Callback):
        def __init__(self):
            self.seen = []

        def __call__(self, event_name):
            self.seen.append(event_name)

    cb = OwnDispatch()
    learn = Learner().add_cbs(cb)
    learn("before_fit")
    learn("after_pred")
    assert cb.seen == ["before_fit", "after_pred"]


def test_the_dispatcher_only_visits_callbacks_defining_the_event_and_follows_new_lists():
    a, b = Counter(), Counter()
    d = Dispatcher()
    d.set_callbacks([a])
    d.emit("before_fit", training=True)
    d.emit("after_loss", training=True)  # nobody defines it
    d.set_callbacks([b, a])
    d.emit("before_fit", training=True)
    assert [e for _, e in a.calls] == ["before_fit", "before_fit"]
    assert [e for _, e in b.calls] == ["before_fit"]
    assert d.cbs == (b, a)
