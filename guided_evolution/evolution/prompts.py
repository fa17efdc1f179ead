"""Prompt library: plain-text prompt files with `{{name}}` placeholders, rendered brace-safely.

A prompt file is the user message, or is split into chat messages by marker lines
`---system---`, `---user---` (and `---assistant---`). `{{>other}}` includes the file `other.txt`
of the library (template text, so its placeholders are filled too). Values are substituted in a
single pass and never re-scanned, so code with braces, `$`, `{{x}}` or f-strings is inserted as is.

Run-wide values (``with_values``): what every render may use without the caller passing it, the
run's ``task`` and the names and directions of its ``objectives`` (a request's own values win: an
operator passes the objectives with the parents' values). ``load`` starts from neutral defaults.

Lookup: the built-in prompts (the repository's `prompts/`, installed as the package
`guided_evolution.builtin_prompts`), then each extra directory (the seed's own `prompts/`), whose
files add to or override the built-ins by name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import guided_evolution
from guided_evolution.errors import GeError

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_INCLUDE = re.compile(r"\{\{>\s*([A-Za-z0-9_.\-]+)\s*\}\}")
_SECTION = re.compile(r"^---(system|user|assistant)---[ \t]*$", re.MULTILINE)
_MAX_INCLUDE_DEPTH = 8
_BUILTIN_PACKAGE = "guided_evolution.builtin_prompts"  # the repository's prompts/, installed
NO_TASK = "No description was given. Make the program better on the objectives below."
NO_OBJECTIVES = "How each version is judged: by the measurements of its evaluation."
DEFAULT_VALUES: dict[str, str] = {"task": NO_TASK, "objectives": NO_OBJECTIVES}


def builtin_dir() -> Path:
    """The built-in prompt directory: the `prompts/` of the source checkout the package was
    imported from, else the installed `guided_evolution.builtin_prompts` package.

    The checkout's own directory comes first, so that a checkout on `PYTHONPATH` never reads
    the prompts of another checkout that an editable install maps the package name to.
    """
    beside = Path(guided_evolution.__file__).resolve().parent.parent / "prompts"
    if (beside / "system.txt").is_file() and (beside.parent / "pyproject.toml").is_file():
        return beside
    try:
        root = resources.files(_BUILTIN_PACKAGE)
    except ModuleNotFoundError:
        return Path(guided_evolution.__file__).resolve().parent.parent / "prompts"
    return Path(str(root))


@dataclass(frozen=True)
class PromptFile:
    """One prompt file of the library."""

    name: str
    path: Path
    text: str


def _sections(prompt: PromptFile) -> list[tuple[str, str]]:
    """Split a prompt's text into (role, template) pairs by its section marker lines."""
    matches = list(_SECTION.finditer(prompt.text))
    if not matches:
        return [("user", prompt.text)]
    lead = prompt.text[: matches[0].start()]
    if lead.strip():
        raise GeError(
            f"prompt file {prompt.path} has text before its first section marker",
            "start the file with ---system--- or ---user---, or remove the markers",
        )
    out = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(prompt.text)
        out.append((match.group(1), prompt.text[match.end() : end]))
    return out


class PromptLibrary:
    """Named prompt files; later directories override earlier ones by file name."""

    def __init__(self, files: dict[str, PromptFile], values: dict[str, str] | None = None) -> None:
        self._files = dict(files)
        self._values = dict(DEFAULT_VALUES if values is None else values)

    def with_values(self, **values: str) -> PromptLibrary:
        """A copy whose renders also fill ``values`` (run-wide: the task, the objectives); a
        value passed to ``render`` wins over these."""
        return PromptLibrary(self._files, {**self._values, **values})

    @classmethod
    def load(cls, extra_dirs: Sequence[Path] = ()) -> PromptLibrary:
        """Read the built-in prompts, then each existing directory of `extra_dirs` (overrides)."""
        base = builtin_dir()
        if not base.is_dir():
            raise GeError(
                f"the built-in prompt directory {base} is missing",
                "reinstall ge (pip install . or pip install -e . from its source tree)",
            )
        files: dict[str, PromptFile] = {}
        for directory in (base, *map(Path, extra_dirs)):
            if not directory.is_dir():
                continue
            for path in sorted(directory.glob("*.txt")):
                try:
                    text = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise GeError(
                        f"cannot read prompt file {path}: {exc}", "make it a UTF-8 text file"
                    ) from exc
                files[path.stem] = PromptFile(path.stem, path, text)
        return cls(files)

    def with_part(self, name: str, replacement: str) -> PromptLibrary:
        """A copy in which prompt `name` (and every `{{>name}}` include) resolves to the file of
        `replacement`: diff edits render the same task prompts with `diff_rules` as `rules`."""
        return PromptLibrary({**self._files, name: self._get(replacement)}, self._values)

    def names(self) -> list[str]:
        """Every prompt name, sorted (partials such as `rules` included)."""
        return sorted(self._files)

    def __contains__(self, name: object) -> bool:
        return name in self._files

    def path(self, name: str) -> Path:
        """The file a prompt name resolves to."""
        return self._get(name).path

    def _get(self, name: str) -> PromptFile:
        try:
            return self._files[name]
        except KeyError:
            raise GeError(
                f"unknown prompt {name!r}",
                f"add prompts/{name}.txt to the seed; known prompts: {', '.join(self.names())}",
            ) from None

    def _expand(self, template: str, owner: PromptFile, depth: int = 0) -> str:
        """Replace `{{>name}}` includes by the included files' text, recursively."""

        def include(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self._files:
                raise GeError(
                    f"prompt file {owner.path} includes {{{{>{name}}}}}, which is not in the library",
                    f"add prompts/{name}.txt or remove the include",
                )
            if depth >= _MAX_INCLUDE_DEPTH:
                raise GeError(
                    f"prompt file {owner.path}: includes nested deeper than {_MAX_INCLUDE_DEPTH}",
                    "check the includes for a cycle",
                )
            part = self._files[name]
            return self._expand(part.text.strip("\n"), part, depth + 1)

        return _INCLUDE.sub(include, template)

    def placeholders(self, name: str) -> set[str]:
        """The placeholder names a prompt (with its includes) needs from its caller: those the
        library has no run-wide value for."""
        prompt = self._get(name)
        return {
            m.group(1)
            for _, template in _sections(prompt)
            for m in _PLACEHOLDER.finditer(self._expand(template, prompt))
        } - set(self._values)

    def render(self, name: str, **values: str) -> list[dict[str, str]]:
        """Chat messages of prompt `name` with its placeholders filled from `values`."""
        prompt = self._get(name)
        values = {**self._values, **values}
        messages: list[dict[str, str]] = []
        for role, template in _sections(prompt):
            text = self._expand(template, prompt)

            def fill(match: re.Match[str]) -> str:
                key = match.group(1)
                if key not in values:
                    raise GeError(
                        f"prompt file {prompt.path} uses placeholder {{{{{key}}}}}, which has no value",
                        f"placeholders available here: {', '.join(sorted(values)) or 'none'}",
                    )
                return str(values[key])

            content = _PLACEHOLDER.sub(fill, text).strip()
            if content:
                messages.append({"role": role, "content": content})
        if not messages:
            raise GeError(f"prompt file {prompt.path} is empty", "write the prompt text into it")
        return messages
