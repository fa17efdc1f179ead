"""The one held-out rule: what evaluator text may reach a prompt. Pure.

A reported-only objective (``select = false``, e.g. a held-out test accuracy) never drives
selection and never reaches an LLM, or the search would see the test set. The evaluator's words
(its feedback, a failure's reason, an output tail) are the variant's own text and may quote one,
so every path that puts such text into a prompt (a mutation's or crossover's feedback, a fix
prompt's failure and output, anything else) scrubs it with one :class:`HeldOut`:

- a line naming a withheld metric is replaced by :data:`WITHHELD_LINE`; the name is matched
  without case and with ``_``, ``-``, ``.`` and spaces alike (``test_acc`` finds "Test acc");
- every printed form of a value recorded for a withheld metric (the variant's own and its
  parents': a failed child has none of its own, and its output may print a parent's) is replaced
  by :data:`WITHHELD_VALUE`: its repr, the value rounded to 2 to 8 significant digits, fixed
  decimals, exponent forms, without the leading zero, and as a percentage (a fraction times 100,
  or a percentage over 100), each as a whole number (not inside a longer number or a name).

Only values with at least 2 significant digits are looked for, and only forms that keep at least
2: a withheld 0.5 or 1.0 would otherwise blank every "0.5", "50" or "1" in the text (its line is
still withheld when it names the metric). Rounded forms of 2 digits do blank unrelated numbers
that happen to be equal ("92" for 0.9234): the rule prefers a lost number to a leaked one.
Not covered: a value printed with a decimal comma or spelled in words, and a value the
evaluator printed but never recorded (a child that failed after printing it): only the name rule
catches those lines.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

WITHHELD_VALUE = "[withheld: a reported-only metric]"
WITHHELD_LINE = "[line withheld: it names a reported-only metric]"
MIN_SIGNIFICANT = 2  # the fewest significant digits of a value (and of a form) looked for
MAX_SIGNIFICANT = 8
MAX_DECIMALS = 8
_SEPARATORS = re.compile(r"[\s_.\-]+")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def significant_digits(form: str) -> int:
    """The significant digits of a printed number: its digits without the leading zeros (the
    mantissa's, for an exponent form); trailing zeros count."""
    mantissa = re.split(r"[eE]", form.lstrip("+-"))[0]
    return len(mantissa.replace(".", "").lstrip("0"))


def _value_digits(value: float) -> int:
    """The significant digits of a value itself (its shortest repr; trailing zeros do not count:
    1.0 and 100.0 have one)."""
    mantissa = re.split(r"[eE]", repr(value))[0]
    return len(mantissa.replace(".", "").strip("0"))


def _plain_forms(value: float) -> set[str]:
    """Printed forms of a non-negative ``value``, without the percentage ones."""
    forms = {repr(value), str(value)}
    if value == 0:
        return forms
    exponent = math.floor(math.log10(value))
    for digits in range(MIN_SIGNIFICANT, MAX_SIGNIFICANT + 1):
        decimals = digits - 1 - exponent
        rounded = round(value, decimals)
        forms.add(f"{rounded:.{decimals}f}" if decimals >= 0 else str(int(rounded)))
        forms.add(f"{value:.{digits}g}")
        forms.add(f"{value:.{digits - 1}e}")
    forms |= {f"{value:.{d}f}" for d in range(MAX_DECIMALS + 1)}
    forms |= {form[1:] for form in forms if form.startswith("0.")}  # ".92"
    return {f for f in forms if significant_digits(f) >= MIN_SIGNIFICANT}


def value_forms(value: float) -> set[str]:
    """Every form of ``value`` the rule looks for (empty: under 2 significant digits)."""
    value = abs(float(value))
    if not math.isfinite(value) or _value_digits(value) < MIN_SIGNIFICANT:
        return set()
    forms = _plain_forms(value)
    if value <= 1:
        forms |= _plain_forms(100 * value)  # a fraction printed as a percentage
    elif value <= 100:
        forms |= _plain_forms(value / 100)  # a percentage printed as a fraction
    return forms


def _normal(text: str) -> str:
    return _SEPARATORS.sub(" ", text.lower()).strip()


@dataclass(frozen=True)
class HeldOut:
    """The rule for one prompt: the withheld metrics' names and the values recorded for them."""

    names: tuple[str, ...]
    values: tuple[float, ...] = ()
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        forms = sorted({f for v in self.values for f in value_forms(v)}, key=len, reverse=True)
        if forms:
            alternation = "|".join(re.escape(f) for f in forms)
            pattern = re.compile(rf"(?<![\w.])(?:{alternation})(?!\w|\.\d)")
            object.__setattr__(self, "_pattern", pattern)

    @classmethod
    def of(
        cls, names: Sequence[str], recorded: Iterable[Mapping[str, object] | None] = ()
    ) -> HeldOut:
        """The rule for withheld ``names``, with their finite values from each of ``recorded``
        (metrics dicts: the variant's own, its parents'; None for one without metrics)."""
        values = [m.get(n) for m in recorded if m for n in names]
        return cls(tuple(names), tuple(float(v) for v in values if _is_number(v)))  # type: ignore[arg-type]

    def scrub(self, text: str) -> str:
        """``text`` as a prompt may show it (unchanged when nothing is withheld)."""
        if not text or not self.names:
            return text
        names = [n for n in (_normal(name) for name in self.names) if n]
        lines = []
        for line in text.splitlines():
            if any(n in _normal(line) for n in names):
                lines.append(WITHHELD_LINE)
            elif self._pattern is not None:
                lines.append(self._pattern.sub(WITHHELD_VALUE, line))
            else:
                lines.append(line)
        return "\n".join(lines)


def shown_metrics(
    metrics: Mapping[str, object] | None, selected: Sequence[str]
) -> dict[str, float]:
    """The metrics a prompt may show: the finite values of the selecting objectives only (a
    reported-only objective's value, and any other metric the evaluator wrote, never)."""
    if not metrics:
        return {}
    return {n: float(v) for n in selected if _is_number(v := metrics.get(n))}  # type: ignore[arg-type]
