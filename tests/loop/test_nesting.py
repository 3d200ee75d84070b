"""The loop core (`Nesting`) without Lightning, against the chapter's nested try blocks.

`drive` is a loop shaped like Lightning's: it always runs a batch it has started to its end
(backward, step, batch end), and leaves a phase only between batches, once the core says a part
has ended. `Reference` (tests/loop/reference.py) is the chapter's loop written as nested `try`
blocks. For every Cancel exception raised from every event, and for random plans of several
raises, both emit the same events and run the same backward passes and optimizer steps; a
Cancel that would escape the chapter's loop is a `RuntimeError` naming the exception and event.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accel.loop.events import CANCELS as CANCEL_TABLE
from lightning_accel.loop.events import (
    EVENTS,
    PARTS,
    CancelBatchException,
    CancelEpochException,
    CancelException,
    CancelFitException,
    CancelTrainException,
    CancelValidException,
    cancelled_part,
)
from lightning_accel.loop.nesting import Nesting

from .reference import CANCELS, Escaped, Plan, Raiser, Reference, single_raise_cases

_ENDS_TRAINING = {"train", "epoch", "fit"}
_ENDS_VALIDATION = {"validate", "epoch", "fit"}


def drive(
    n_epoch: int, n_train: int, n_valid: int | None, accumulate: int = 1, plan: Plan = ()
) -> tuple[list[str], list[tuple[int, int, bool, bool]]]:
    """Run the core through a Lightning-shaped loop; the events and the (bwd, step) record."""
    raiser = Raiser(plan)
    nest = Nesting(raiser)
    steps: list[tuple[int, int, bool, bool]] = []
    nest.open("fit")
    for epoch in range(n_epoch):
        if "fit" in nest.ended:
            break
        nest.ended -= {"epoch", "train", "validate"}
        nest.open("epoch")
        nest.open("train")
        for i in range(n_train):
            if nest.ended & _ENDS_TRAINING:
                break  # steered: the loop ends after the batch in which the part ended
            nest.open("batch")
            reached_loss = nest.event("after_pred") and nest.event("after_loss")
            did_backward = nest.open("backward")
            nest.close("backward")
            did_step = False
            if (i + 1) % accumulate == 0 or i == n_train - 1:
                did_step = nest.open("step")
                nest.close("step")
            if reached_loss:
                steps.append((epoch, i, did_backward, did_step))
            nest.close("batch")
        nest.close("train")
        if n_valid is not None and not nest.ended & {"epoch", "fit"}:
            nest.open("validate")
            for _ in range(n_valid):
                if nest.ended & _ENDS_VALIDATION:
                    break
                nest.open("batch")
                nest.event("after_pred")
                nest.event("after_loss")
                nest.close("batch")
            nest.close("validate")
        nest.close("epoch")
    nest.close("fit")
    assert nest.parts == (), nest
    return raiser.seq, steps


def _reference(n_epoch, n_train, n_valid, accumulate, plan):
    ref = Reference(n_epoch, n_train, n_valid, accumulate, plan).run()
    return ref.seq, [tuple(s) for s in ref.steps]


SHAPES = [(2, 3, 2, 1), (2, 3, None, 1), (2, 4, 1, 2), (1, 1, 1, 1)]


def _all_single_raises():
    params = []
    for shape in SHAPES:
        allowed, refused = single_raise_cases(*shape)
        for kind, when, at in allowed:
            params.append(pytest.param(shape, kind, when, at, True, id=f"{shape}-{kind}-{when}"))
        for kind, when, at in refused:
            params.append(pytest.param(shape, kind, when, at, False, id=f"{shape}-{kind}-{when}"))
    return params


@pytest.mark.parametrize(("shape", "kind", "when", "at", "allowed"), _all_single_raises())
def test_every_cancel_from_every_event_does_what_the_chapter_does(shape, kind, when, at, allowed):
    plan = [(when, at, CANCELS[kind])]
    if allowed:
        assert drive(*shape, plan) == _reference(*shape, plan)
    else:
        with pytest.raises(RuntimeError, match=f"{CANCELS[kind].__name__} raised in `{when}`"):
            drive(*shape, plan)


def _chained_raises():
    # A Cancel raised while the loop handles another one (in `after_cancel_<part>`): an outer
    # part catches it, and the inner part's `after_<part>` is skipped, as in the chapter.
    shape = (2, 3, 2, 1)
    allowed, _ = single_raise_cases(*shape)
    params = []
    for kind, when, at in allowed:
        for second in CANCELS:
            if second != kind:
                plan = [(when, at, CANCELS[kind]), (f"after_cancel_{kind}", 0, CANCELS[second])]
                params.append(pytest.param(shape, plan, id=f"{kind}-{when}-then-{second}"))
    return params


@pytest.mark.parametrize(("shape", "plan"), _chained_raises())
def test_a_cancel_raised_while_handling_a_cancel_does_what_the_chapter_does(shape, plan):
    try:
        expected = _reference(*shape, plan)
    except Escaped as escaped:
        with pytest.raises(RuntimeError, match=f"{escaped.args[0]} raised in"):
            drive(*shape, plan)
    else:
        assert drive(*shape, plan) == expected


def test_without_cancels_the_sequence_is_the_chapters():
    seq, steps = drive(2, 3, 2, 2)
    assert (seq, steps) == _reference(2, 3, 2, 2, ())
    assert seq[:3] == ["before_fit", "before_epoch", "before_train"] and seq[-1] == "after_fit"
    assert [s[3] for s in steps] == [False, True, True] * 2  # the window of 2, then the last


_RAISE_EVENTS = [e for e in EVENTS if e != "after_create"] + [f"after_cancel_{p}" for p in PARTS]


@settings(max_examples=400, deadline=None)
@given(
    n_epoch=st.integers(1, 3),
    n_train=st.integers(1, 4),
    n_valid=st.one_of(st.none(), st.integers(0, 3)),
    accumulate=st.integers(1, 3),
    plan=st.lists(
        st.tuples(
            st.sampled_from(_RAISE_EVENTS),
            st.integers(0, 2),
            st.sampled_from(list(CANCELS.values())),
        ),
        max_size=4,
    ),
)
def test_random_plans_of_several_raises_match_the_chapter(
    n_epoch, n_train, n_valid, accumulate, plan
):
    try:
        expected = _reference(n_epoch, n_train, n_valid, accumulate, plan)
    except Escaped as escaped:
        with pytest.raises(RuntimeError, match=f"{escaped.args[0]} raised in"):
            drive(n_epoch, n_train, n_valid, accumulate, plan)
    else:
        assert drive(n_epoch, n_train, n_valid, accumulate, plan) == expected


# ---------------------------------------------------------------------- the core's own rules
def test_the_cancel_table_names_every_part_once_and_subclasses_follow_their_base():
    assert sorted(CANCEL_TABLE.values()) == sorted(PARTS)
    for exc, part in CANCEL_TABLE.items():
        assert cancelled_part(exc()) == part

    class MyStop(CancelFitException):
        pass

    assert cancelled_part(MyStop()) == "fit"
    with pytest.raises(TypeError, match="none of the seven"):
        cancelled_part(CancelException())


def test_a_cancel_raised_after_its_part_names_exception_and_event():
    nest = Nesting(Raiser([("after_batch", 0, CancelBatchException)]))
    for part in ("fit", "epoch", "train", "batch"):
        nest.open(part)
    with pytest.raises(RuntimeError, match=r"CancelBatchException raised in `after_batch`") as info:
        nest.close("batch")
    assert isinstance(info.value.__cause__, CancelBatchException)
    assert "before_batch" in str(info.value)


def test_parts_open_only_inside_their_parent():
    nest = Nesting(Raiser())
    with pytest.raises(RuntimeError, match="cannot open `batch` inside `nothing`"):
        nest.open("batch")
    nest.open("fit")
    with pytest.raises(RuntimeError, match="cannot open `train` inside `fit`"):
        nest.open("train")


def test_closing_a_part_closes_what_is_inside_it_first_and_closing_twice_is_harmless():
    raiser = Raiser()
    nest = Nesting(raiser)
    for part in ("fit", "epoch", "train", "batch"):
        nest.open(part)
    nest.close("epoch")
    nest.close("epoch")
    nest.close("fit")
    assert raiser.seq == [
        "before_fit", "before_epoch", "before_train", "before_batch",
        "after_batch", "after_train", "after_epoch", "after_fit",
    ]  # fmt: skip


def test_validation_in_the_middle_of_training_sets_the_training_part_aside():
    # Lightning validates inside its training epoch (val_check_interval < 1): the training part
    # is set aside, so a CancelTrain raised in validation is refused, and training goes on after.
    raiser = Raiser([("before_batch", 1, CancelTrainException)])
    nest = Nesting(raiser)
    for part in ("fit", "epoch", "train", "batch"):
        nest.open(part)
    nest.close("batch")
    assert nest.open("validate") and nest.parts == ("fit", "epoch", "validate")
    assert nest.is_open("train") and nest.is_live("train")
    with pytest.raises(RuntimeError, match="CancelTrainException raised in `before_batch`"):
        nest.open("batch")
    nest.reset()

    raiser = Raiser([("before_validate", 0, CancelValidException)])
    nest = Nesting(raiser)
    for part in ("fit", "epoch", "train"):
        nest.open(part)
    assert not nest.open("validate")
    nest.close("validate")
    assert nest.parts == ("fit", "epoch", "train") and nest.is_live("train")
    assert nest.open("batch")
    assert raiser.seq[-4:] == [
        "before_validate", "after_cancel_validate", "after_validate", "before_batch"
    ]  # fmt: skip


def test_an_epoch_cancel_in_mid_epoch_validation_ends_the_training_part_set_aside():
    raiser = Raiser([("before_validate", 0, CancelEpochException)])
    nest = Nesting(raiser)
    for part in ("fit", "epoch", "train"):
        nest.open(part)
    nest.open("validate")
    nest.close("validate")
    assert nest.parts == ("fit", "epoch", "train") and not nest.is_live("train")
    assert not nest.open("batch")
    nest.close("fit")
    assert raiser.seq == [
        "before_fit", "before_epoch", "before_train", "before_validate",
        "after_cancel_epoch", "after_epoch", "after_fit",
    ]  # fmt: skip
    assert nest.ended == {"epoch"}


def test_a_validation_outside_a_fit_stands_alone():
    raiser = Raiser([("after_loss", 1, CancelValidException)])
    nest = Nesting(raiser)
    assert nest.open("validate")
    for _ in range(3):
        if nest.open("batch"):
            nest.event("after_pred") and nest.event("after_loss")
        nest.close("batch")
    nest.close("validate")
    assert raiser.seq == [
        "before_validate", "before_batch", "after_pred", "after_loss", "after_batch",
        "before_batch", "after_pred", "after_loss", "after_cancel_validate", "after_validate",
    ]  # fmt: skip
    nest = Nesting(Raiser([("before_validate", 0, CancelFitException)]))
    with pytest.raises(RuntimeError, match="CancelFitException raised in `before_validate`"):
        nest.open("validate")


def test_end_follows_another_ranks_cancel_without_after_cancel():
    raiser = Raiser()
    nest = Nesting(raiser)
    for part in ("fit", "epoch", "train", "batch"):
        nest.open(part)
    nest.end("train")
    assert nest.ended == {"train"} and not nest.is_live("batch") and nest.is_live("epoch")
    nest.close("train")
    nest.end("validate")  # not open: only recorded, so the driver still leaves that loop
    assert nest.ended == {"train", "validate"}
    assert raiser.seq == [
        "before_fit", "before_epoch", "before_train", "before_batch", "after_train"
    ]  # fmt: skip
