"""Optional integrations with training frameworks, each logging through :class:`gradwidgets.GradientLogger`.

``gradwidgets.integrations.lightning`` (PyTorch Lightning, extra ``[lightning]``) and
``gradwidgets.integrations.huggingface`` (Hugging Face ``Trainer``, extra ``[huggingface]``). Importing this package
imports neither framework; importing a submodule without its framework raises an ImportError saying what to install.
"""

from __future__ import annotations

__all__: list[str] = []
