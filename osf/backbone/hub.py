"""Backbone checkpoints by name on the Hugging Face Hub: ``hf://org/repo[@revision]/path/file.pth``.

Files come through ``huggingface_hub`` (``hf_hub_download``), so its cache (``HF_HUB_CACHE`` /
``HF_HOME``), offline mode (``HF_HUB_OFFLINE=1``) and token apply. ``@revision`` pins a branch, tag,
commit or ``refs/pr/N``. For a ``.pth``/``.pt`` name the ``.safetensors`` twin is fetched instead
when the repository (or, offline, the cache) has it: same tensors and metadata, no pickle.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from osf.backbone.errors import CheckpointError

__all__ = ["HF_SCHEME", "HubFile", "is_hub_uri", "parse_hub_uri", "resolve_hub_file"]

HF_SCHEME = "hf://"  # Hub files by name
_PTH_SUFFIXES = (".pth", ".pt")
# Revisions containing "/" that the Hub's own URI grammar accepts after "@".
_SPECIAL_REF = re.compile(r"^(refs/pr/\d+|refs/convert/[\w.-]+)(/|$)")


@dataclass(frozen=True)
class HubFile:
    """One file of a Hub model repository, optionally at a pinned revision."""

    repo_id: str
    filename: str
    revision: str | None = None

    @property
    def uri(self) -> str:
        """The ``hf://`` form, as a user would write it."""
        rev = f"@{self.revision}" if self.revision else ""
        return f"{HF_SCHEME}{self.repo_id}{rev}/{self.filename}"

    def candidates(self) -> list[str]:
        """File names to try in order: the ``.safetensors`` twin of a ``.pth``/``.pt`` first."""
        stem, suffix = os.path.splitext(self.filename)
        return [stem + ".safetensors", self.filename] if suffix in _PTH_SUFFIXES else [self.filename]


def is_hub_uri(path: str | os.PathLike | None) -> bool:
    """True for strings starting with ``hf://``."""
    return isinstance(path, str) and path.startswith(HF_SCHEME)


def parse_hub_uri(uri: str) -> HubFile:
    """Split ``hf://[models/]org/repo[@revision]/path`` into repository, revision and file."""
    body = uri.removeprefix(HF_SCHEME)
    head, _, rest = body.partition("/")
    if head in ("datasets", "spaces", "buckets", "kernels"):
        raise CheckpointError(uri, f"names a {head} location; backbones live in model repositories (hf://org/repo/file)")
    if head == "models":
        head, _, rest = rest.partition("/")
    name, _, tail = rest.partition("/")
    revision = None
    if "@" in name:
        name, _, revision = name.partition("@")
        special = _SPECIAL_REF.match(f"{revision}/{tail}")
        if special:
            revision, tail = special.group(1), f"{revision}/{tail}"[special.end():]
    if not head or not name or not tail or tail.endswith("/") or revision == "":
        raise CheckpointError(uri, "is not a Hub file URI; expected hf://org/repo[@revision]/file.pth")
    return HubFile(f"{head}/{name}", tail, revision)


def _not_found_problem(ref: HubFile, tried: list[str], offline_misses: list[str]) -> str:
    from huggingface_hub import constants

    where = f"at revision {ref.revision!r}" if ref.revision else "on its default branch"
    if offline_misses:
        mode = "HF_HUB_OFFLINE=1" if constants.HF_HUB_OFFLINE else "the Hub could not be reached"
        return (
            f"not in the Hugging Face cache {constants.HF_HUB_CACHE} {where} ({mode}; looked for {tried}); "
            f"download it once online (hf download {ref.repo_id} {ref.filename}) or pass a local path"
        )
    return f"the repository {ref.repo_id} has no file {' or '.join(tried)} {where}"


def resolve_hub_file(uri: str) -> Path:
    """Local cached path of ``uri`` (downloading it if needed); :class:`CheckpointError` naming ``uri`` otherwise."""
    ref = parse_hub_uri(uri)
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as err:  # an OSF dependency, but installs can be partial
        raise CheckpointError(uri, f"hf:// paths need huggingface_hub>=0.34 ({err}); pip install huggingface_hub") from err

    tried, offline_misses = ref.candidates(), []
    for filename in tried:
        try:
            return Path(hf_hub_download(ref.repo_id, filename, revision=ref.revision))
        except LocalEntryNotFoundError:  # not cached and no connection (or offline mode)
            offline_misses.append(filename)
        except EntryNotFoundError:  # the repository has no such file: try the next candidate
            continue
        except RevisionNotFoundError as err:
            raise CheckpointError(uri, f"revision {ref.revision!r} not found in {ref.repo_id}") from err
        except RepositoryNotFoundError as err:  # also gated/private without a token
            raise CheckpointError(uri, f"repository {ref.repo_id} not found on the Hub (or not accessible)") from err
        except (HfHubHTTPError, OSError) as err:
            raise CheckpointError(uri, f"download failed ({type(err).__name__}: {err})") from err
    raise CheckpointError(uri, _not_found_problem(ref, tried, offline_misses))
