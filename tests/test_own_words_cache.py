"""The echo check's masked prompt is rendered once per distinct masked variables (agents.llm_user.prompts)."""

from __future__ import annotations

from agents.llm_user import prompts
from agents.llm_user.specs import PAGE_REACTION
from simenv.llm.prompt_spec import masked


def _variables(title: str, page_number: int) -> dict:
    return {
        "taste": f"You like films such as {title}.",
        "page_number": page_number,
        "memories": [f"I watched {title}"],
        "watched": [{"text": title, "rating": 4}],
        "skipped": ["Other"],
        "left": False,
        "example": '{"feelings": ["I liked it because"]}',
    }


def test_masked_prompts_that_differ_only_in_data_share_one_render() -> None:
    template = PAGE_REACTION.template()
    prompts._OWN_WORDS.clear()
    one = masked(_variables("Star Wars", 2), PAGE_REACTION.data_vars)
    two = masked(_variables("Casablanca", 2), PAGE_REACTION.data_vars)
    text = prompts._own_words(template, one)
    assert text == "\n".join(m.content for m in template.render(**one))  # what was rendered before, uncached
    assert "Star Wars" not in text and "Page 2" in text
    assert prompts._own_words(template, two) == text and len(prompts._OWN_WORDS) == 1
    other = prompts._own_words(template, masked(_variables("Star Wars", 3), PAGE_REACTION.data_vars))
    assert "Page 3" in other and len(prompts._OWN_WORDS) == 2
