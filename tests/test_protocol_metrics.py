import pytest

from zerosearch import protocol
from zerosearch.curriculum import NoiseSchedule
from zerosearch.metrics import contains_answer, cover_em, normalize_answer, score_response, strict_em, token_f1


def test_instruction_is_search_r1_wording():
    text = protocol.instruction("who wrote hamlet")
    assert text.startswith("Answer the given question. You must conduct reasoning inside <think> and </think>")
    assert "You can search as many times as your want." in text
    assert text.endswith("Question: who wrote hamlet?\n")
    assert protocol.chat_prompt("q")[0]["role"] == "user"


@pytest.mark.parametrize("text,kind,content", [
    ("<think>x</think><search> capital of France </search>", "search", "capital of France"),
    ("<answer> Paris </answer><search>q</search>", "answer", "Paris"),
    ("<search>first</search> then <search>second</search>", "search", "first"),
    ("<think>no action</think>", "invalid", ""),
    ("<search>unclosed", "invalid", ""),
    ("<search>a</answer>", "invalid", ""),
])
def test_parse_action_first_complete_tag_wins(text, kind, content):
    a = protocol.parse_action(text)
    assert (a.kind, a.content) == (kind, content)


def test_observation_text():
    assert protocol.observation(" docs ") == "\n\n<information>docs</information>\n\n"
    assert "put the query between <search> and </search>" in protocol.INVALID_ACTION


def test_answer_is_read_from_the_response_only():
    # The instruction's own example (<answer> Beijing </answer>) is in the prompt, never in the response.
    assert protocol.extract_answer("no answer here") is None
    assert protocol.extract_answer("<answer> a </answer> then <answer> b </answer>") == "b"
    assert protocol.extract_answer("<information>d</information>\n\n<answer>\n<answer> c </answer>") == "c"
    s = score_response("I think it is Beijing", ["Beijing"])
    assert (s.strict_em, s.cover_em, s.f1) == (0.0, 0.0, 0.0)


def test_strict_and_cover_em_differ():
    assert normalize_answer("The  Beijing, city!") == "beijing city"
    assert strict_em("the beijing city", ["Beijing"]) == 0.0
    assert cover_em("the beijing city", ["Beijing"]) == 1.0
    assert strict_em("Beijing.", ["beijing"]) == 1.0
    assert token_f1("the beijing city", ["Beijing"]) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert strict_em(None, ["x"]) == cover_em(None, ["x"]) == token_f1(None, ["x"]) == 0.0
    assert token_f1("", ["x"]) == 0.0


@pytest.mark.parametrize("text,answers,found,found_with_blanks", [
    ("Doc 1(Title: Paris) The capital is PARIS.", ["paris"], True, True),
    ("Parisian food", ["Paris"], True, True),  # a substring, as cover EM
    ("the city of rome", ["Paris", "Rome"], True, True),
    ("nothing here", ["Paris", "Rome"], False, False),
    ("nothing here", ["The"], False, True),  # normalises to nothing
    ("nothing here", ["?!"], False, True),
    ("nothing here", [""], False, False),
    ("nothing here", [], False, False),
])
def test_answer_containment(text, answers, found, found_with_blanks):
    assert contains_answer(text, answers) is found
    assert contains_answer(text, answers, blank_matches=True) is found_with_blanks
    assert cover_em(text, answers) == float(found)


def test_token_f1_is_a_symmetric_bag_of_words_f1():
    # repeated words count once per match: 2 shared of 4 and of 3 words
    assert token_f1("x y y z", ["y z w"]) == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    assert token_f1("y z w", ["x y y z"]) == token_f1("x y y z", ["y z w"])
    assert token_f1("The Rome, city", ["rome CITY"]) == 1.0


def test_curriculum_matches_the_paper():
    sched = NoiseSchedule(0.0, 0.75, base=4)
    got = [sched(s, 100) for s in (0, 25, 50, 75, 100)]
    assert got == pytest.approx([0.0, 0.104, 0.250, 0.457, 0.750], abs=1e-3)
    llama = NoiseSchedule(0.25, 0.5)
    assert [round(llama(s, 100), 3) for s in (0, 25, 50, 75, 100)] == [0.25, 0.285, 0.333, 0.402, 0.5]
    assert NoiseSchedule.constant(0.5)(37, 100) == 0.5
    assert sched(150, 100) == pytest.approx(0.75)  # clamped past the end


@pytest.mark.parametrize("kw", [{"start": -0.1}, {"end": 1.5}, {"kind": "linear"}, {"base": 1.0}])
def test_curriculum_rejects_bad_settings(kw):
    with pytest.raises(ValueError):
        NoiseSchedule(**kw)
