import math

import numpy as np
import pytest

from zerosearch.engines.base import NOISY, USEFUL, SearchRequest, parse_noise


@pytest.mark.parametrize("value,parsed", [
    ("useful", USEFUL), ("noisy", NOISY), (0, 0.0), (1, 1.0), (0.25, 0.25), (1.0, 1.0), (np.float32(0.5), 0.5),
])
def test_accepted(value, parsed):
    got = parse_noise(value)
    assert got == parsed and type(got) is type(parsed)


@pytest.mark.parametrize("value", [
    "Useful", "sometimes", "", "0.3", -0.1, 1.5, 10**400, math.nan, math.inf, -math.inf, True, False, None,
    [0.1], {"p": 0.1}, np.bool_(True),
])
def test_refused(value):
    with pytest.raises(ValueError, match=r"^noise must be 'useful', 'noisy' or a probability in \[0, 1\], not "):
        parse_noise(value)


@pytest.mark.parametrize("value,parsed", [("0.3", 0.3), ("1", 1.0), ("0", 0.0), ("noisy", NOISY), (0.5, 0.5)])
def test_text_takes_numbers_written_as_strings(value, parsed):
    assert parse_noise(value, text=True) == parsed


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "-0.5", "1.01", "0.3x", "", "True"])
def test_text_still_refuses_what_is_not_a_probability(value):
    with pytest.raises(ValueError, match="^--noise must be"):
        parse_noise(value, "--noise", text=True)


def test_a_search_request_checks_its_noise():
    assert SearchRequest("q", noise=1).noise == 1.0
    assert SearchRequest("q").noise is None
    with pytest.raises(ValueError, match="noise"):
        SearchRequest("q", noise=True)
    with pytest.raises(ValueError, match="noise"):
        SearchRequest("q", noise="0.3")
