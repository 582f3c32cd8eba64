"""Argument checks share one wording: '<name> must be <expected>; got <what came>'."""
import pytest

from aggressive_vi._impl import checks


@pytest.mark.parametrize("fn,args,message", [
    (checks.positive_int, ("window", 0), "window must be a positive int; got 0"),
    (checks.positive_int, ("window", True), "window must be a positive int; got True"),
    (checks.non_negative_int, ("n", -1), "n must be a non-negative int; got -1"),
    (checks.positive_float_or_none, ("clip", "5"), "clip must be a positive number or None; got '5'"),
    (checks.non_negative_float, ("threshold", -0.1), "threshold must be a non-negative number; got -0.1"),
    (checks.one_of, ("mode", "x", ("a", "b")), "mode must be one of \\('a', 'b'\\); got 'x'"),
    (checks.has_method, ("stopping", object(), "should_stop", "should_stop(event)"),
     "stopping must have a method should_stop\\(event\\); got a object"),
    (checks.is_callable, ("schedule", 3, "schedule(step)"), "schedule must be callable as schedule\\(step\\); got 3"),
])
def test_messages_name_the_argument_the_expectation_and_what_came(fn, args, message):
    with pytest.raises((ValueError, TypeError), match=message):
        fn(*args)


def test_valid_values_pass_through():
    assert checks.positive_int("n", 3) == 3 and checks.positive_float_or_none("c", None) is None
    assert checks.positive_float_or_none("c", 5) == 5.0 and checks.one_of("m", "a", ("a",)) == "a"
