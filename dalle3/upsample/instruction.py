"""Our instruction to a chat LLM upsampler, in the spirit of DALL-E 3's (appendix C).

The paper's system prompt asks the model to rewrite a request into a descriptive caption
of the style the image model was trained on; ours states the same rules in a few lines,
then shows three (request, description) turns so the model sees the form of the answer
instead of being told it, which small instruction-tuned models follow better.
"""
from __future__ import annotations

from typing import Optional

SYSTEM_PROMPT = (
    "You rewrite a short image request into one concrete visual description for a text-to-image model. "
    "Write 15 to 80 words as plain prose, one paragraph. Keep everything the user asked for: every object, "
    "colour, count, size, position and any text, with the user's own words where you can. Add plausible "
    "detail about the objects, their colours and positions, the background, and any text shown in the "
    "image (quote it exactly). Describe only what is visible. Answer with the description only: no "
    "greeting, no title, no quotes around it, no alternatives, no commentary."
)

FEW_SHOT: tuple[tuple[str, str], ...] = (
    ("a red circle in the top left",
     "A small red circle sits in the top left corner of a plain white background. The rest of the picture is "
     "empty, apart from a large blue square at the bottom right and a small green triangle in the center."),
    ("two cats on a sofa",
     "Two cats curl up side by side on a grey fabric sofa: a ginger tabby on the left and a black cat with "
     "white paws on the right. Soft daylight falls from a window behind them onto a beige wall."),
    ('a shop sign that says "OPEN"',
     'A dark wooden shop sign hangs above a glass door and reads "OPEN" in large white capital letters. '
     "Warm light glows inside the shop, and a potted green plant stands on the pavement to the left."),
)
"Few-shot (request, description) turns after the system instruction."


def chat_messages(prompt: str, system: Optional[str] = None, few_shot: bool = True) -> list[dict]:
    """The conversation a chat model is given for ``prompt``: system, few-shot turns, the request."""
    messages = [{"role": "system", "content": system or SYSTEM_PROMPT}]
    for request, answer in FEW_SHOT if few_shot else ():
        messages += [{"role": "user", "content": request}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": prompt}]


def without_system_role(messages: list[dict]) -> list[dict]:
    """For chat templates that refuse a system turn (Gemma, early Mistral): the instruction opens the first user turn."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    return rest
