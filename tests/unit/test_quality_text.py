"""Row -> text views shared by every quality engine, and the progress wrapper."""
from __future__ import annotations

from tuneforge.data.dedup import exact_duplicates
from tuneforge.data.text import answer_text, format_lines, full_text, progress_iter, prompt_text

MULTI_TURN = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": [{"type": "text", "text": "Name?"}, {"type": "image"}]},
        {"role": "assistant", "content": "Bot"},
    ],
    "meta": {},
}


def test_chat_views():
    assert full_text(MULTI_TURN) == (
        "system: Be brief.\nuser: Hi\nassistant: Hello\nuser: Name?\nassistant: Bot"
    )
    assert prompt_text(MULTI_TURN) == "system: Be brief.\nuser: Hi\nassistant: Hello\nuser: Name?"
    assert answer_text(MULTI_TURN) == "Bot"


def test_prompt_completion_preference_and_text_views():
    pc = {"prompt": "2+2?", "completion": "4"}
    assert (full_text(pc), prompt_text(pc), answer_text(pc)) == ("2+2?\n4", "2+2?", "4")
    pref = {"prompt": "Q", "chosen": "good", "rejected": "bad"}
    assert (full_text(pref), answer_text(pref)) == ("Q\ngood", "good")
    plain = {"text": "raw corpus"}
    assert (full_text(plain), prompt_text(plain), answer_text(plain)) == ("raw corpus", "", "raw corpus")
    no_answer = {"messages": [{"role": "user", "content": "only a question"}]}
    assert (prompt_text(no_answer), answer_text(no_answer)) == ("user: only a question", "")


def test_format_lines_truncates():
    assert format_lines([3, 7]) == "3, 7"
    assert format_lines(range(1, 26), limit=3) == "1, 2, 3 and 22 more"


def test_progress_bars_do_not_change_results(capsys):
    assert list(progress_iter(range(1500), total=1500, description="x", enabled=True)) == list(range(1500))
    rows = [{"prompt": "a", "completion": "b"}] * 3
    assert exact_duplicates(rows, progress=True) == exact_duplicates(rows)
