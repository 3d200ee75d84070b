"""A fit helper shows what goes wrong in the user's run, not Lightning's notes about itself."""

import warnings

import lightning.pytorch as pl

from lightning_accel.lightning.known_warnings import quiet_known_warnings
from lightning_accel.schedule.fit import fit_one_cycle

from ._tiny import TinyModule, loader

QUIET = dict(
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)
LEAF_SPEC = "`isinstance(treespec, LeafSpec)` is deprecated"


def _messages(record) -> list[str]:
    return [str(w.message) for w in record]


def test_a_bare_lightning_fit_still_warns_about_its_leaf_spec(tmp_path):
    # If this fails, Lightning no longer raises the warning: drop it from KNOWN_WARNINGS.
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pl.Trainer(max_epochs=1, default_root_dir=tmp_path, **QUIET).fit(
            TinyModule(), train_dataloaders=loader(2)
        )
    assert any(m.startswith(LEAF_SPEC) for m in _messages(record))


def test_fit_helpers_silence_only_the_known_warnings(tmp_path):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit_one_cycle(
            TinyModule(), 1, 0.01, train_dataloaders=loader(2), default_root_dir=tmp_path, **QUIET
        )
        with quiet_known_warnings():
            warnings.warn("a user's own FutureWarning", FutureWarning, stacklevel=1)
    messages = _messages(record)
    assert not any(m.startswith(LEAF_SPEC) for m in messages)
    assert "a user's own FutureWarning" in messages
