"""sentence-transformers input module for a raysparse model whose priors no standard module expresses.

Written next to the model by ``raysparse export --format sentence-transformers`` and loaded with
``sentence_transformers.SparseEncoder(path, trust_remote_code=True)``. It needs torch, transformers and
sentence-transformers only (not raysparse): the whole raysparse encoder -- masked-LM logits, the lexical (BM25) and
translation priors, max-pooling, the special-token mask -- is one TorchScript file traced by raysparse with two methods,
``forward`` (documents) and ``query_forward`` (queries, incl. inference-free weights), so nothing of the model's math
is re-implemented here; pruning (top-k per side, threshold, from the model's encoding spec) is traced into it too.

The traced graph runs on CPU (tracing fixed the device of the tensors it creates); on a GPU machine inputs are moved to
the CPU and the output back. A document longer than ``max_doc_length`` tokens is truncated to its first window
(raysparse reads it in several windows); text is not Kiwi-segmented (the exporter refuses models that need it).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
from transformers import AutoTokenizer

try:  # sentence-transformers >= 6
    from sentence_transformers.base.modules.input_module import InputModule
except ImportError:  # sentence-transformers 5.x
    from sentence_transformers.models import InputModule

GRAPH_FILE = "raysparse_graph.pt"


class RaySparseModule(InputModule):
    """Tokenize by task (query/document lengths) and run raysparse's traced encoder; output (B, V) weights."""

    config_keys: ClassVar[list[str]] = ["max_query_length", "max_doc_length", "vocab_size"]
    forward_kwargs: ClassVar[set[str]] = {"task"}

    def __init__(
        self,
        graph: Any,
        tokenizer: Any,
        max_query_length: int = 32,
        max_doc_length: int = 128,
        vocab_size: int | None = None,
    ) -> None:
        super().__init__()
        self.__dict__["graph"] = graph  # not a registered submodule: model.to(cuda) must leave it on the CPU
        self.tokenizer = tokenizer
        self.max_query_length = int(max_query_length)
        self.max_doc_length = int(max_doc_length)
        self.vocab_size = int(vocab_size or len(tokenizer))
        self.max_seq_length = self.max_doc_length
        # a buffer so SparseEncoder.device resolves (the module has no parameters of its own)
        self.register_buffer("_anchor", torch.zeros(1), persistent=False)

    def preprocess(
        self, inputs: list[str], prompt: str | None = None, task: str | None = None, **kwargs: Any
    ):
        if prompt:
            inputs = self._prepend_prompt(list(inputs), prompt)
        length = self.max_query_length if task == "query" else self.max_doc_length
        enc = self.tokenizer(
            list(inputs), padding=True, truncation=True, max_length=length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, features: dict[str, torch.Tensor], task: str | None = None, **kwargs: Any):
        ids, mask = features["input_ids"], features["attention_mask"]
        device = ids.device
        ids, mask = ids.cpu().long(), mask.cpu().long()
        with torch.no_grad():
            reps = self.graph.query_forward(ids, mask) if task == "query" else self.graph(ids, mask)
        features["sentence_embedding"] = reps.to(device)
        return features

    def get_embedding_dimension(self) -> int:
        return self.vocab_size

    get_sentence_embedding_dimension = get_embedding_dimension  # sentence-transformers 5.x name

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        torch.jit.save(self.graph, os.path.join(output_path, GRAPH_FILE))
        self.save_tokenizer(output_path)
        self.save_config(output_path)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> RaySparseModule:
        config = cls.load_config(model_name_or_path=model_name_or_path, subfolder=subfolder)
        local = cls.load_dir_path(model_name_or_path=model_name_or_path, subfolder=subfolder)
        graph = torch.jit.load(os.path.join(local, GRAPH_FILE), map_location="cpu").eval()
        tokenizer = AutoTokenizer.from_pretrained(local)
        return cls(graph, tokenizer, **config)
