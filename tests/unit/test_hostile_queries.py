"""The query parser on any text at all: a parse or a clear QueryError, never anything else."""

from hypothesis import given
from hypothesis import strategies as st

from vtsearch.errors import QueryError
from vtsearch.search.parse import parse_query

words = st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=12)
weights = st.decimals(min_value="0.1", max_value="9.9", places=1)


@given(st.text(max_size=200))
def test_any_text_parses_or_is_a_query_error(text):
    try:
        q = parse_query(text)
    except QueryError as e:
        assert str(e)  # the message says what to do
        return
    assert q.terms and all(t.text and t.text == t.text.strip() for t in q.terms)
    assert any(t.weight > 0 for t in q.terms)


@given(words, st.lists(st.tuples(st.sampled_from("+-"), words, weights), max_size=5))
def test_weighted_terms_round_trip(first, rest):
    text = first + "".join(f" {sign} {w}^{x}" for sign, w, x in rest)
    q = parse_query(text)
    assert q.texts == [first] + [w for _, w, _ in rest]
    assert q.weights == [1.0] + [float(x) * (1 if s == "+" else -1) for s, _, x in rest]


@given(st.sampled_from(["", " "]) | words, st.sampled_from(["0", "0.0", "00", ".0", "2", "0.5"]))
def test_a_weight_without_words_or_a_zero_weight_is_named_as_such(body, weight):
    text = f"{body}^{weight}"
    try:
        parse_query(text)
    except QueryError as e:
        assert "subtract" not in str(e)  # nothing was subtracted
        assert ("no words" if not body.strip() else "weight 0") in str(e)
        return
    assert body.strip() and float(weight) > 0
