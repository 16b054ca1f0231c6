import pytest
from hypothesis import given
from hypothesis import strategies as st

from vtsearch.errors import QueryError
from vtsearch.search.parse import parse_query


def test_plain_text_is_one_positive_term():
    q = parse_query("  a dog running on the beach ")
    assert q.texts == ["a dog running on the beach"]
    assert q.weights == [1.0]


def test_signed_and_weighted_terms():
    q = parse_query("a beach - people + sunset^0.5 - rain^2")
    assert q.texts == ["a beach", "people", "sunset", "rain"]
    assert q.weights == [1.0, -1.0, 0.5, -2.0]


def test_hyphenated_words_stay_whole():
    assert parse_query("a black-and-white photo").texts == ["a black-and-white photo"]


@pytest.mark.parametrize("bad", ["", "   ", "- people"])
def test_empty_or_only_negative_is_refused(bad):
    with pytest.raises(QueryError):
        parse_query(bad)


words = st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=12)


@given(st.lists(st.tuples(st.sampled_from("+-"), words), min_size=0, max_size=5), words)
def test_round_trip_of_generated_queries(rest, first):
    text = first + "".join(f" {sign} {w}" for sign, w in rest)
    q = parse_query(text)
    assert q.texts == [first] + [w for _, w in rest]
    assert q.weights == [1.0] + [1.0 if s == "+" else -1.0 for s, _ in rest]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("^2", "has a weight but no words"),
        ("a beach + ^0.5", "has a weight but no words"),
        ("cat^0", "'cat^0' has weight 0, so it counts for nothing"),
        ("- cat^0", "'cat^0' has weight 0, so it counts for nothing"),
        ("- people", "only subtracts terms"),
        ("- people - rain^2", "only subtracts terms"),
    ],
)
def test_refusals_say_what_is_wrong_with_this_query(text, says):
    with pytest.raises(QueryError) as e:
        parse_query(text)
    assert says in str(e.value)
    if "subtracts" not in says:
        assert "subtract" not in str(e.value)  # nothing was subtracted: do not say so


def test_a_zero_weight_beside_a_positive_term_is_kept_harmless():
    assert parse_query("a dog + cat^0").weights == [1.0, 0.0]
