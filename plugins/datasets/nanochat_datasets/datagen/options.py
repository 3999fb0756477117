"""Options of the built-in datagen templates (imported at registration: keep it light)."""

from __future__ import annotations

from dataclasses import dataclass

from nanochat.core.config import option


@dataclass
class IdentityTemplateOptions:
    """Options of the ``identity`` template.

    Attributes:
        name: the assistant's name (answers about its name must say it).
        creator: who built it.
        facts: a text file of more facts about the assistant, one per line (added to the
            built-in ones that follow from name and creator).
        system_prompt: send the facts to the teacher as a system message (off only for a
            teacher whose context cannot hold them, such as a tiny test model).
        max_tokens: the teacher's answer budget.
        temperature: the teacher's sampling temperature.
        min_chars: shorter answers are rejected.
        max_chars: longer answers are rejected.
    """

    name: str = "nanochat"
    creator: str = "the nanochat project"
    facts: str = ""
    system_prompt: bool = True
    max_tokens: int = option(256, ge=1, le=32_768)
    temperature: float = option(0.9, ge=0, le=2)
    min_chars: int = option(8, ge=1)
    max_chars: int = option(1500, ge=1)


@dataclass
class MathTemplateOptions:
    """Options of the ``math-word-problems`` template.

    Attributes:
        min_steps: fewest calculation steps asked for.
        max_steps: most calculation steps asked for (and accepted).
        max_value: the largest starting number asked for.
        max_tokens: the teacher's answer budget.
        temperature: the teacher's sampling temperature.
        calculator: the tool that checks every step (a tool name, e.g. ``calculator``).
    """

    min_steps: int = option(2, ge=1, le=20)
    max_steps: int = option(4, ge=1, le=20)
    max_value: int = option(100, ge=2)
    max_tokens: int = option(700, ge=1, le=32_768)
    temperature: float = option(0.8, ge=0, le=2)
    calculator: str = "calculator"
