"""``model.config``: the folder's config.json with attribute access, like transformers' PretrainedConfig.

Read-only (a loaded ONNX graph cannot change shape or head, so editing its config would only mislead).
``id2label`` has int keys and ``label2id`` int values, ``num_labels`` is derived, as transformers does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ModelLoadError


class Config:
    """Attribute access to config.json (``config.id2label``, ``config.hidden_size``); read-only.

    Example:
        >>> model.config.id2label
        {0: 'NEGATIVE', 1: 'POSITIVE'}
    """

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any], labels: dict[int, str] | None = None):
        data = dict(data)
        id2label = data.get("id2label")
        if isinstance(id2label, dict) and id2label:
            id2label = {int(k): str(v) for k, v in id2label.items()}
        elif labels:
            id2label = dict(labels)
        else:
            id2label = {i: f"LABEL_{i}" for i in range(int(data.get("num_labels", 2)))}
        data["id2label"] = id2label
        data["label2id"] = {v: k for k, v in id2label.items()}
        data["num_labels"] = len(id2label)
        object.__setattr__(self, "_data", data)

    @classmethod
    def from_folder(cls, folder: Path, labels: dict[int, str] | None = None) -> Config:
        path = Path(folder) / "config.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}  # older folders: what the manifest knows (labels) is still there
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot read {path}: {e}") from e
        if not isinstance(data, dict):
            raise ModelLoadError(f"{path} is not a JSON object")
        return cls(data, labels)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"this model's config.json has no {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"config is read-only: the exported ONNX graph cannot change ({name}={value!r})")

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._data))

    def get(self, name: str, default: Any = None) -> Any:
        return self._data.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        """A copy of every field, as transformers' ``PretrainedConfig.to_dict``."""
        data: dict[str, Any] = json.loads(json.dumps(self._data, default=str))
        data["id2label"] = dict(self._data["id2label"])  # int keys, as transformers
        return data

    def __repr__(self) -> str:
        return f"Config({json.dumps(self._data, indent=2, sort_keys=True, default=str)})"
