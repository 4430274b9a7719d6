"""Uploading a finished export folder to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..errors import NeuMuterError


def check_repo_id(repo_id: str) -> None:
    """Refuse, before any work, a ``--push`` target that is not a Hub repo id (``name`` or ``owner/name``)."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        first_line = str(error).strip().splitlines()[0]
        raise NeuMuterError(f"--push {repo_id!r} is not a Hub repo id (owner/name): {first_line}") from None


def push_folder(folder: Path, repo_id: str, private: bool) -> str:
    """Create ``repo_id`` (a model repo; kept if it exists) and upload ``folder`` as one commit. Any failure
    (refused, unreachable Hub, no token) is one line that says the export itself is complete and where."""
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                   commit_message="NeuMuter export")
    except Exception as error:  # noqa: BLE001 - HTTP, connection (httpx, requests) and validation errors alike
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NeuMuterError(f"the export is complete in {folder}, but pushing it to {repo_id} failed: {first_line}") from None
    return str(getattr(commit, "commit_url", repo_id))
