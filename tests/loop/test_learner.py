"""The `Learner`: state, callbacks by name, add/remove/added_cbs, and `after_create`."""

from __future__ import annotations

import pytest

from lightning_accel import Callback, Learner


class Recorderish(Callback):
    pass


def _named(name: str, **attrs) -> Callback:
    return type(name, (Callback,), attrs)()


def test_add_remove_and_added_cbs():
    learn = Learner()
    extra = Recorderish()
    with learn.added_cbs(extra):
        assert learn.recorderish is extra and extra.learn is learn
    assert extra not in learn.cbs and extra.learn is None
    learn.add_cbs(Recorderish)  # a class is instantiated
    assert isinstance(learn.recorderish, Recorderish)
    learn.remove_cbs(Recorderish)
    assert not any(isinstance(cb, Recorderish) for cb in learn.cbs)
    before = list(learn.cbs)
    with pytest.raises(TypeError, match="cbs must be"):
        learn.add_cbs(Recorderish(), object())
    assert learn.cbs == before  # nothing half-attached
    with pytest.raises(ValueError, match="cycle"):
        learn.add_cbs(_named("X", run_before="y"), _named("Y", run_before="x"))
    assert learn.cbs == before
    kept = Recorderish()
    learn.add_cbs(kept)
    with learn.added_cbs(Recorderish):
        assert sum(isinstance(cb, Recorderish) for cb in learn.cbs) == 2
    assert [cb for cb in learn.cbs if isinstance(cb, Recorderish)] == [kept]


def test_after_create_fires_once_per_callback_when_there_is_a_model():
    seen = []

    class Created(Callback):
        def after_create(self):
            seen.append((self, self.model))

    learn = Learner()
    early = Created()
    learn.add_cbs(early)
    assert seen == []  # no model yet
    learn.model = "the model"
    learn.create_callbacks()
    late = Created()
    learn.add_cbs(late)
    learn.create_callbacks()
    assert seen == [(early, "the model"), (late, "the model")]


def test_x_and_y_are_detuplified_and_read_only():
    learn = Learner()
    learn.xb, learn.yb = ("x",), ("y1", "y2")
    assert learn.x == "x" and learn.y == ("y1", "y2")
    with pytest.raises(AttributeError):
        learn.x = "other"


def test_a_missing_attribute_is_a_clear_error():
    with pytest.raises(AttributeError, match="the learner has no attribute 'recorder'"):
        _ = Learner().recorder
