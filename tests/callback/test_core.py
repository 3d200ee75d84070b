"""The `Callback` base and the ordering rules, without a Trainer."""

from __future__ import annotations

import itertools
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accel import (
    Callback,
    CallbackBridge,
    CancelBatchException,
    CancelFitException,
    event,
    sort_callbacks,
)
from lightning_accel.loop.events import ALL_EVENTS, CANCEL_EVENTS, EVENTS


def test_event_namespace_holds_every_event_name():
    assert set(dir(event)) == set(EVENTS) | set(CANCEL_EVENTS)
    for name in ALL_EVENTS:
        assert getattr(event, name) == name
    assert "after_cancel_validate" in CANCEL_EVENTS and "before_step" in EVENTS


def test_cancel_exceptions_are_distinct_exceptions():
    from lightning_accel.loop import events

    names = [n for n in events.__all__ if n.startswith("Cancel") and n != "CancelException"]
    assert len(names) == 7
    for a, b in itertools.combinations(names, 2):
        assert not issubclass(getattr(events, a), getattr(events, b))


class Recorderish(Callback):
    pass


class TerminateOnNaNCallback(Callback):
    pass


def test_name_is_snake_case_without_callback_suffix():
    assert Recorderish().name == "recorderish"
    assert TerminateOnNaNCallback().name == "terminate_on_nan"
    assert type("RNNRegularizer", (Callback,), {})().name == "rnn_regularizer"
    assert type("MixUp", (Callback,), {})().name == "mix_up"


def test_reading_falls_through_to_the_learner_and_writing_warns_on_shadowing():
    bridge = CallbackBridge(recorder=False)
    cb = Recorderish()
    bridge.add_cbs(cb)
    bridge.learn.loss = 3.0
    assert cb.loss == 3.0
    assert cb.learn.train_eval is bridge.cbs[0]  # callbacks by name on the learner
    with pytest.warns(UserWarning, match=r"shadows the learner's `loss`.*self\.learn\.loss"):
        cb.loss = 5.0
    assert bridge.learn.loss == 3.0 and cb.loss == 5.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cb.my_state = 1  # not a learner attribute: no warning
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = cb.nothing_here


def test_unattached_callback_has_a_clear_attribute_error():
    with pytest.raises(AttributeError, match="not attached"):
        _ = Recorderish().model


def test_misspelt_event_warns_with_the_nearest_event():
    class Typo(Callback):
        def befor_batch(self):
            pass

        def after_bacth(self):
            pass

        def helper(self):
            pass

    with pytest.warns(UserWarning) as record:
        CallbackBridge(Typo(), recorder=False)
    messages = [str(w.message) for w in record]
    assert any("befor_batch" in m and "before_batch" in m for m in messages)
    assert any("after_bacth" in m and "after_batch" in m for m in messages)
    assert not any("helper" in m for m in messages)


def test_exception_in_a_callback_names_class_and_event_and_keeps_its_type():
    class Broken(Callback):
        def after_loss(self):
            raise ValueError("bad value")

    with pytest.raises(ValueError, match=r"`Broken`.*`after_loss`.*bad value"):
        Broken()("after_loss")


def test_cancel_exceptions_pass_through_untouched():
    class Stop(Callback):
        def after_batch(self):
            raise CancelFitException

    with pytest.raises(CancelFitException) as info:
        Stop()("after_batch")
    assert info.value.args == ()


def test_run_flags_gate_events():
    class Counter(Callback):
        def __init__(self):
            self.calls = []

        def before_batch(self):
            self.calls.append("before_batch")

        def before_fit(self):
            self.calls.append("before_fit")

    bridge = CallbackBridge(recorder=False)
    train_only, valid_only, off = Counter(), Counter(), Counter()
    train_only.run_valid = False
    valid_only.run_train = False
    off.run = False
    bridge.add_cbs(train_only, valid_only, off)
    bridge.learn.training = True
    bridge("before_batch")
    bridge.learn.training = False
    bridge("before_batch")
    bridge("before_fit")  # not a batch event: run_train/run_valid do not gate it
    assert train_only.calls == ["before_batch", "before_fit"]
    assert valid_only.calls == ["before_batch", "before_fit"]
    assert off.calls == []
    bridge("after_fit")
    assert off.run  # switched back on for the next fit, as in the reference


def _named(name: str, **attrs) -> Callback:
    return type(name, (Callback,), attrs)()


def test_ordering_by_class_and_name():
    a = _named("A", order=10)
    b = _named("B", run_before="A")
    c = _named("C", run_after="B", run_before=type(a))
    d = _named("D", order=-5)
    assert [type(x).__name__ for x in sort_callbacks([a, b, c, d])] == ["D", "B", "C", "A"]


def test_ties_by_order_then_insertion():
    cbs = [_named("P", order=1), _named("Q", order=0), _named("R", order=1), _named("S")]
    assert [type(x).__name__ for x in sort_callbacks(cbs)] == ["Q", "S", "P", "R"]


def test_cycle_error_names_the_cycle():
    a = _named("A", run_before="c")
    b = _named("B", run_before="A")
    c = _named("C", run_before="b")
    d = _named("D", run_after="C")
    with pytest.raises(
        ValueError, match=r"cycle: (A -> C -> B -> A|B -> A -> C -> B|C -> B -> A -> C)"
    ):
        sort_callbacks([d, a, b, c])


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 7),
    data=st.data(),
)
def test_sort_honours_every_constraint_and_is_minimal_otherwise(n, data):
    orders = data.draw(st.lists(st.integers(-2, 2), min_size=n, max_size=n))
    # Random acyclic constraints: only from lower to higher index in a random permutation.
    perm = data.draw(st.permutations(range(n)))
    pairs = [(perm[i], perm[j]) for i in range(n) for j in range(i + 1, n)]
    chosen = data.draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    classes = [type(f"K{i}", (Callback,), {"order": orders[i]}) for i in range(n)]
    before = {i: [] for i in range(n)}
    after = {i: [] for i in range(n)}
    for first, second in chosen:
        if data.draw(st.booleans()):
            before[first].append(classes[second])
        else:
            after[second].append(f"K{first}")  # by class name
    for i, k in enumerate(classes):
        k.run_before, k.run_after = tuple(before[i]), tuple(after[i])
    cbs = [k() for k in classes]
    result = sort_callbacks(cbs)
    pos = {type(cb).__name__: p for p, cb in enumerate(result)}
    for first, second in chosen:
        assert pos[f"K{first}"] < pos[f"K{second}"]
    # Without constraints the order is exactly (order, insertion).
    if not chosen:
        assert result == sorted(cbs, key=lambda cb: (cb.order, cbs.index(cb)))


def test_bridge_add_remove_and_added_cbs():
    bridge = CallbackBridge()
    assert [cb.name for cb in bridge.cbs] == ["train_eval", "recorder"]
    extra = Recorderish()
    with bridge.added_cbs(extra):
        assert bridge.learn.recorderish is extra and extra.learn is bridge.learn
    assert extra not in bridge.cbs and extra.learn is None
    bridge.add_cbs(Recorderish)  # a class is instantiated
    assert isinstance(bridge.learn.recorderish, Recorderish)
    bridge.remove_cbs(Recorderish)
    assert not any(isinstance(cb, Recorderish) for cb in bridge.cbs)
    before = list(bridge.cbs)
    with pytest.raises(TypeError, match="cbs must be"):
        bridge.add_cbs(Recorderish(), object())
    assert bridge.cbs == before  # nothing half-attached
    with pytest.raises(ValueError, match="cycle"):
        bridge.add_cbs(_named("X", run_before="y"), _named("Y", run_before="x"))
    assert bridge.cbs == before
    kept = Recorderish()
    bridge.add_cbs(kept)
    with bridge.added_cbs(Recorderish):
        assert sum(isinstance(cb, Recorderish) for cb in bridge.cbs) == 2
    assert [cb for cb in bridge.cbs if isinstance(cb, Recorderish)] == [kept]


def test_x_and_y_are_detuplified_and_read_only():
    bridge = CallbackBridge(recorder=False)
    learn = bridge.learn
    learn.xb, learn.yb = ("x",), ("y1", "y2")
    assert learn.x == "x" and learn.y == ("y1", "y2")
    with pytest.raises(AttributeError):
        learn.x = "other"


def test_cancel_batch_is_a_plain_exception_subclass():
    assert issubclass(CancelBatchException, Exception)


def test_a_callback_with_its_own_call_keeps_its_dispatch():
    class OwnDispatch(Callback):
        def __init__(self):
            self.seen = []

        def __call__(self, event_name):
            self.seen.append(event_name)

    cb = OwnDispatch()
    bridge = CallbackBridge(cb, recorder=False)
    bridge("before_fit")
    bridge("after_pred")
    assert cb.seen == ["before_fit", "after_pred"]
