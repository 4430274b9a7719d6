"""Uploading a finished export folder to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, HFValidationError

from ..errors import NeuMuterError


def push_folder(folder: Path, repo_id: str, private: bool) -> str:
    """Create ``repo_id`` (a model repo; kept if it exists) and upload ``folder`` as one commit."""
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                   commit_message="NeuMuter export")
    except (HfHubHTTPError, HFValidationError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NeuMuterError(f"the export is complete in {folder}, but pushing it to {repo_id} failed: {first_line}") from None
    return str(getattr(commit, "commit_url", repo_id))
