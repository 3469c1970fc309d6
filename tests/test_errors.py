"""The error hierarchy: every class is a LeukoscreenError and also the builtin it refines."""

from __future__ import annotations

import inspect

import pytest

from leukoscreen.model import errors
from leukoscreen.model.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    LeukoscreenError,
    MissingMppError,
    OutputError,
    OutputExistsError,
    SlideReadError,
    SlideTimeoutError,
    StoreLockedError,
    UsageError,
)

# class -> the builtin a caller that does not know leukoscreen would catch it as.
BUILTIN_OF = {
    ConfigError: ValueError,
    UsageError: ValueError,
    SlideReadError: OSError,
    MissingMppError: OSError,
    OutputExistsError: FileExistsError,
    OutputError: OSError,
    CheckpointError: OSError,
    DataError: ValueError,
    StoreLockedError: OSError,
    SlideTimeoutError: TimeoutError,
}


def test_the_table_covers_every_error_class() -> None:
    defined = {
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if obj.__module__ == errors.__name__ and obj is not LeukoscreenError
    }
    assert defined == set(BUILTIN_OF)


@pytest.mark.parametrize("cls", list(BUILTIN_OF), ids=lambda cls: cls.__name__)
def test_error_is_leukoscreen_error_and_its_builtin(cls: type[Exception]) -> None:
    err = cls("/data/slide.svs: something is wrong")
    assert isinstance(err, LeukoscreenError)
    assert isinstance(err, BUILTIN_OF[cls])
    assert str(err) == "/data/slide.svs: something is wrong"


@pytest.mark.parametrize("cls", list(BUILTIN_OF), ids=lambda cls: cls.__name__)
def test_error_is_caught_as_its_builtin(cls: type[Exception]) -> None:
    with pytest.raises(BUILTIN_OF[cls], match=r"^x\.toml: bad$"):
        raise cls("x.toml: bad")


def test_missing_mpp_is_a_slide_read_error() -> None:
    assert isinstance(MissingMppError("s.svs: no mpp"), SlideReadError)


def test_leukoscreen_error_is_not_a_builtin_subclass_beyond_exception() -> None:
    # The base stays neutral so that catching it never swallows unrelated OSErrors/ValueErrors.
    assert LeukoscreenError.__mro__ == (LeukoscreenError, Exception, BaseException, object)
