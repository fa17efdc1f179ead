"""What evaluated code may see of ge's environment: the allow-list, secret names, credential files.

``scrub_env`` builds a sandboxed command's environment from ge's own; ``is_secret_name`` is the
test every executor applies to variable names (credentials never reach evaluated code);
``CREDENTIAL_PATHS`` are the files of a home directory that the bwrap sandbox hides.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

from guided_evolution.errors import GeError

_ALLOWED_NAMES = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "TERM",
    "TZ",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "CONDA_DEFAULT_ENV",
    "LD_LIBRARY_PATH",
    "PYENV_ROOT",
    "PYENV_VERSION",
)
_ALLOWED_PATTERNS = ("LC_*", "NVIDIA_*")
_SECRET_PARTS = (
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "CREDENTIAL",
    "AUTH",
    "COOKIE",
    "PRIVATE",
    "SESSION",
    "SIGNATURE",
    "CERT",
    "_API_",
    "DSN",
    "DATABASE_URL",
)
_SECRET_PREFIXES = (
    "AWS_",
    "AZURE_",
    "GOOGLE_",
    "GCP_",
    "GCLOUD_",
    "GITHUB_",
    "GH_",
    "GITLAB_",
    "HF_",
    "HUGGING",
    "OPENAI",
    "ANTHROPIC",
    "COHERE",
    "MISTRAL",
    "GROQ",
    "DEEPSEEK",
    "GEMINI",
    "TOGETHER",
    "REPLICATE",
    "WANDB",
    "SLACK",
    "STRIPE",
    "SSH_",
    "GPG_",
    "NPM_",
    "PYPI",
    "TWINE_",
    "DOCKER_",
    "LITELLM",
)
CREDENTIAL_PATHS = (
    # relative to each home directory; a directory becomes an empty tmpfs, a file /dev/null
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".netrc",
    ".git-credentials",
    ".pgpass",
    ".npmrc",
    ".pypirc",
    ".huggingface",
    ".cache/huggingface/token",
    ".config/gcloud",
    ".config/gh",
    ".config/hub",
    ".config/litellm",
    ".config/openai",
    ".wandb",
)


def is_secret_name(name: str) -> bool:
    """Whether an environment variable name looks like it carries a credential."""
    upper = name.upper()
    if any(part in upper for part in _SECRET_PARTS):
        return True
    return upper.startswith(_SECRET_PREFIXES) or upper.endswith("_API")


class EnvFilter:
    """``scrub_env`` with its decision per variable name kept: an executor filters ge's
    environment for every evaluation, and the names hardly ever change."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow = tuple(allow)
        for name in self.allow:
            if is_secret_name(name):
                raise GeError(
                    f"evaluator.pass_env names {name!r}, which looks like a secret; "
                    "ge never passes credentials to evaluated code",
                    "remove it from pass_env and give the evaluator what it needs another way",
                )
        self._keeps: dict[str, bool] = {}

    def keeps(self, name: str) -> bool:
        """Whether ``name`` passes: allow-listed (or in ``allow``) and not like a secret."""
        kept = self._keeps.get(name)
        if kept is None:
            kept = not is_secret_name(name) and (
                name in _ALLOWED_NAMES
                or any(fnmatch.fnmatchcase(name, p) for p in _ALLOWED_PATTERNS)
                or any(fnmatch.fnmatchcase(name, p) for p in self.allow)
            )
            self._keeps[name] = kept
        return kept

    def __call__(self, environ: Mapping[str, str]) -> dict[str, str]:
        return {name: value for name, value in environ.items() if self.keeps(name)}


def scrub_env(environ: Mapping[str, str], allow: Iterable[str] = ()) -> dict[str, str]:
    """The allow-listed, secret-free subset of ``environ``.

    ``allow`` adds names (``fnmatch`` patterns allowed) the user lets through; naming a variable
    that looks like a secret raises ``GeError`` instead of leaking it. Pattern matches of the
    built-in allow-list that look like secrets (``NVIDIA_API_KEY``) are dropped silently.
    """
    return EnvFilter(allow)(environ)
