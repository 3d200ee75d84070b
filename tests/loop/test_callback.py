"""The `Callback` base: names, reading the learner, ordering rules, checkpoint keys."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accel import Callback, Learner, sort_callbacks
from lightning_accel.loop.callback import unique_state_keys, unmatched_constraints


class Recorderish(Callback):
    pass


class TerminateOnNaNCallback(Callback):
    pass


def _named(name: str, **attrs) -> Callback:
    return type(name, (Callback,), attrs)()


def test_name_is_snake_case_without_callback_suffix():
    assert Recorderish().name == "recorderish"
    assert TerminateOnNaNCallback().name == "terminate_on_nan"
    assert type("RNNRegularizer", (Callback,), {})().name == "rnn_regularizer"
    assert type("MixUp", (Callback,), {})().name == "mix_up"


def test_reading_falls_through_to_the_learner_and_writing_warns_on_shadowing():
    learn = Learner()
    cb = Recorderish()
    learn.add_cbs(cb)
    learn.loss = 3.0
    assert cb.loss == 3.0
    assert cb.learn.recorderish is cb  # callbacks by name on the learner
    with pytest.warns(UserWarning, match=r"shadows the learner's `loss`.*self\.learn\.loss"):
        cb.loss = 5.0
    assert learn.loss == 3.0 and cb.loss == 5.0
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
        Learner().add_cbs(Typo())
    messages = [str(w.message) for w in record]
    assert any("befor_batch" in m and "before_batch" in m for m in messages)
    assert any("after_bacth" in m and "after_batch" in m for m in messages)
    assert not any("helper" in m for m in messages)


# ---------------------------------------------------------------------- ordering
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


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"run_before": "Selfish"}, r"Selfish.run_before names 'Selfish', which is the callback"),
        ({"run_after": "selfish"}, r"Selfish.run_after names 'selfish', which is the callback"),
        ({"run_after": Callback}, r"Selfish.run_after names Callback, which is the callback"),
        ({"run_before": ["other", 3]}, r"Selfish.run_before must name callbacks.*got 3"),
    ],
)
def test_a_callback_naming_itself_is_refused(attrs, message):
    cb = _named("Selfish", **attrs)
    learn = Learner()
    with pytest.raises((ValueError, TypeError), match=message):
        learn.add_cbs(cb)
    assert learn.cbs == []  # nothing attached
    with pytest.raises((ValueError, TypeError), match=message):
        sort_callbacks([cb])


def test_a_constraint_naming_no_attached_callback_warns_when_the_fit_sorts():
    a = _named("A", run_before="Missing")
    b = _named("B", run_after=("A", Recorderish))
    assert unmatched_constraints([a, b]) == [
        "A.run_before = 'Missing'",
        "B.run_after = Recorderish",
    ]
    learn = Learner()
    learn.add_cbs(a, b)  # attaching one by one is fine: the check waits for the fit
    with pytest.warns(UserWarning) as record:
        learn.sort_cbs()
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert "A.run_before = 'Missing' names no attached callback" in messages[0]
    learn.add_cbs(Recorderish(), _named("Missing"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learn.sort_cbs()
    names = [type(cb).__name__ for cb in learn.cbs]
    assert names.index("A") < names.index("Missing")
    assert names.index("A") < names.index("B") and names.index("Recorderish") < names.index("B")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 7), data=st.data())
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


# ---------------------------------------------------------------------- checkpoint keys
def test_state_keys_are_unique_per_instance_in_attachment_order():
    first, second, other = Recorderish(), Recorderish(), TerminateOnNaNCallback()
    assert first.state_key == "Recorderish"
    keyed = unique_state_keys([first, other, second])
    assert keyed == {"Recorderish": first, "TerminateOnNaNCallback": other, "Recorderish#2": second}

    class Keyed(Callback):
        def __init__(self, tag):
            self.tag = tag

        @property
        def state_key(self):
            return f"Keyed[{self.tag}]"

    a, b = Keyed("a"), Keyed("b")
    assert unique_state_keys([b, a]) == {"Keyed[b]": b, "Keyed[a]": a}
